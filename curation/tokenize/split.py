"""Train / val split and tokenizer-sample selection by a hash of each document's text.

Hashing the *text* (not ``doc_id``) keeps a document in the same split when inputs are added or the
listing changes (``doc_id`` encodes the file index), and puts exact duplicates in the same split, so
dedup misses do not leak validation text into training. The hash is xxh3-64 of the UTF-8 bytes, read
straight from the Arrow buffers (no ``str`` objects are built); Arrow has no public string-hash kernel,
and one C call per document costs well under 1% of encoding it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xxhash

# Seeds of the two independent hash streams: the split must not correlate with the tokenizer sample.
SPLIT_HASH_SEED = 0
SAMPLE_HASH_SEED = 0x5EED


def text_hashes(texts: pa.Array | pa.ChunkedArray, seed: int = SPLIT_HASH_SEED) -> np.ndarray:
    """xxh3-64 of each string's UTF-8 bytes as ``uint64``. Null text is an error: kept documents
    always have text, and silently hashing nothing would hide a bug upstream."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        texts = texts.cast(pa.large_string())
    if texts.null_count:
        raise ValueError(f"{texts.null_count} document(s) have null text; kept documents must have text")
    n = len(texts)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    _, offsets_buf, data_buf = texts.buffers()
    offset_type = np.int32 if pa.types.is_string(texts.type) else np.int64
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[texts.offset: texts.offset + n + 1].tolist()
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    digest = xxhash.xxh3_64_intdigest
    return np.fromiter((digest(data[a:b], seed) for a, b in zip(offsets[:-1], offsets[1:])), dtype=np.uint64, count=n)


def unit_interval(hashes: np.ndarray) -> np.ndarray:
    """Map 64-bit hashes to [0, 1) (top 53 bits, exact in float64)."""
    return (hashes >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def val_mask(texts: pa.Array | pa.ChunkedArray, val_fraction: float) -> np.ndarray:
    """True where a document belongs to the validation split. Depends only on the text, so it is the
    same on every rerun, whatever the seed, batch or worker."""
    if val_fraction <= 0:
        return np.zeros(len(texts), dtype=bool)
    return unit_interval(text_hashes(texts, SPLIT_HASH_SEED)) < val_fraction
