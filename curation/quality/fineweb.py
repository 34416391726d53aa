"""`fineweb_quality`: FineWeb's own line-level heuristics.

Defaults come from Penedo et al. 2024, "The FineWeb Datasets: Decanting the Web for the Finest Text
Data at Scale" (the section "Developing additional heuristic filters"): at least 12% of lines end in
terminal punctuation, at most 67% of lines are 30 characters or shorter, at most 1% of characters sit
in duplicated lines, and at most 0.3 newlines per word — as implemented by datatrove 0.10.1's
``FineWebQualityFilter``, whose keep/drop decisions this op reproduces
(``python -m benchmarks.quality_parity``).
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from curation.operator import Decision, OpConfig, RowOp, register_op, set_column
from curation.quality.text_stats import TERMINAL_PUNCTUATION_TUPLE, duplicates, first_failure, texts_of
from curation.quality.words import english_words


class FineWebQualityConfig(OpConfig):
    line_punct_thr: float | None = Field(0.12, ge=0, le=1, description="fewest lines ending in terminal punctuation")
    line_punct_exclude_zero: bool = Field(
        False, description="keep documents where no line ends in terminal punctuation (ratio exactly 0)")
    stop_chars: list[str] | None = Field(
        None, description="line-final characters that count as terminal punctuation "
                          "(default: Unicode sentence terminals of every script)")
    short_line_thr: float | None = Field(0.67, ge=0, le=1, description="most lines of short_line_length or fewer characters")
    short_line_length: int = Field(30, ge=0, description="what counts as a short line (characters)")
    char_duplicates_ratio: float | None = Field(0.01, ge=0, le=1, description="most characters in repeated lines")
    new_line_ratio: float | None = Field(0.3, ge=0, description="most newlines per word")


F_PUNCT, F_SHORT = "fineweb.line_punct_ratio", "fineweb.short_line_ratio"
F_DUP, F_NEWLINE = "fineweb.char_dup_ratio", "fineweb.new_line_ratio"


@register_op
class FineWebQuality(RowOp):
    """Drop documents that look like lists, menus or boilerplate rather than prose.

    Lines are the non-blank lines of ``text.split("\\n")``, unstripped. Columns (null for a document
    without a non-blank line): ``fineweb.line_punct_ratio`` (lines ending in terminal punctuation),
    ``fineweb.short_line_ratio`` (lines of ``short_line_length`` characters or fewer),
    ``fineweb.char_dup_ratio`` (characters of lines repeating an earlier line, over the characters of
    the text without newlines), ``fineweb.new_line_ratio`` (newlines per word, words as Gopher counts
    them). Reasons, in order: ``fineweb_empty``, ``fineweb_line_punct_ratio``,
    ``fineweb_short_line_ratio``, ``fineweb_char_dup_ratio``, ``fineweb_list_ratio``.
    """

    name = "fineweb_quality"
    memory = ("per document ~15x its text (lines and words); per block ~1.9x")
    Config = FineWebQualityConfig
    defaults_from = ("FineWeb (Penedo et al. 2024, additional heuristic filters): line punctuation >= 0.12, short lines (<= 30 "
                     "chars) <= 0.67, duplicated-line chars <= 0.01, newlines per word <= 0.3; as datatrove "
                     "0.10.1 FineWebQualityFilter")

    def process(self, batch: pa.Table) -> Decision:
        cfg: FineWebQualityConfig = self.config  # type: ignore[assignment]
        count_words = english_words().count_words
        stop_chars = tuple(cfg.stop_chars) if cfg.stop_chars is not None else TERMINAL_PUNCTUATION_TUPLE
        short = cfg.short_line_length
        cols: dict[str, list] = {F_PUNCT: [], F_SHORT: [], F_DUP: [], F_NEWLINE: []}
        for text in texts_of(batch):
            text = text or ""
            lines = [line for line in text.split("\n") if line.strip()]
            if not lines:
                for values in cols.values():
                    values.append(None)
                continue
            n = len(lines)
            cols[F_PUNCT].append(sum(1 for line in lines if line.endswith(stop_chars)) / n)
            cols[F_SHORT].append(sum(1 for line in lines if len(line) <= short) / n)
            cols[F_DUP].append(duplicates(lines)[1] / (len(text) - text.count("\n")))
            cols[F_NEWLINE].append(text.count("\n") / count_words(text))
        empty = [v is None for v in cols[F_PUNCT]]
        punct_failed = None
        if cfg.line_punct_thr is not None:
            punct_failed = [v is not None and v < cfg.line_punct_thr and not (v == 0 and cfg.line_punct_exclude_zero)
                            for v in cols[F_PUNCT]]

        def above(col, bound):
            return [v is not None and v > bound for v in cols[col]] if bound is not None else None

        rules = [(name, failed) for name, failed in (
            ("fineweb_empty", empty),
            ("fineweb_line_punct_ratio", punct_failed),
            ("fineweb_short_line_ratio", above(F_SHORT, cfg.short_line_thr)),
            ("fineweb_char_dup_ratio", above(F_DUP, cfg.char_duplicates_ratio)),
            ("fineweb_list_ratio", above(F_NEWLINE, cfg.new_line_ratio)),
        ) if failed is not None]
        table = batch
        for name, values in cols.items():
            table = set_column(table, name, pa.array(values, pa.float64()))
        reason = first_failure(batch.num_rows, rules)
        return Decision(table, keep=pa.array([r is None for r in reason.to_pylist()], pa.bool_()), reason=reason)
