"""exact_dedup and minhash_dedup as the runner calls them (a Dataset in, every row out), on the
test session's Ray: keeper rules, the contract columns, stats as data, and resume between rounds."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from curation.dedup import minhash as minhash_module
from curation.operator import GlobalContext, get_op
from tests.dedup_corpus import edit, jaccard, sotu_passages

pytestmark = pytest.mark.slow


def run_op(ray, name: str, config: dict, table: pa.Table, root) -> pa.Table:
    op_cls = get_op(name)
    op = op_cls(op_cls.Config(**config))
    ds = ray.data.from_arrow(table).repartition(3)
    out = op.apply(ds, GlobalContext(str(root / "work" / "02-dedup"), pafs.LocalFileSystem(), 2, run_root=str(root)))
    result = pa.concat_tables(list(out.iter_batches(batch_format="pyarrow", batch_size=None)))
    return result.sort_by("doc_id")


def rows_by_id(table: pa.Table) -> dict[int, dict]:
    return {r["doc_id"]: r for r in table.to_pylist()}


def doc_id(file: int, row: int) -> int:
    """The id contract (DESIGN.md): input file index in the high 32 bits, record in the low."""
    return file << 32 | row


def test_exact_dedup_keepers_columns_and_stats(ray_session, tmp_path):
    a10, b3, a7, a1, b5, b2, a8, c9 = (doc_id(0, 10), doc_id(1, 3), doc_id(0, 7), doc_id(0, 1), doc_id(1, 5),
                                       doc_id(1, 2), doc_id(0, 8), doc_id(2, 9))
    texts = ["Hello World", "hello   world", "HELLO WORLD", "Hello World!", "unique one", "Hello World", None, "unique two"]
    table = pa.table({"doc_id": pa.array([a10, b3, a7, a1, b5, b2, a8, c9], pa.int64()), "text": texts,
                      "source": ["a", "b", "a", "a", "b", "b", "a", "c"],
                      "quality.score": pa.array([0.1, 0.2, 0.9, 0.5, 0.3, None, 0.0, 0.1], pa.float64())})
    out = rows_by_id(run_op(ray_session, "exact_dedup", {}, table, tmp_path))
    assert len(out) == table.num_rows  # every input row comes back
    group = [a10, b3, a7, b2]  # same text after NFKC, lower case and whitespace collapsing
    for doc in group:
        assert out[doc]["dedup.cluster_id"] == a7 and out[doc]["dedup.cluster_size"] == 4
    assert out[a7]["reason"] is None and out[a7]["dedup.duplicate_of"] is None  # the lowest doc_id stays
    assert {d: out[d]["reason"] for d in (a10, b3, b2)} == dict.fromkeys((a10, b3, b2), "exact_duplicate")
    assert {out[d]["dedup.duplicate_of"] for d in (a10, b3, b2)} == {a7}
    for doc in (a1, b5, a8, c9):  # punctuation counts by default; null text is nobody's duplicate
        assert out[doc]["reason"] is None and out[doc]["dedup.cluster_id"] is None
    sizes = pq.read_table(tmp_path / "dedup" / "exact_dedup" / "cluster_sizes.parquet").to_pylist()
    assert sizes == [{"cluster_size": 1, "clusters": 4}, {"cluster_size": 4, "clusters": 1}]
    rates = pq.read_table(tmp_path / "dedup" / "exact_dedup" / "source_rates.parquet")
    assert rates.schema.field("documents").type == pa.int64()
    assert rates.to_pylist() == [{"source": "a", "documents": 4, "duplicates": 1},
                                 {"source": "b", "documents": 3, "duplicates": 2},
                                 {"source": "c", "documents": 1, "duplicates": 0}]
    # the removal lists are one folder per input file
    assert sorted(p.name for p in (tmp_path / "work" / "02-dedup" / "removals").iterdir() if p.is_dir()) == ["file-0", "file-1"]

    # a small corpus is grouped in one task (grouping: auto), not by a shuffle
    assert json.loads((tmp_path / "dedup" / "exact_dedup" / "summary.json").read_text())["grouping"] == "local"

    # keep the highest score (null ranks last), punctuation ignored; the hash-shuffle grouping
    out = rows_by_id(run_op(ray_session, "exact_dedup", {"keep": {"highest": "quality.score"}, "grouping": "shuffle",
                                                         "normalization": {"strip_punctuation": True}},
                            table, tmp_path / "second"))
    assert out[a7]["reason"] is None and out[a7]["dedup.cluster_size"] == 5 and out[a7]["dedup.cluster_id"] == a1
    assert {out[d]["dedup.duplicate_of"] for d in (a10, b3, b2, a1)} == {a7}


def near_duplicate_corpus(n: int = 24) -> tuple[pa.Table, dict[int, int]]:
    """Originals in three files, and a fourth file of copies: exact, lightly edited, heavily edited."""
    rng = random.Random(11)
    base = sotu_passages(n, words=200, seed=4)
    vocab = " ".join(base).split()
    texts, sources = list(base), [f"file-{i % 3}" for i in range(n)]
    copy_of = {}
    for i, doc in enumerate(base):
        rate = [0.0, 0.005, 0.01, 0.3][i % 4]
        texts.append(edit(doc, rate, rng, vocab))
        sources.append("copies")
        copy_of[n + i] = i
    files = {"file-0": 0, "file-1": 1, "file-2": 2, "copies": 3}
    ids = [doc_id(files[source], i) for i, source in enumerate(sources)]
    copy_of = {ids[c]: ids[o] for c, o in copy_of.items()}
    return pa.table({"doc_id": pa.array(ids, pa.int64()), "text": texts, "source": sources}), copy_of


def test_minhash_dedup_finds_near_duplicates_and_resumes_between_rounds(ray_session, tmp_path, monkeypatch):
    table, copy_of = near_duplicate_corpus()
    texts = dict(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()))

    # an injected failure after the signature and LSH rounds, in the components/removals round
    def fail(*args, **kwargs):
        raise RuntimeError("injected: the worker died here")

    monkeypatch.setattr(minhash_module, "local_clusters_task", fail)
    with pytest.raises(Exception, match="injected"):
        run_op(ray_session, "minhash_dedup", {}, table, tmp_path)
    work = tmp_path / "work" / "02-dedup"
    finished = sorted(p.parent.name for p in work.glob("*/_round.json"))
    assert finished[0] == "lsh-000" and "signatures" in finished and "removals" not in finished
    stamps = {p: p.stat().st_mtime_ns for p in work.glob("*/_round.json")}
    monkeypatch.undo()

    out = rows_by_id(run_op(ray_session, "minhash_dedup", {}, table, tmp_path))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished rounds were trusted, not redone
    assert len(out) == table.num_rows
    for copy, original in copy_of.items():
        j = jaccard(texts[copy], texts[original])
        row = out[copy]
        if j >= 0.85:
            assert row["reason"] == "near_duplicate", j
            assert row["dedup.duplicate_of"] == original and row["dedup.cluster_id"] == original
            assert row["dedup.cluster_size"] == 2
            assert out[original]["reason"] is None and out[original]["dedup.cluster_size"] == 2
        elif j < 0.3:
            assert row["reason"] is None, j
    originals = [d for d in out if d not in copy_of]
    assert all(out[d]["reason"] is None for d in originals)
    summary = (tmp_path / "dedup" / "minhash_dedup" / "summary.json").read_text()
    assert '"components_backend": "local"' in summary
    assert '"lsh_local_rounds": 1' in summary  # a small band group: bucketed in one task, no shuffle
    rates = {r["source"]: r for r in pq.read_table(tmp_path / "dedup" / "minhash_dedup" / "source_rates.parquet").to_pylist()}
    assert rates["copies"]["duplicates"] == sum(r["reason"] == "near_duplicate" for r in out.values())
