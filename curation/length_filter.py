"""`length_filter`: measure every document's length and drop those outside the configured bounds.

Adds ``length.chars`` (Unicode code points) and ``length.words`` (whitespace-separated words, as
Python's ``str.split()`` counts them) to every row, so a bound can be changed later and the report
rebuilt from the columns alone.

Defaults: every bound is off, so by default the op only annotates. Published pipelines put their
length rules inside their quality filters (Gopher: 50-100,000 words, see ``gopher_quality``); this op
is the plain, explicit version for specs that want a length rule on its own.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curation.operator import TEXT, Decision, OpConfig, RowOp, register_op, set_column

CHARS = "length.chars"
WORDS = "length.words"


class LengthFilterConfig(OpConfig):
    min_chars: int | None = Field(None, ge=0, description="drop documents with fewer characters")
    max_chars: int | None = Field(None, ge=0, description="drop documents with more characters")
    min_words: int | None = Field(None, ge=0, description="drop documents with fewer words")
    max_words: int | None = Field(None, ge=0, description="drop documents with more words")

    @model_validator(mode="after")
    def _min_not_above_max(self):
        for unit in ("chars", "words"):
            low, high = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if low is not None and high is not None and low > high:
                raise ValueError(f"min_{unit} ({low}) is greater than max_{unit} ({high}); "
                                 "no document could pass")
        return self


def count_words(texts: pa.Array) -> pa.Array:
    """Whitespace-separated words per document (null text counts 0).

    A Python loop on purpose: ``str.split()`` measured as fast as Arrow's ``utf8_split_whitespace``
    (which also needs a trim and an empty-string fix) and twice as fast as a regex count, and it
    defines "whitespace" exactly as the rest of the Python code does."""
    return pa.array([len(t.split()) if t is not None else 0 for t in texts.to_pylist()], pa.int64())


@register_op
class LengthFilter(RowOp):
    """Drop documents with too few or too many characters or words; annotate every row with both."""

    name = "length_filter"
    memory = ("per document ~12x its text (str.split word count); per block ~0.3x")
    Config = LengthFilterConfig
    defaults_from = "no bounds by default (annotate only); Gopher's 50-100,000 words live in gopher_quality"

    def process(self, batch: pa.Table) -> Decision:
        cfg: LengthFilterConfig = self.config  # type: ignore[assignment]
        texts = batch.column(TEXT).combine_chunks()
        chars = pc.fill_null(pc.utf8_length(texts).cast(pa.int64()), 0)
        words = count_words(texts)
        table = set_column(set_column(batch, CHARS, chars), WORDS, words)
        # Checked in this order; the first rule a document fails names its reason.
        rules = [(reason, pc.less(values, bound) if op == "min" else pc.greater(values, bound))
                 for reason, values, op, bound in (
                     ("too_few_chars", chars, "min", cfg.min_chars),
                     ("too_many_chars", chars, "max", cfg.max_chars),
                     ("too_few_words", words, "min", cfg.min_words),
                     ("too_many_words", words, "max", cfg.max_words))
                 if bound is not None]
        if not rules:
            return Decision(table)
        reason = pa.nulls(batch.num_rows, pa.string())
        for name, failed in reversed(rules):  # earlier rules overwrite later ones
            reason = pc.if_else(failed, pa.scalar(name), reason)
        return Decision(table, keep=pc.is_null(reason), reason=reason)
