"""Report sections on a synthesised run directory (pyarrow-written, no Ray): the sections whose data
today comes from other stages (dedup statistics, token shards, training metrics) against the
contracts those stages write, sections absent when their data is, and the building blocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from benchmarks.report_build import synthesize_run
from pipelines.report import build_report
from pipelines.report.scan import ScoreRange
from pipelines.report.svg import _position, esc
from pipelines.report.thresholds import KNOWN, thresholds
from tests.browser import chromium  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("synth") / "run"
    written = synthesize_run(run, 6_000, seed=3)
    build_report(str(run))  # report/ exists for every test, whichever runs alone (-k)
    return run, written


def test_every_section_from_a_full_run_directory(synthetic):
    run, written = synthetic
    report = build_report(str(run))
    sections = report.stats["sections"]
    assert list(sections) == ["summary", "funnel", "reasons", "scores", "languages", "lengths", "domains", "dedup",
                              "pii", "shards", "training", "samples"]
    assert not [k for k, v in sections.items() if "error" in v]
    funnel = sections["funnel"]
    assert funnel["kept"] == written["kept"]["rows"] and funnel["read"] == 6_000
    assert {s["step"]: s["rejected"] for s in funnel["steps"]} == {k: v["rows"] for k, v in written.items() if k != "kept"}
    assert funnel["manifest_agrees"] is True
    assert sections["summary"]["ray"]["nodes"] == 4
    # dedup rejected rows carry id columns, which are not scores
    assert not [c for c in sections["scores"] if c.startswith(("dedup.", "pii."))]


def test_dedup_section_follows_the_dedup_contract(synthetic):
    run, _ = synthetic
    dedup = json.loads((run / "report" / "stats.json").read_text())["sections"]["dedup"]["minhash_dedup"]
    sizes = pq.read_table(run / "dedup" / "minhash_dedup" / "cluster_sizes.parquet").to_pylist()
    rates = pq.read_table(run / "dedup" / "minhash_dedup" / "source_rates.parquet").to_pylist()
    assert dedup["cluster_sizes"] == sorted(sizes, key=lambda r: r["cluster_size"])
    assert dedup["duplicates_removed"] == sum((r["cluster_size"] - 1) * r["clusters"] for r in sizes)
    assert dedup["documents"] == sum(r["documents"] for r in rates)
    assert dedup["duplicates"] == sum(r["duplicates"] for r in rates)
    assert {r["source"]: r["rate"] for r in dedup["sources"]} == {r["source"]: r["duplicates"] / r["documents"] for r in rates}


def test_shards_and_training_sections(synthetic):
    run, _ = synthetic
    sections = json.loads((run / "report" / "stats.json").read_text())["sections"]
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    for split, entry in sections["shards"]["splits"].items():
        files = [run / f for f in manifest["splits"][split]["files"]]
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        starts = pads.dataset([str(f) for f in files]).to_table(columns=["doc_starts"]).column("doc_starts")
        assert entry["rows_in_files"] == rows == manifest["splits"][split]["rows"]
        assert sum(i * n for i, n in enumerate(entry["documents_starting_per_row"])) == pc.sum(
            pc.list_value_length(starts)).as_py()
    training = sections["training"]
    lines = (run / "metrics" / "train.csv").read_text().splitlines()[1:]
    last = lines[-1].split(",")
    assert training["rows"] == len(lines) and training["final"]["step"] == int(last[0])
    assert training["final"]["loss"] == pytest.approx(float(last[2]))
    assert training["val_points"] == sum(1 for line in lines if line.split(",")[7])
    html = (run / "report" / "index.html").read_text()
    assert 'id="training"' in html and "<polyline" in html


def test_sections_without_data_are_left_out(synthetic, tmp_path):
    run = tmp_path / "bare"
    shutil.copytree(synthetic[0], run)
    for folder in ("dedup", "shards", "metrics", "report"):
        shutil.rmtree(run / folder)
    for path in run.rglob("*.parquet"):  # drop url and the langid / pii columns
        table = pq.read_table(path)
        drop = [c for c in table.column_names if c == "url" or c.startswith(("langid.", "pii."))]
        pq.write_table(table.drop_columns(drop), path)
    sections = build_report(str(run)).stats["sections"]
    assert set(sections) == {"summary", "funnel", "reasons", "scores", "lengths", "samples"}


def test_not_a_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        build_report(str(tmp_path))


def test_thresholds_from_step_configs():
    class Step:
        def __init__(self, label, op, config):
            self.label, self.op, self.config = label, op, config

    found = thresholds([Step("langid", "langid", {"min_score": 0.65}),
                        Step("gopher_quality", "gopher_quality", {"min_doc_words": 50, "max_avg_word_length": 10}),
                        Step("gopher_repetition", "gopher_repetition", {"top_n_grams": {2: 0.2}}),
                        Step("my_filter", "my_filter", {"min_score": 0.3, "keep": ["en"]})])
    assert [(t.value, t.bound) for t in found["langid.score"]] == [(0.65, "min")]
    assert found["gopher.words"][0].value == 50 and found["gopher.mean_word_length"][0].bound == "max"
    assert found["gopher_rep.top_2_gram_char_frac"][0].value == 0.2
    assert found["my_filter.score"][0].field == "min_score"  # the generic min_X / max_X rule


def test_histogram_bins_and_marker_positions():
    r = ScoreRange(0.0, 1.0, integer=False)
    assert len(r.edges) == 31 and r.edges[0] == 0 and r.edges[-1] == 1
    assert ScoreRange(0, 8, integer=True).edges.tolist() == [x - 0.5 for x in range(10)]
    heavy = ScoreRange(3, 200_000, integer=True, log=True)
    assert heavy.edges[0] == pytest.approx(3) and heavy.edges[-1] == pytest.approx(200_000)
    assert np.all(np.diff(heavy.edges) > 0)
    assert _position(0.5, list(r.edges), False) == pytest.approx(15)
    assert _position(2.0, list(r.edges), False) is None
    assert esc('<b a="1">') == "&lt;b a=&quot;1&quot;&gt;"


def test_hosts_of_urls():
    import pyarrow as pa

    from pipelines.report.scan import _hosts

    urls = ["https://www.News.example.com/a", "http://user:pw@Host.example:8080/x", "https://h.example?x=1",
            "https://h.example#f", "ftp://[::1]:21/x", "not a url", "/relative/path", None, "https://",
            "mailto:a@b.c", "https://a.example:443", 'https://evil.example/p"><script>']
    assert _hosts(pa.array(urls)).to_pylist() == [
        "news.example.com", "host.example", "h.example", "h.example", "[::1]", None, None, None, None, None,
        "a.example", "evil.example"]


def test_full_report_renders_in_chromium(synthetic, chromium, tmp_path):
    """Every section, the ones fed by dedup, shards and training included, renders without a console
    error (screenshot: test-artifacts/report-synthetic.png)."""
    import re

    from tests.browser import ARTIFACTS, load_page

    run, _ = synthetic
    build_report(str(run))
    dom, console = load_page(chromium, run / "report" / "index.html", tmp_path, ARTIFACTS / "report-synthetic.png")
    assert console == [], console
    assert re.findall(r'<section id="([a-z_]+)"', dom) == list(
        json.loads((run / "report" / "stats.json").read_text())["sections"])
    assert len(re.findall(r"<svg", dom)) >= 20
    assert "<script" not in dom.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


@pytest.mark.parametrize("op_name", ["length_filter", "langid", "gopher_quality", "gopher_repetition",
                                     "fineweb_quality", "c4_quality"])
def test_threshold_columns_exist_in_what_the_op_writes(op_name):
    """The config → column map stays true to the ops: every column a default config's thresholds
    point at is one the op really writes (spec.yaml holds the resolved config, defaults included)."""
    import pyarrow as pa

    from curation.operator import get_op, load_builtin_ops
    from pipelines.report.context import StepInfo

    load_builtin_ops()
    op_class = get_op(op_name)
    config = op_class.Config(**({"min_words": 5, "max_chars": 10_000} if op_name == "length_filter" else {}))
    op = op_class(config, step_label=op_name)
    op.setup()
    text = "The quick brown fox jumps over the lazy dog. It was the best of times, and the worst.\n" * 3
    batch = pa.table({"doc_id": pa.array([1, 2], pa.int64()), "text": [text, "short"], "source": ["s", "s"]})
    written = set(op.process(batch).table.column_names)
    resolved = json.loads(config.model_dump_json())
    expected = {col for field, (col, _) in KNOWN[op_name].items() if isinstance(resolved.get(field), (int, float))}
    assert expected, f"{op_name}: no threshold mapped"
    assert expected <= written, f"{op_name}: {sorted(expected - written)} not written by the op"
    # the generic min_X / max_X rule never points at a column the run lacks (langid.min_chars is not
    # a score column)
    assert set(thresholds([StepInfo(op_name, op_name, resolved)], written)) <= written
