"""`minhash_dedup` with ``verify: true``: exact Jaccard on the candidate edges keeps LSH false
positives, and the verified clusters equal a brute-force exact-Jaccard reference."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pyarrow as pa
import pytest

from curation.dedup.lsh import band_keys
from curation.dedup.signatures import MinHashSignatures
from curation.dedup.rounds import WorkDir
from curation.dedup.verify import implied_threshold, local_verify_task, pair_jaccard, shingle_sets
from tests.dedup_corpus import edit, jaccard, sotu_passages
from tests.test_dedup_ops import doc_id, rows_by_id, run_op


def test_pair_jaccard_and_shingle_sets_are_exact():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 40, size=int(n)).astype(np.uint64) for n in rng.integers(0, 30, size=50)]
    sets = shingle_sets(np.concatenate(docs), np.array([len(d) for d in docs]))
    assert sets.to_pylist() == [sorted(set(d.tolist())) for d in docs]
    a, b = sets.slice(0, 25), sets.slice(25, 25)  # sliced lists: offsets must be honoured
    expected = [len(set(x) & set(y)) / len(set(x) | set(y)) if set(x) | set(y) else 1.0
                for x, y in zip(a.to_pylist(), b.to_pylist())]
    assert np.allclose(pair_jaccard(a, b), expected)
    assert implied_threshold(14, 8) == pytest.approx(0.719, abs=1e-3)


def colliding(texts: list[str], bands: int, rows: int, seed: int) -> set[tuple[int, int]]:
    """Pairs (by position) that share at least one band key: the LSH candidates, by brute force."""
    keys = band_keys(MinHashSignatures(bands * rows, 5, seed).of_texts(pa.array(texts)), bands, rows)
    return {(i, j) for i, j in itertools.combinations(range(len(texts)), 2) if (keys[i] == keys[j]).any()}



@pytest.mark.slow
def test_verify_keeps_a_false_positive_candidate(ray_session, tmp_path):
    p = sotu_passages(6, words=100, seed=2)
    a, b = p[0] + " " + p[1], p[0] + " " + p[2]  # share half their words: exact 5-gram J ~ 0.33
    c = p[3] + " " + p[4]
    d = edit(c, 0.01, random.Random(3), c.split())  # a true near duplicate
    e = p[5]
    texts = [a, b, c, d, e]
    assert jaccard(a, b) < 0.4 and jaccard(c, d) > 0.85
    bands, rows = 4, 2  # implied threshold (1/4)^(1/2) = 0.5; a J = 0.33 pair collides ~30% of seeds
    seed = next(s for s in range(1, 1000) if colliding(texts, bands, rows, s) == {(0, 1), (2, 3)})
    ids = [doc_id(0, i) for i in range(len(texts))]
    table = pa.table({"doc_id": pa.array(ids, pa.int64()), "text": texts, "source": ["web"] * len(texts)})
    config = {"bands": bands, "rows": rows, "seed": seed}

    plain = rows_by_id(run_op(ray_session, "minhash_dedup", config, table, tmp_path / "plain"))
    assert plain[ids[1]]["reason"] == "near_duplicate" and plain[ids[1]]["dedup.duplicate_of"] == ids[0]

    verified = rows_by_id(run_op(ray_session, "minhash_dedup", {**config, "verify": True}, table, tmp_path / "verified"))
    assert len(verified) == len(texts)
    assert verified[ids[0]]["reason"] is None and verified[ids[1]]["reason"] is None  # the false positive stays
    assert verified[ids[1]]["dedup.cluster_id"] is None
    assert verified[ids[3]]["reason"] == "near_duplicate" and verified[ids[3]]["dedup.duplicate_of"] == ids[2]
    summary = json.loads((tmp_path / "verified" / "dedup" / "minhash_dedup" / "summary.json").read_text())
    assert summary["verify_candidate_edges"] == 2 and summary["verify_removed_edges"] == 1
    assert summary["verify_threshold"] == pytest.approx(0.5)
    marker = json.loads((tmp_path / "verified" / "work" / "02-dedup" / "verify" / "_round.json").read_text())
    assert marker["rows"] == 1  # its own round, row-count checked
    assert marker["backend"] == summary["verify_backend"] == "local"  # two edges: one task, no shuffle
    # Over its memory budget the one-task check gives up before writing anything (then: two shuffles).
    work = WorkDir(str(tmp_path / "verified" / "work" / "02-dedup"))
    edge_dirs = [p.name for p in (tmp_path / "verified" / "work" / "02-dedup").glob("lsh-*")]
    assert local_verify_task(work, edge_dirs, 0.5, max_bytes=16) is None
    assert local_verify_task(work, edge_dirs, 0.5, max_bytes=2**20) == {"rows": 1, "candidates": 2, "removed": 1}


@pytest.mark.slow
@pytest.mark.parametrize("verify_mb, backend", [(512, "local"), (0, "shuffle")])
def test_verified_clusters_equal_brute_force_exact_jaccard(ray_session, tmp_path, verify_mb, backend):
    rng = random.Random(5)
    originals = sotu_passages(12, words=150, seed=6)
    vocab = " ".join(originals).split()
    texts = list(originals)
    for i, doc in enumerate(originals):  # copies from identical to far below the threshold
        texts.append(edit(doc, [0.0, 0.02, 0.05, 0.08, 0.12, 0.2][i % 6], rng, vocab))
    texts.append(originals[0])  # a third, exact copy: a cluster of three
    rng.shuffle(texts)
    ids = [doc_id(i % 2, i) for i in range(len(texts))]
    threshold = 0.6
    # many bands of few rows: every pair above the threshold collides (recall ~1), and so do many
    # pairs far below it, which only verification removes
    # the LSH rounds by a Ray Data hash shuffle here (auto would bucket this small set in one task)
    config = {"bands": 40, "rows": 2, "threshold": threshold, "verify": True, "lsh": "shuffle",
              "local_max_verify_mb": verify_mb}
    table = pa.table({"doc_id": pa.array(ids, pa.int64()), "text": texts, "source": ["web"] * len(texts)})
    out = rows_by_id(run_op(ray_session, "minhash_dedup", config, table, tmp_path))

    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in itertools.combinations(range(len(texts)), 2):
        if jaccard(texts[i], texts[j]) >= threshold:
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(find(i), []).append(ids[i])
    expected = {}
    for members in groups.values():
        keeper = min(members)
        for m in members:
            expected[m] = (None if m == keeper or len(members) == 1 else keeper,
                           keeper if len(members) > 1 else None)
    got = {d: (r["dedup.duplicate_of"], r["dedup.cluster_id"]) for d, r in out.items()}
    assert got == expected
    assert sum(len(m) > 1 for m in groups.values()) >= 4  # the reference has real clusters to match
    summary = json.loads((tmp_path / "dedup" / "minhash_dedup" / "summary.json").read_text())
    assert summary["verify_removed_edges"] > 0  # and LSH alone would have merged more
    assert summary["lsh_local_rounds"] == 0 and summary["verify_backend"] == backend
