"""`minhash_dedup` with ``verify: true``: exact Jaccard of every candidate edge, before components.

LSH makes two documents candidates when one band of their signatures agrees, which also happens,
with small probability, to pairs far below the threshold (about 5% of pairs at J = 0.5 at 14 x 8).
Verification drops those edges, so a false-positive candidate is kept rather than removed.

What is verified: the star edges the LSH buckets emit (each member to its bucket's lowest
``doc_id``), on the very shingles the signatures were made of (same tokenizer, same n-grams, as
64-bit hashes). An edge survives when its exact Jaccard is at least the threshold: the configured
``threshold`` if one was given, otherwise the one implied by the banding, ``(1 / bands) ** (1 / rows)``
(where a pair's collision probability crosses ~1 - 1/e; 0.72 at 14 x 8). A member whose Jaccard to
its bucket's root is below the threshold loses that edge even if it is close to another member of the
bucket; it can still join the cluster through another band.

The signature pass also writes each document's sorted, distinct shingle hashes as ``(doc_id,
shingles)``. When the candidate edges are few (``local_max_verify_mb``: the endpoints' shingles fit
in that much memory), one Ray task reads the edges, then streams the shingle files keeping only the
endpoints' rows, and checks every pair: no shuffle, whose fixed start-up cost dominated small runs.
If the endpoints' shingles outgrow the budget, the task gives up and the round runs distributed like
the other rounds, with nothing but a few counts on the driver: two hash shuffles bring each edge
together with its endpoints' shingles:

1. edges keyed on ``src`` ∪ shingle rows, shuffled on ``doc_id``: each partition attaches the source
   shingles to its edges (a ``searchsorted`` lookup; Arrow's hash join does not carry list columns);
2. those rows keyed on ``dst`` ∪ shingle rows, shuffled on ``doc_id``: each partition attaches the
   destination shingles, computes the Jaccard of every pair at once with NumPy and writes the edges
   that pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup.lsh import EDGE_SCHEMA
from curation.dedup.rounds import WorkDir, parquet_files, sum_summaries, write_table
from curation.dedup.signatures import CHUNK_DOCS, MinHashSignatures
from curation.operator import DOC_ID

ROUND = "verify"
SHINGLES = "shingles"  # folder under signatures/
SHINGLE_LIST = pa.list_(pa.uint64())
KEYED = pa.schema([(DOC_ID, pa.int64()), ("other", pa.int64()), (SHINGLES, SHINGLE_LIST)])
# Pairs whose Jaccard is computed at once: bounds the working arrays (~4 KB per pair of 250 words).
PAIR_CHUNK = 20_000


def implied_threshold(bands: int, rows: int) -> float:
    """The Jaccard at which the banding's S-curve is steepest (Leskovec et al., *Mining of Massive
    Datasets*, 3.4.3): ``(1/b)^(1/r)``."""
    return (1.0 / bands) ** (1.0 / rows)


def shingle_sets(hashes: np.ndarray, per_doc: np.ndarray) -> pa.ListArray:
    """Each document's distinct shingle hashes, sorted, as one list per document."""
    n_docs = len(per_doc)
    doc = np.repeat(np.arange(n_docs), per_doc)
    order = np.lexsort((hashes, doc))
    doc, values = doc[order], hashes[order]
    first = np.ones(len(values), dtype=bool)
    first[1:] = (doc[1:] != doc[:-1]) | (values[1:] != values[:-1])
    counts = np.bincount(doc[first], minlength=n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[first], pa.uint64()))


