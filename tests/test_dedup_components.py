"""Connected components: the large-star / small-star partition steps (emulated hash partitioning,
many random graphs, long chains, one giant component) and the Ray Data driver, each against a
reference union-find; the local backend too. The Ray Data driver runs on a small graph of the same
shapes (a chain, a giant component, pairs): every round is two Ray Data hash shuffles, seconds each
on a 2-core machine, so its graph is sized for two rounds (and the convergence check's third
large-star step), and the emulated loop must take as many."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.dedup.components import (distributed_components, large_star, local_components, small_star,
                                       symmetrize)
from curation.dedup.rounds import WorkDir


def union_find_roots(edges: list[tuple[int, int]]) -> dict[int, int]:
    """Reference: node -> lowest node id of its component (only nodes that have an edge)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}


def graph(kind: str, rng: np.random.Generator) -> list[tuple[int, int]]:
    if kind == "random":
        n = int(rng.integers(20, 400))
        m = int(rng.integers(1, 2 * n))
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        return [(int(x), int(y)) for x, y in zip(a, b) if x != y]
    if kind == "chain":  # a long path with shuffled labels: the worst case for label propagation
        labels = rng.permutation(500) * 3 + 11
        return [(int(labels[i]), int(labels[i + 1])) for i in range(len(labels) - 1)]
    if kind == "giant":  # one component holding almost everything, plus a few pairs
        n = 600
        edges = [(int(i), int(rng.integers(0, i))) for i in range(1, n)]
        return edges + [(n + 2 * k, n + 2 * k + 1) for k in range(20)]
    raise ValueError(kind)


def oriented(edges: list[tuple[int, int]]) -> pa.Table:
    return pa.table({"src": pa.array([max(e) for e in edges], pa.int64()),
                     "dst": pa.array([min(e) for e in edges], pa.int64())})


def star_rounds_partitioned(table: pa.Table, partitions: int) -> tuple[pa.Table, int]:
    """The Ray driver's loop with the shuffle emulated by ``src % partitions``: the converged
    edges and the number of rounds, counted as ``distributed_components`` counts them."""

    def step(fn, t):
        src = t.column("src").to_numpy()
        outs, n_in, check = [], 0, 0
        for p in range(partitions):
            out, k, c = fn(t.filter(pa.array(src % partitions == p)))
            outs.append(out)
            n_in, check = n_in + k, (check + c) % (1 << 64)
        return pa.concat_tables(outs), (n_in, check)

    previous = None
    for i in range(1, 65):
        large, state = step(large_star, symmetrize(table))
        if state == previous:
            return table, i - 1
        previous = state
        table, _ = step(small_star, large)
    raise AssertionError("no convergence")


def labels_of(table: pa.Table) -> dict[int, int]:
    out: dict[int, int] = {}
    for s, d in zip(table.column("src").to_pylist(), table.column("dst").to_pylist()):
        assert out.get(s, d) == d, "a node with two roots"
        out[s] = d
        out[d] = d
    return out


@pytest.mark.parametrize("kind", ["random", "chain", "giant"])
def test_star_rounds_match_union_find(kind):
    rng = np.random.default_rng({"random": 0, "chain": 1, "giant": 2}[kind])
    for trial in range(12 if kind == "random" else 2):
        edges = graph(kind, rng)
        result, _ = star_rounds_partitioned(oriented(edges), partitions=int(rng.integers(1, 6)))
        assert labels_of(result) == union_find_roots(edges), (kind, trial)


def _write_edges(tmp_path, edges) -> WorkDir:
    work = WorkDir(str(tmp_path / "work"))
    (tmp_path / "work" / "edges").mkdir(parents=True)
    table = oriented(edges)
    half = table.num_rows // 2  # two files, as two LSH tasks would write
    pq.write_table(table.slice(0, half), tmp_path / "work" / "edges" / "a.parquet")
    pq.write_table(table.slice(half), tmp_path / "work" / "edges" / "b.parquet")
    return work


def _read_labels(final: list[str]) -> dict[int, int]:
    tables = [pq.read_table(path) for path in final]
    return labels_of(pa.concat_tables(tables))


@pytest.mark.slow
def test_ray_data_components_and_local_backend_match_union_find(ray_session, tmp_path):
    rng = np.random.default_rng(7)
    # a 5-node chain with shuffled labels, an 11-node random tree, five pairs: 2 rounds
    edges = graph("chain", rng)[:4] + graph("giant", rng)[:10] + [(5000 + i, 5001 + i) for i in range(0, 10, 2)]
    expected = union_find_roots(edges)
    _, reference_rounds = star_rounds_partitioned(oriented(edges), partitions=3)
    work = _write_edges(tmp_path, edges)
    result = distributed_components(work, ["edges"], partitions=3)
    assert _read_labels(result["final"]) == expected
    assert result["rounds"] == reference_rounds >= 2
    # a rerun trusts every finished, verified round: no step is redone
    markers = sorted((tmp_path / "work").glob("cc-*/_round.json"))
    stamps = [m.stat().st_mtime_ns for m in markers]
    again = distributed_components(work, ["edges"], partitions=3)
    assert again["final"] == result["final"]
    assert [m.stat().st_mtime_ns for m in markers] == stamps
    local = local_components(work, ["edges"])
    assert _read_labels(local["final"]) == expected
