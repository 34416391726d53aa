"""Locality-sensitive hashing: signatures cut into bands, bands into buckets, buckets into edges.

Two documents become candidates when all ``rows`` values of one band agree. Instead of keeping the
band's values, a band is reduced to one 64-bit ``band_key`` (the values folded in order), so the
shuffle moves 20 bytes per (document, band): ``(band, band_key, doc_id)``.

A bucket (documents sharing a ``(band, band_key)``) of size k yields k - 1 *star* edges from each
member to the bucket's lowest ``doc_id``: connectivity is the same as all k(k-1)/2 pairs, at linear
cost. A bucket larger than ``max_bucket_size`` is pathological (boilerplate, templated pages): only
its lowest ``max_bucket_size`` ids get edges, and the bucket and the documents left out are counted.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.dedup.signatures import _FOLD, fmix64

BAND_SCHEMA = pa.schema([("band", pa.int32()), ("band_key", pa.uint64()), ("doc_id", pa.int64())])
EDGE_SCHEMA = pa.schema([("src", pa.int64()), ("dst", pa.int64())])


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(docs x bands) uint64: each band's ``rows`` values folded into one key."""
    keys = np.empty((sig.shape[0], bands), dtype=np.uint64)
    for band in range(bands):
        key = np.full(sig.shape[0], band + 1, dtype=np.uint64) * _FOLD
        for r in range(rows):
            key = fmix64(key * _FOLD + sig[:, band * rows + r])
        keys[:, band] = key
    return keys


def band_table(keys: np.ndarray, doc_ids: np.ndarray, band_subset: range) -> pa.Table:
    """Long table ``(band, band_key, doc_id)`` for the bands in ``band_subset``."""
    n = len(doc_ids)
    sub = np.asarray(list(band_subset), dtype=np.int32)
    return pa.table({
        "band": np.repeat(sub, n),
        "band_key": keys[:, sub].T.reshape(-1),
        "doc_id": np.tile(doc_ids.astype(np.int64), len(sub)),
    }, schema=BAND_SCHEMA)


def bucket_edges(table: pa.Table, max_bucket_size: int) -> tuple[pa.Table, dict[str, int]]:
    """Star edges of every bucket in ``table`` (which holds whole buckets: the caller partitioned
    by ``(band, band_key)``). Returns the edges and counts for the round summary."""
    stats = {"buckets": 0, "capped_buckets": 0, "capped_docs": 0}
    if table.num_rows == 0:
        return EDGE_SCHEMA.empty_table(), stats
    band = table.column("band").to_numpy()
    key = table.column("band_key").to_numpy()
    doc = table.column("doc_id").to_numpy()
    order = np.lexsort((doc, key, band))
    band, key, doc = band[order], key[order], doc[order]
    new = np.ones(len(doc), dtype=bool)
    new[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, len(doc)))
    bucket_of = np.repeat(np.arange(len(starts)), sizes)
    rank = np.arange(len(doc)) - starts[bucket_of]
    in_big = sizes[bucket_of] > 1
    capped = sizes > max_bucket_size
    stats["buckets"] = int((sizes > 1).sum())
    stats["capped_buckets"] = int(capped.sum())
    stats["capped_docs"] = int((sizes[capped] - max_bucket_size).sum())
    member = in_big & (rank > 0) & (rank < max_bucket_size)
    src = doc[member]
    dst = doc[starts[bucket_of[member]]]
    if len(src):  # the same pair can meet in several bands
        pairs = np.unique(np.stack([src, dst], axis=1), axis=0)
        src, dst = pairs[:, 0], pairs[:, 1]
    return pa.table({"src": src.astype(np.int64), "dst": dst.astype(np.int64)}, schema=EDGE_SCHEMA), stats
