"""Connected components of the candidate graph, on Ray Data or (for small edge sets) in one task.

Distributed: the alternating **large-star / small-star** rounds of Kiveris et al., "Connected
Components in MapReduce and Beyond" (SoCC 2014). Edges are kept oriented ``src > dst``; every step is
one hash shuffle on ``src`` and one vectorised pass per partition:

* large-star: for each node u with neighbours N(u) (both directions), m = min(N(u) ∪ {u});
  emit (v, m) for every neighbour v > u;
* small-star: for each node u with smaller neighbours N(u), m = min(N(u) ∪ {u});
  emit (v, m) for every v in N(u) ∪ {u}, v ≠ m.

The edge set converges to stars around each component's lowest id, in O(log² n) rounds even for
long chains. Each step records an order-independent checksum (count and 64-bit sum of the mixed
pairs) of the *deduplicated* edge set it read; when two consecutive large-star steps read the same
set, a whole round changed nothing and the last small-star output is final. Each step is a round
under ``work/`` (a resume point).

Local: ``scipy.sparse.csgraph.connected_components`` (linear time) inside one Ray task, for edge
sets that fit one worker's memory; never on the driver. Both backends label a component by its
lowest ``doc_id`` and write the same rows: ``(src = member, dst = lowest id)`` for each non-root.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.dedup.lsh import EDGE_SCHEMA
from curation.dedup.rounds import WorkDir, parquet_files, write_table
from curation.dedup.signatures import fmix64

_MASK = (1 << 64) - 1
SUMMARY = pa.schema([("rows", pa.int64()), ("in_edges", pa.int64()), ("in_checksum", pa.uint64())])


def _unique_edges(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = src != dst
    src, dst = src[keep], dst[keep]
    if len(src) == 0:
        return src, dst
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    first = np.ones(len(src), dtype=bool)
    first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    return src[first], dst[first]


def edge_checksum(hi: np.ndarray, lo: np.ndarray) -> int:
    """Order-independent checksum of a set of undirected edges given as (larger, smaller)."""
    mixed = fmix64(fmix64(hi.astype(np.uint64)) ^ lo.astype(np.uint64))
    return int(mixed.sum(dtype=np.uint64))


def _groups(src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index of each run of equal ``src`` (input sorted by src) and each row's run."""
    new = np.ones(len(src), dtype=bool)
    new[1:] = src[1:] != src[:-1]
    starts = np.flatnonzero(new)
    return starts, np.cumsum(new) - 1


def large_star(table: pa.Table) -> tuple[pa.Table, int, int]:
    """One partition (all edges of each ``src``, both directions). Returns output edges and the
    input's edge count and checksum."""
    src, dst = _unique_edges(table.column("src").to_numpy(), table.column("dst").to_numpy())
    half = dst < src
    n_in, checksum = int(half.sum()), edge_checksum(src[half], dst[half])
    if len(src) == 0:
        return EDGE_SCHEMA.empty_table(), n_in, checksum
    starts, group = _groups(src)
    m = np.minimum(np.minimum.reduceat(dst, starts), src[starts])[group]
    out = dst > src
    return pa.table({"src": dst[out], "dst": m[out]}, schema=EDGE_SCHEMA), n_in, checksum


def small_star(table: pa.Table) -> tuple[pa.Table, int, int]:
    """One partition (edges oriented src > dst, grouped by src)."""
    src, dst = _unique_edges(table.column("src").to_numpy(), table.column("dst").to_numpy())
    n_in, checksum = len(src), edge_checksum(src, dst)
    if len(src) == 0:
        return EDGE_SCHEMA.empty_table(), n_in, checksum
    starts, group = _groups(src)
    m = np.minimum.reduceat(dst, starts)
    # every smaller neighbour v != m points to m, and so does u itself
    keep = dst != m[group]
    out_src = np.concatenate([dst[keep], src[starts]])
    out_dst = np.concatenate([m[group][keep], m])
    return pa.table({"src": out_src, "dst": out_dst}, schema=EDGE_SCHEMA), n_in, checksum


