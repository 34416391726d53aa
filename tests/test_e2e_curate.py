"""End-to-end: real specs through the `gristmill` command on a real (local) Ray, checked against the
Parquet the run wrote."""

from __future__ import annotations

import gzip
import json
import shutil
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO, run_gristmill
from tests.helpers import all_ids, manifest, read_dir, rejected_tables, write_jsonl_corpus

pytestmark = pytest.mark.e2e


def words_from_shipped_text() -> list[str]:
    return (DATA / "text" / "tinyshakespeare" / "input.txt").read_text().split()


def assert_balanced(run: Path) -> dict:
    """read = kept + rejected + quarantined, from the manifest and again from the Parquet files."""
    m = manifest(run)
    t = m["totals"]
    assert t["balanced"], t
    assert t["read"] == t["kept"] + sum(t["rejected"].values()) + t["quarantined"]
    kept = read_dir(run / "data")
    n_kept = 0 if kept is None else kept.num_rows
    rejected = rejected_tables(run)
    assert n_kept == t["kept"]
    assert rejected.get("_ingest").num_rows if "_ingest" in rejected else 0 == t["quarantined"]
    for label, n in t["rejected"].items():
        assert (rejected[label].num_rows if label in rejected else 0) == n, label
    ids = all_ids(run)
    assert len(ids) == len(set(ids)) == t["read"], "every document exactly once"
    return m


def _bad_input_spec(folder: Path) -> Path:
    """JSONL and Parquet inputs holding every kind of unreadable record, and a spec that reads them."""
    docs = folder / "docs"
    docs.mkdir(parents=True)
    good = [json.dumps({"text": f"document number {i} has a handful of real words in it"}) for i in range(30)]
    lines = good[:10] + ['{"text": "unterminated', '[1, 2]', '{"body": "no text field"}', '{"text": 42}',
                         '{"text": "   "}'] + good[10:20]
    (docs / "a.jsonl").write_text("\n".join(lines) + "\n")
    (docs / "b.jsonl").write_bytes(b'{"text": "caf\xe9 latin-1 bytes"}\n' + (good[20] + "\n").encode())
    blob = gzip.compress(("\n".join(good[21:30]) + "\n").encode())
    (docs / "c.jsonl.gz").write_bytes(blob[: len(blob) // 2])  # truncated gzip member
    (docs / "d.jsonl").write_bytes(b"")  # an empty file: no documents, no rows, still committed
    tables = folder / "tables"
    tables.mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["no text column here"]}), tables / "e.parquet")
    pq.write_table(pa.table({"text": ["a parquet document with enough words", None]}), tables / "f.parquet")
    spec = folder / "bad.yaml"
    spec.write_text("kind: curate\nname: bad\ninput:\n  - format: jsonl\n    paths: [docs/]\n"
                    "  - {format: parquet, paths: [tables/*.parquet]}\n"
                    "steps:\n  - length_filter: {min_words: 3}\n")
    return spec


def _boundary_spec(folder: Path) -> Path:
    """600 documents in 3 files and a spec whose global step (shuffle) sits between two streaming steps."""
    write_jsonl_corpus(folder / "docs", files=3, docs_per_file=200, words=words_from_shipped_text())
    spec = folder / "s.yaml"
    spec.write_text("kind: curate\nname: boundary\ninput:\n  - {format: jsonl, paths: [docs/*.jsonl]}\n"
                    "steps:\n  - normalize: {}\n  - shuffle: {seed: 1}\n  - length_filter: {min_words: 40}\n")
    return spec


@pytest.fixture(scope="module")
def first_runs(ray_address, tmp_path_factory) -> dict:
    """The first run of each spec below, two at a time on the session's Ray (as test_report's two
    runs): a small run spends ~40 % of its wall time with the 2 CPUs idle (job and worker start-up),
    so two side by side take little more than the longer one. Each test reads its own run's result
    (``.result()`` raises that run's error in that test only)."""
    root = tmp_path_factory.mktemp("e2e-curate")
    bad = _bad_input_spec(root / "bad")
    boundary = _boundary_spec(root / "boundary")
    jobs = {
        # as on a cluster: the gristmill packages travel to the workers in the job's runtime_env
        "curate_text": (("run", "specs/curate-text.yaml", "--out", str(root / "curate-text" / "run")), True),
        "bad_input": (("run", str(bad), "--out", str(root / "bad" / "run")), False),
        "boundary": (("run", str(boundary), "--out", str(root / "boundary" / "run")), False),
    }
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(run_gristmill, *args, address=ray_address, ship_code=ship)
                   for name, (args, ship) in jobs.items()}
        wait(futures.values())
    return {name: (Path(jobs[name][0][3]), future) for name, future in futures.items()}


