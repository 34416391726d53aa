"""MinHash signatures and LSH banding, without Ray: agreement with datasketch on the same shingles,
shingling against a plain-Python reference, and LSH buckets against brute-force banding."""

from __future__ import annotations

import random
import struct

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash

from curation.dedup.lsh import band_keys, band_table, bucket_edges
from curation.dedup.minhash import MinHashDedupConfig
from curation.dedup.signatures import EMPTY, MinHashSignatures, estimate_jaccard
from tests.dedup_corpus import edit, shingles, sotu_passages


def test_shingles_match_plain_python_reference():
    docs = sotu_passages(20, words=120) + ["Three words only", "", "   ", "Ünïcode wörds, café — naïve 12 34 five six"]
    hasher = MinHashSignatures()
    hashes, per_doc = hasher.shingles(pa.array(docs))
    starts = np.cumsum(per_doc) - per_doc
    for i, doc in enumerate(docs):
        ours = set(hashes[starts[i]:starts[i] + per_doc[i]].tolist())
        assert len(ours) == len(shingles(doc)), doc[:40]
    assert per_doc[-4] == 1  # shorter than 5 words: one shingle
    assert per_doc[-3] == per_doc[-2] == 0  # no words, no shingles
    sig = hasher.of_texts(pa.array(["", "a b c d e f"]))
    assert (sig[0] == EMPTY).all() and not (sig[1] == EMPTY).all()


def test_jaccard_estimates_agree_with_datasketch_on_the_same_shingles():
    rng = random.Random(3)
    base = sotu_passages(40, words=300, seed=1)
    vocab = " ".join(base).split()
    pairs = [(doc, edit(doc, rate, rng, vocab)) for doc, rate in zip(base, [0.01, 0.03, 0.06, 0.1] * 10)]
    hasher = MinHashSignatures(num_perm=128)
    ours_err, theirs_err = [], []
    for a, b in pairs:
        ha, na = hasher.shingles(pa.array([a]))
        hb, nb = hasher.shingles(pa.array([b]))
        sa, sb = set(ha.tolist()), set(hb.tolist())
        true_j = len(sa & sb) / len(sa | sb)
        ours = estimate_jaccard(hasher.of_shingles(ha, na)[0], hasher.of_shingles(hb, nb)[0])
        ma, mb = MinHash(num_perm=128, seed=7), MinHash(num_perm=128, seed=7)
        ma.update_batch([struct.pack("<Q", h) for h in sa])
        mb.update_batch([struct.pack("<Q", h) for h in sb])
        theirs = ma.jaccard(mb)
        sigma = (true_j * (1 - true_j) / 128) ** 0.5
        assert abs(ours - true_j) <= 4 * sigma + 1e-9, (true_j, ours)
        ours_err.append(abs(ours - true_j))
        theirs_err.append(abs(theirs - true_j))
    # same sampling error as datasketch's permutations, within noise
    assert np.mean(ours_err) <= 1.5 * np.mean(theirs_err) + 0.01


def test_lsh_buckets_match_brute_force_banding():
    rng = random.Random(5)
    base = sotu_passages(30, words=80, seed=2)
    vocab = " ".join(base).split()
    docs = base + [edit(d, rate, rng, vocab) for d, rate in zip(base, [0.0, 0.02, 0.05, 0.1, 0.3] * 6)]
    bands, rows = 10, 4
    sig = MinHashSignatures(num_perm=bands * rows).of_texts(pa.array(docs))
    ids = np.arange(len(docs), dtype=np.int64) * 7 + 3
    keys = band_keys(sig, bands, rows)
    edges, stats = bucket_edges(band_table(keys, ids, range(bands)), max_bucket_size=1000)
    got = set(zip(edges.column("src").to_pylist(), edges.column("dst").to_pylist()))
    # brute force: i, j are candidates when some band's rows are all equal
    expected_buckets = {}
    for i in range(len(docs)):
        for b in range(bands):
            expected_buckets.setdefault((b, sig[i, b * rows:(b + 1) * rows].tobytes()), []).append(int(ids[i]))
    expected = {(d, min(m)) for m in expected_buckets.values() if len(m) > 1 for d in m if d != min(m)}
    assert got == expected
    assert stats["buckets"] == sum(len(m) > 1 for m in expected_buckets.values())
    assert len(got) > len(base) // 2  # the edited copies were found


def test_pathological_bucket_is_capped_and_counted():
    table = pa.table({"band": pa.array([0] * 10 + [1] * 3, pa.int32()), "band_key": pa.array([5] * 10 + [6] * 3, pa.uint64()),
                      "doc_id": pa.array(list(range(10)) + [20, 21, 22], pa.int64())})
    edges, stats = bucket_edges(table, max_bucket_size=4)
    assert stats == {"buckets": 2, "capped_buckets": 1, "capped_docs": 6}
    assert sorted(zip(edges.column("src").to_pylist(), edges.column("dst").to_pylist())) == [(1, 0), (2, 0), (3, 0), (21, 20), (22, 20)]


def test_threshold_shortcut_uses_datasketch_optimal_parameters():
    from datasketch.lsh import _optimal_param

    cfg = MinHashDedupConfig(threshold=0.8)
    assert (cfg.bands, cfg.rows) == _optimal_param(0.8, 112, 0.5, 0.5)
    with pytest.raises(ValueError, match="either"):
        MinHashDedupConfig(threshold=0.8, bands=10)
    assert (MinHashDedupConfig().bands, MinHashDedupConfig().rows) == (14, 8)
