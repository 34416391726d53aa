"""The shipped dedup spec through the `gristmill` command: exact and near duplicates removed, the
contract columns and statistics written, input = kept + rejected, and a rerun skips both stages."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.conftest import DATA
from tests.helpers import manifest, read_dir, rejected_tables

pytestmark = pytest.mark.e2e


def test_dedup_spec(gristmill, tmp_path):
    run = tmp_path / "dedup"
    gristmill("run", "specs/dedup.yaml", "--out", str(run))
    mirror = [json.loads(line) for line in (DATA / "dedup" / "moby-dick-mirror.jsonl").read_text().splitlines()]
    chapters = len(list((DATA / "text" / "moby-dick").glob("chapter_*.txt")))
    kept = read_dir(run / "data")
    rejected = rejected_tables(run)
    assert kept.num_rows + sum(t.num_rows for t in rejected.values()) == chapters + len(mirror)

    exact = rejected["exact_dedup"]
    assert exact.num_rows == sum(m["edit"] in ("exact", "case_spacing") for m in mirror)
    assert set(exact.column("reason").to_pylist()) == {"exact_duplicate"}
    near = rejected["minhash_dedup"]
    assert near.num_rows == sum(m["edit"] == "light_edit" for m in mirror)
    assert set(near.column("reason").to_pylist()) == {"near_duplicate"}
    for table in (exact, near):
        for column in ("dedup.duplicate_of", "dedup.cluster_id", "dedup.cluster_size"):
            assert str(table.schema.field(column).type) == "int64"
        # each removed document points at a kept one
        assert set(table.column("dedup.duplicate_of").to_pylist()) <= set(kept.column("doc_id").to_pylist())
    # the heavily edited copies (Jaccard ~0.13) stay
    heavy = {m["url"] for m in mirror if m["edit"] == "heavy_edit"}
    assert len(heavy) == 4 and heavy <= set(kept.column("url").to_pylist())

    for step in ("exact_dedup", "minhash_dedup"):
        sizes = pq.read_table(run / "dedup" / step / "cluster_sizes.parquet").to_pylist()
        rates = pq.read_table(run / "dedup" / step / "source_rates.parquet").to_pylist()
        removed = rejected[step].num_rows
        assert sum(r["duplicates"] for r in rates) == removed
        assert sum((s["cluster_size"] - 1) * s["clusters"] for s in sizes) == removed
    counts = {s["id"]: s["counts"] for s in manifest(run)["stages"]}
    assert any(c.get("rejected", {}).get("minhash_dedup") == near.num_rows for c in counts.values())

    # an unchanged rerun skips every stage and changes nothing
    again = gristmill("run", "specs/dedup.yaml", "--out", str(run))
    assert again.stderr.count("finished earlier with the same spec") == 3
    assert sorted(read_dir(run / "data").column("doc_id").to_pylist()) == sorted(kept.column("doc_id").to_pylist())