def test_curate_text_spec_end_to_end(first_runs):
    run, future = first_runs["curate_text"]
    proc = future.result()
    assert "= kept" in proc.stdout
    m = assert_balanced(run)
    n_files = len(list((DATA / "text" / "sotu").glob("*.txt"))) + len(list((DATA / "text" / "moby-dick").glob("chapter_*.txt")))
    assert m["totals"]["read"] == n_files
    kept = read_dir(run / "data")
    assert {"doc_id", "text", "source", "length.chars", "length.words", "normalize.changed"} <= set(kept.column_names)
    assert min(kept.column("length.words").to_pylist()) >= 50
    # doc_id = file_index << 32 | record, and file_index follows the manifest's sorted listing
    listing = {f["index"]: f["location"] for f in m["inputs"]}
    for doc_id, source in zip(kept.column("doc_id").to_pylist()[:20], kept.column("source").to_pylist()[:20]):
        assert listing[doc_id >> 32] == source and doc_id & 0xFFFFFFFF == 0
    assert (run / "spec.yaml").exists()
    # (an unchanged rerun skipping every stage and changing nothing: tests/test_dedup_e2e.py)


def test_bad_input_is_quarantined_with_reasons(first_runs):
    run, future = first_runs["bad_input"]
    future.result()
    m = assert_balanced(run)
    quarantined = rejected_tables(run)["_ingest"]
    reasons = sorted(quarantined.column("reason").to_pylist())
    assert reasons == sorted(["invalid_json", "not_an_object", "missing_field", "wrong_type", "empty_text",
                              "invalid_utf8", "unreadable_file", "missing_column", "missing_field"])
    row = {r["reason"]: r for r in quarantined.to_pylist()}
    assert row["invalid_json"]["record"] == 10 and row["invalid_json"]["source"].endswith("a.jsonl")
    assert row["unreadable_file"]["source"].endswith("c.jsonl.gz")
    assert m["totals"]["kept"] >= 22
    assert len(m["inputs"]) == 6


def test_global_op_is_a_stage_boundary_and_ids_survive(first_runs, gristmill):
    run, future = first_runs["boundary"]
    future.result()
    spec = run.parent / "s.yaml"
    m = assert_balanced(run)
    assert [s["id"] for s in m["stages"]] == ["01-stream", "02-shuffle", "03-stream"]
    assert m["stages"][0]["output_dir"] == "stages/01-stream" and m["stages"][2]["output_dir"] == "data"
    assert m["totals"]["read"] == 600
    assert sorted(all_ids(run)) == sorted((f << 32) | r for f in range(3) for r in range(200))
    status = gristmill("status", str(run))
    assert "length_filter" in status.stdout and "600" in status.stdout

    # Changing the last step's config re-runs only that stage, and says so.
    proc = gristmill("run", str(spec), "--out", str(run), "--set", "steps[2].length_filter.min_words=80")
    assert "stage 03-stream changed (config of 'length_filter' changed)" in proc.stderr
    assert "skip 01-stream" in proc.stderr and "skip 02-shuffle" in proc.stderr
    m2 = assert_balanced(run)
    assert m2["totals"]["rejected"]["length_filter"] > m["totals"]["rejected"]["length_filter"]

    # Appending a step keeps finished stages; the old final output moves out of data/.
    spec.write_text(spec.read_text().replace("min_words: 40}", "min_words: 40}\n  - shuffle: {seed: 2}"))
    gristmill("run", str(spec), "--out", str(run))
    m3 = assert_balanced(run)
    assert [s["id"] for s in m3["stages"]][-1] == "04-shuffle_2"
    assert m3["totals"]["kept"] == m["totals"]["kept"]


def test_validate_schema_status_exit_codes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: curate\nname: x\ninput: []\n")
    # the installed command: a spec error is exit status 2 with the position on stderr
    proc = run_gristmill("validate", str(bad), check=False)
    assert proc.returncode == 2
    assert f"{bad}:3:8 input: List should have at least 1 item after validation" in proc.stderr

    # the rest in-process (the same Typer app; a second interpreter start-up per command only adds time)
    from typer.testing import CliRunner

    from pipelines.cli import app

    def cli(*args: str):
        return CliRunner().invoke(app, list(args))

    ok = cli("validate", str(REPO / "specs" / "curate-text.yaml"))
    assert ok.exit_code == 0 and "ok" in ok.stdout
    result = cli("run", str(bad), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and not (tmp_path / "r").exists(), "spec errors stop the run before anything starts"
    assert f"{bad}:3:8 input:" in " ".join(result.output.split())
    schema = cli("schema")
    assert schema.exit_code == 0 and "curate" in json.loads(schema.stdout)
    missing = cli("status", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2
