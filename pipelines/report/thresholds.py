"""Which score column a step's config bounds, so histograms can mark the threshold.

A few well-known ops are mapped explicitly (their config names differ from their columns); any other
op gets the generic rule: a config field ``min_X`` / ``max_X`` bounds the column ``<op>.X`` (or
``<prefix>.X`` for the ops whose columns use a shorter prefix) when that column exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# op → {config field: (column, "min" | "max")}; from each op's Config and column constants
# (curation/langid.py, length_filter.py, quality/gopher.py, quality/fineweb.py, quality/c4.py,
# classifiers/apply.py).
KNOWN: dict[str, dict[str, tuple[str, str]]] = {
    "langid": {"min_score": ("langid.score", "min")},
    "length_filter": {"min_chars": ("length.chars", "min"), "max_chars": ("length.chars", "max"),
                      "min_words": ("length.words", "min"), "max_words": ("length.words", "max")},
    "gopher_quality": {"min_doc_words": ("gopher.words", "min"), "max_doc_words": ("gopher.words", "max"),
                       "min_avg_word_length": ("gopher.mean_word_length", "min"),
                       "max_avg_word_length": ("gopher.mean_word_length", "max"),
                       "max_symbol_word_ratio": ("gopher.hash_word_ratio", "max"),
                       "max_bullet_lines_ratio": ("gopher.bullet_lines_ratio", "max"),
                       "max_ellipsis_lines_ratio": ("gopher.ellipsis_lines_ratio", "max"),
                       "min_alpha_words_ratio": ("gopher.alpha_words_ratio", "min"),
                       "min_stop_words": ("gopher.stop_words", "min")},
    "gopher_repetition": {f: (f"gopher_rep.{f}", "max") for f in
                          ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")},
    "fineweb_quality": {"line_punct_thr": ("fineweb.line_punct_ratio", "min"),
                        "short_line_thr": ("fineweb.short_line_ratio", "max"),
                        "char_duplicates_ratio": ("fineweb.char_dup_ratio", "max"),
                        "new_line_ratio": ("fineweb.new_line_ratio", "max")},
    "c4_quality": {"min_num_sentences": ("c4.sentences", "min")},
    "toxicity": {"max_score": ("toxicity.score", "max")},
    "quality_classifier": {"min_score": ("quality_classifier.score", "min")},
}
# Ops whose columns use a prefix other than the op name.
PREFIX = {"length_filter": "length", "gopher_quality": "gopher", "gopher_repetition": "gopher_rep",
          "fineweb_quality": "fineweb", "c4_quality": "c4"}


@dataclass
class Threshold:
    step: str  # step label
    field: str  # config field
    value: float
    bound: str  # "min": keep at or above; "max": keep at or below

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "field": self.field, "value": self.value, "bound": self.bound}


def thresholds(steps: list[Any], columns: set[str] | None = None) -> dict[str, list[Threshold]]:
    """Column → thresholds the spec's steps set on it (``steps``: :class:`StepInfo` list), for the
    columns in ``columns`` (all when None)."""
    out: dict[str, list[Threshold]] = {}
    for step in steps:
        mapping = dict(KNOWN.get(step.op, {}))
        prefix = PREFIX.get(step.op, step.op)
        for name in step.config:
            if name not in mapping and name.startswith(("min_", "max_")):
                mapping[name] = (f"{prefix}.{name[4:]}", name[:3])
        if step.op == "gopher_repetition":  # per-n dicts: {2: 0.2, 3: 0.18, ...}
            for key, template in (("top_n_grams", "gopher_rep.top_{}_gram_char_frac"),
                                  ("dup_n_grams", "gopher_rep.dup_{}_gram_char_frac")):
                for n, value in (step.config.get(key) or {}).items():
                    if isinstance(value, (int, float)):
                        out.setdefault(template.format(n), []).append(Threshold(step.label, f"{key}.{n}", float(value), "max"))
        for name, (column, bound) in mapping.items():
            value = step.config.get(name)
            if (columns is None or column in columns) and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(column, []).append(Threshold(step.label, name, float(value), bound))
    return out