def symmetrize(table: pa.Table) -> pa.Table:
    """Both directions of every edge, so large-star sees each node's whole neighbourhood."""
    table = table.combine_chunks()
    src, dst = table.column("src").chunks, table.column("dst").chunks
    return pa.table({"src": pa.chunked_array(src + dst, pa.int64()), "dst": pa.chunked_array(dst + src, pa.int64())},
                    schema=EDGE_SCHEMA)


def _star_step(table: pa.Table, step: str, work: WorkDir, out: str) -> pa.Table:
    edges, n_in, checksum = (large_star if step == "large" else small_star)(table)
    if edges.num_rows:
        write_table(work.fs, work.path(out), edges)
    return pa.table({"rows": [edges.num_rows], "in_edges": [n_in], "in_checksum": [checksum]}, schema=SUMMARY)


def _drive(ds: Any) -> tuple[int, int, int]:
    rows = n_in = checksum = 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for r in batch.to_pylist():
            rows += r["rows"]
            n_in += r["in_edges"]
            checksum = (checksum + r["in_checksum"]) & _MASK
    return rows, n_in, checksum


def distributed_components(work: WorkDir, edges_dirs: list[str], partitions: int, max_rounds: int = 64) -> dict:
    """Run large-star / small-star rounds until the edge set stops changing. Returns a dict with
    ``final`` (the round folder holding the converged (member, root) edges) and ``rounds``."""
    import ray

    inputs = [work.uri(d) for d in edges_dirs]
    previous: tuple[int, int] | None = None
    last_output = inputs
    for i in range(1, max_rounds + 1):
        for step in ("large", "small"):
            name = f"cc-{i:03d}-{step}"
            info = work.finished(name)
            if info is None:
                work.begin(name)
                ds = ray.data.read_parquet(last_output, filesystem=work.ray_filesystem())
                if step == "large":
                    ds = ds.map_batches(symmetrize, batch_format="pyarrow", batch_size=None)
                ds = ds.repartition(partitions, keys=["src"]).map_batches(
                    _star_step, batch_format="pyarrow", batch_size=None,
                    fn_kwargs={"step": step, "work": work, "out": name})
                rows, n_in, checksum = _drive(ds)
                info = work.finish(name, rows, in_edges=n_in, in_checksum=checksum)
            if step == "large":
                state = (info["in_edges"], info["in_checksum"])
                if state == previous:  # a whole round left the edge set as it was
                    return {"final": last_output, "rounds": i - 1}
                previous = state
            if info["rows"] == 0:  # nothing left to connect (only possible for an empty input)
                return {"final": [], "rounds": i}
            last_output = [work.uri(name)]
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")


def component_roots(work: WorkDir, edges_dirs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Union-find over every edge in ``edges_dirs`` (read in this process): (nodes, lowest id of
    each node's component), for every node that has an edge."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    files = [f for d in edges_dirs for f in parquet_files(work.fs, work.path(d))]
    if not files:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    table = pa.concat_tables([pq.read_table(f, filesystem=work.fs) for f in files])
    src, dst = table.column("src").to_numpy(), table.column("dst").to_numpy()
    nodes, inverse = np.unique(np.concatenate([src, dst]), return_inverse=True)
    n = len(nodes)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (inverse[:len(src)], inverse[len(src):])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    root = np.full(label.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(root, label, nodes)
    return nodes, root[label]


def local_components_task(work: WorkDir, edges_dirs: list[str], out: str) -> int:
    """Union-find for an edge set that fits one worker: read, label, write (member, root) rows."""
    nodes, member_root = component_roots(work, edges_dirs)
    if len(nodes) == 0:
        return 0
    keep = nodes != member_root
    result = pa.table({"src": nodes[keep], "dst": member_root[keep]}, schema=EDGE_SCHEMA)
    write_table(work.fs, work.path(out), result)
    return result.num_rows


def local_components(work: WorkDir, edges_dirs: list[str], out: str = "cc-local") -> dict:
    import ray

    info = work.finished(out)
    if info is None:
        work.begin(out)
        rows = ray.get(ray.remote(num_cpus=1)(local_components_task).remote(work, edges_dirs, out))
        info = work.finish(out, rows)
    return {"final": [work.uri(out)] if info["rows"] else [], "rounds": 0}
