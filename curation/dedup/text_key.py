"""What "the same text" means for exact dedup: a configurable normalisation, then a 128-bit hash.

Defaults follow the usual exact-dedup practice (CCNet / datatrove's ``ExactDedup`` hash the text
after light normalisation): Unicode NFKC, lower case, whitespace runs collapsed and trimmed.
Punctuation and digits are kept unless asked, since "version 2" and "version 3" are different
documents. Every step is an Arrow kernel over the whole batch; only the hash itself is a call per
document (xxh3-128 over bytes: ~0.1 µs per short document, no Arrow kernel offers it).
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import BaseModel, ConfigDict, Field


class TextNormalization(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unicode_form: Literal["NFC", "NFKC", "none"] = Field("NFKC", description="Unicode normal form before hashing")
    lowercase: bool = Field(True, description="compare case-insensitively")
    collapse_whitespace: bool = Field(True, description="runs of whitespace count as one space; ends trimmed")
    strip_punctuation: bool = Field(False, description="ignore punctuation and symbols")
    strip_digits: bool = Field(False, description="ignore digits (dates, counters, ids)")


def normalized_text(text: pa.Array, how: TextNormalization) -> pa.Array:
    """Apply ``how`` to a string array; nulls stay null."""
    if pa.types.is_large_string(text.type):
        text = text.cast(pa.string())
    if how.unicode_form != "none":
        text = pc.utf8_normalize(text, form=how.unicode_form)
    if how.lowercase:
        text = pc.utf8_lower(text)
    if how.strip_punctuation:
        text = pc.replace_substring_regex(text, r"[\p{P}\p{S}]+", "")
    if how.strip_digits:
        text = pc.replace_substring_regex(text, r"\p{N}+", "")
    if how.collapse_whitespace:
        text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))
    return text


def text_keys(text: pa.Array) -> pa.Array:
    """xxh3-128 digest of each string's UTF-8 bytes as ``binary(16)``; null text gives a null key
    (a document without text is never anyone's duplicate)."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    digest = xxhash.xxh3_128_digest
    keys = [None if t is None else digest(t) for t in text.cast(pa.binary()).to_pylist()]
    return pa.array(keys, pa.binary(16))