def signatures_and_shingles(hasher: MinHashSignatures, text, chunk_docs: int = CHUNK_DOCS
                            ) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """``hasher.of_batch`` that also returns the shingle sets it hashed (tokenised once)."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    sigs, has, sets = [np.empty((0, hasher.num_perm), np.uint64)], [np.empty(0, bool)], []
    for start in range(0, len(text), chunk_docs):
        hashes, per_doc = hasher.shingles(text.slice(start, chunk_docs))
        sigs.append(hasher.of_shingles(hashes, per_doc))
        has.append(per_doc > 0)
        sets.append(shingle_sets(hashes, per_doc))
    return np.concatenate(sigs), np.concatenate(has), pa.concat_arrays(sets) if sets else pa.array([], SHINGLE_LIST)


def pair_jaccard(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Exact Jaccard of ``a[i]`` and ``b[i]`` (lists of distinct values) for every i, vectorised: a
    value shared by both lists of pair i appears twice in the sorted (pair, value) sequence."""
    out = np.empty(len(a), dtype=np.float64)
    for start in range(0, len(a), PAIR_CHUNK):
        sa, sb = a.slice(start, PAIR_CHUNK), b.slice(start, PAIR_CHUNK)
        n = len(sa)
        la = pc.list_value_length(sa).to_numpy(zero_copy_only=False).astype(np.int64)
        lb = pc.list_value_length(sb).to_numpy(zero_copy_only=False).astype(np.int64)
        pair = np.concatenate([np.repeat(np.arange(n), la), np.repeat(np.arange(n), lb)])
        value = np.concatenate([pc.list_flatten(sa).to_numpy(), pc.list_flatten(sb).to_numpy()])
        order = np.lexsort((value, pair))
        pair, value = pair[order], value[order]
        both = (pair[1:] == pair[:-1]) & (value[1:] == value[:-1])
        inter = np.bincount(pair[1:][both], minlength=n)
        union = la + lb - inter
        out[start:start + n] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return out


# ---------------------------------------------------------------- the round's Ray Data steps

def keyed_on_src(edges: pa.Table) -> pa.Table:
    return pa.table({DOC_ID: edges.column("src"), "other": edges.column("dst"),
                     SHINGLES: pa.nulls(edges.num_rows, SHINGLE_LIST)}, schema=KEYED)


def keyed_on_self(docs: pa.Table) -> pa.Table:
    """Shingle rows: ``other`` null tells them apart from edge rows after the union."""
    return pa.table({DOC_ID: docs.column(DOC_ID), "other": pa.nulls(docs.num_rows, pa.int64()),
                     SHINGLES: docs.column(SHINGLES)}, schema=KEYED)


def _split(table: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Array]:
    """One doc_id partition → (edge rows, the partition's doc ids sorted, their shingles in that order)."""
    is_edge = pc.is_valid(table.column("other"))
    edges = table.filter(is_edge)
    docs = table.filter(pc.invert(is_edge))
    ids = docs.column(DOC_ID).to_numpy()
    order = np.argsort(ids, kind="stable")
    return edges, ids[order], docs.column(SHINGLES).combine_chunks().take(pa.array(order))


def _lookup(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    at = np.searchsorted(ids, wanted)
    if len(wanted) and (at.max(initial=0) >= len(ids) or not np.array_equal(ids[at], wanted)):
        raise RuntimeError("dedup verify: an edge names a document with no shingle row")
    return at


def attach_src(table: pa.Table) -> pa.Table:
    """Edges keyed on their source, each pair once (it may meet in several bands), with the source's
    shingles; re-keyed on the destination for the second shuffle."""
    edges, ids, sets = _split(table)
    src, dst = edges.column(DOC_ID).to_numpy(), edges.column("other").to_numpy()
    if len(src):
        pairs = np.unique(np.stack([src, dst], axis=1), axis=0)
        src, dst = pairs[:, 0], pairs[:, 1]
    return pa.table({DOC_ID: pa.array(dst, pa.int64()), "other": pa.array(src, pa.int64()),
                     SHINGLES: sets.take(pa.array(_lookup(ids, src), pa.int64()))}, schema=KEYED)


def check_dst(table: pa.Table, work: WorkDir, threshold: float) -> pa.Table:
    """Edges keyed on their destination (with the source's shingles): exact Jaccard, keep or drop."""
    edges, ids, sets = _split(table)
    dst, src = edges.column(DOC_ID).to_numpy(), edges.column("other").to_numpy()
    j = pair_jaccard(edges.column(SHINGLES).combine_chunks(), sets.take(pa.array(_lookup(ids, dst), pa.int64())))
    keep = j >= threshold
    kept = pa.table({"src": src[keep], "dst": dst[keep]}, schema=EDGE_SCHEMA)
    if kept.num_rows:
        write_table(work.fs, work.path(ROUND), kept)
    return pa.table({"rows": [kept.num_rows], "candidates": [len(j)], "removed": [int((~keep).sum())]})


def local_verify_task(work: WorkDir, edge_dirs: list[str], threshold: float, max_bytes: int) -> dict[str, int] | None:
    """The whole round in one task, or None (nothing written) when the edges' endpoints hold more
    than ``max_bytes`` of shingles."""
    edges = pa.concat_tables([pq.read_table(f, filesystem=work.fs, schema=EDGE_SCHEMA)
                              for d in edge_dirs for f in parquet_files(work.fs, work.path(d))])
    pairs = np.unique(np.stack([edges.column("src").to_numpy(), edges.column("dst").to_numpy()], axis=1), axis=0)
    src, dst = pairs[:, 0], pairs[:, 1]
    wanted = pa.array(np.unique(pairs), pa.int64())
    parts, held = [], 0
    for path in parquet_files(work.fs, work.path("signatures", SHINGLES)):
        for batch in pq.ParquetFile(work.fs.open_input_file(path)).iter_batches(batch_size=CHUNK_DOCS):
            part = pa.Table.from_batches([batch]).filter(pc.is_in(batch.column(DOC_ID), value_set=wanted))
            held += part.nbytes
            if held > max_bytes:
                return None
            parts.append(part)
    docs = pa.concat_tables(parts) if parts else pa.table({DOC_ID: pa.array([], pa.int64()),
                                                          SHINGLES: pa.array([], SHINGLE_LIST)})
    ids = docs.column(DOC_ID).to_numpy()
    order = np.argsort(ids, kind="stable")
    ids, sets = ids[order], docs.column(SHINGLES).combine_chunks().take(pa.array(order))
    j = pair_jaccard(sets.take(pa.array(_lookup(ids, src))), sets.take(pa.array(_lookup(ids, dst))))
    keep = j >= threshold
    kept = pa.table({"src": src[keep], "dst": dst[keep]}, schema=EDGE_SCHEMA)
    if kept.num_rows:
        write_table(work.fs, work.path(ROUND), kept)
    return {"rows": kept.num_rows, "candidates": len(j), "removed": int((~keep).sum())}


def verify_round(work: WorkDir, edge_dirs: list[str], partitions: int, threshold: float,
                 local_max_bytes: int = 0) -> dict[str, Any]:
    """The ``verify`` round: candidate edges in ``edge_dirs`` → edges with exact Jaccard ≥ threshold
    in ``verify/``. Returns the round's marker (rows kept, candidates, removed, threshold, backend).
    ``local_max_bytes`` > 0 tries one task first (see the module docstring)."""
    import ray

    info = work.finished(ROUND)
    if info is not None:
        return info
    work.begin(ROUND)
    if local_max_bytes > 0:
        totals = ray.get(ray.remote(num_cpus=1)(local_verify_task).remote(work, edge_dirs, threshold, local_max_bytes))
        if totals is not None:
            return work.finish(ROUND, totals.pop("rows"), threshold=threshold, backend="local", **totals)
    read = {"filesystem": work.ray_filesystem()}
    shingles = ray.data.read_parquet(work.uri("signatures", SHINGLES), **read).map_batches(
        keyed_on_self, batch_format="pyarrow")
    edges = ray.data.read_parquet([work.uri(d) for d in edge_dirs], **read).map_batches(
        keyed_on_src, batch_format="pyarrow")
    with_src = edges.union(shingles).repartition(partitions, keys=[DOC_ID]).map_batches(
        attach_src, batch_format="pyarrow", batch_size=None)
    checked = with_src.union(shingles).repartition(partitions, keys=[DOC_ID]).map_batches(
        check_dst, batch_format="pyarrow", batch_size=None, fn_kwargs={"work": work, "threshold": threshold})
    totals = sum_summaries(checked)
    return work.finish(ROUND, totals.get("rows", 0), candidates=totals.get("candidates", 0),
                       removed=totals.get("removed", 0), threshold=threshold, backend="shuffle")
