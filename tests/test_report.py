"""The data-quality report on real runs: two runs of one filtering spec (different thresholds) through
the `gristmill` command, then every count in stats.json re-derived from the Parquet files with
pyarrow, hostile document text escaped, `--compare`, and the page rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.browser import ARTIFACTS, chromium, load_page  # noqa: F401 (chromium is a fixture)
from tests.conftest import DATA, run_gristmill
from tests.helpers import read_dir

pytestmark = pytest.mark.e2e

HOSTILE = "<script>alert(1)</script> </div> \"quoted\" & 'single'"
EXPECTED_SECTIONS = ["summary", "funnel", "reasons", "scores", "languages", "lengths", "domains", "pii", "samples"]

SPEC = """kind: curate
name: report-test
input:
  - {format: jsonl, paths: [docs/*.jsonl]}
steps:
  - normalize: {}
  - langid: {keep: [en, de], min_score: 0.5}
  - length_filter: {min_words: 20}
  - pii: {}
"""


def _corpus(folder: Path) -> None:
    """Multilingual fortunes (short, 12 languages) and English passages of varied length from the
    bundled speeches, each carrying hostile markup, some with PII, plus two unreadable lines."""
    folder.mkdir(parents=True)
    per_lang: dict[str, int] = {}
    with (folder / "a-fortunes.jsonl").open("w") as out:
        for line in (DATA / "langid" / "fortunes-12lang.jsonl").read_text().splitlines():
            row = json.loads(line)
            if per_lang.get(row["lang"], 0) < 15:
                per_lang[row["lang"]] = per_lang.get(row["lang"], 0) + 1
                out.write(json.dumps({"text": row["text"]}) + "\n")
    words = (DATA / "text" / "sotu" / "1861_abraham_lincoln_r.txt").read_text().split()
    hosts = ["www.News.example.com", "blog.example.org", "archive.example.net", "evil.example"]
    with (folder / "b-web.jsonl").open("w") as out:
        pos = 0
        for i in range(120):
            n = 6 + (i * 37) % 140
            chunk = words[pos:pos + n]
            pos = (pos + n) % (len(words) - 200)
            text = " ".join(chunk[: n // 2]) + f" {HOSTILE} " + " ".join(chunk[n // 2:])
            if i % 4 == 0:
                text += " Write to jane.doe@example.org or call +1 415 555 0132."
            url = f"https://{hosts[i % len(hosts)]}/p/{i}" + ('"><script>alert(2)</script>' if i % 4 == 3 else "")
            out.write(json.dumps({"text": text, "url": url}) + "\n")
        out.write("{not json\n")
        out.write(json.dumps({"url": "https://blog.example.org/no-text"}) + "\n")


@pytest.fixture(scope="module")
def runs(ray_address, tmp_path_factory):
    """Run A (the spec) and run B (stricter thresholds), each built its report at the end."""
    root = tmp_path_factory.mktemp("report")
    _corpus(root / "docs")
    (root / "spec.yaml").write_text(SPEC)
    a, b = root / "run-a", root / "run-b"
    # The two runs share the session's Ray and mostly wait on start-up: run them side by side.
    with ThreadPoolExecutor(2) as pool:
        run_a = pool.submit(run_gristmill, "run", str(root / "spec.yaml"), "--out", str(a), address=ray_address)
        run_b = pool.submit(run_gristmill, "run", str(root / "spec.yaml"), "--out", str(b),
                            "--set", "steps[2].length_filter.min_words=60", "--set", "steps[1].langid.min_score=0.8",
                            address=ray_address)
        proc_a, _ = run_a.result(), run_b.result()
    return {"a": a, "b": b, "stdout_a": proc_a.stdout}


def report_cli(*args: str):
    """`gristmill report …` in this process (the command's own code, without a second interpreter
    start-up: the run itself is what goes through a subprocess)."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, ["report", *args])
    result.text = result.output  # stdout and stderr, interleaved (click ≥ 8.2)
    return result


def _stats(run: Path) -> dict:
    return json.loads((run / "report" / "stats.json").read_text())


def _folders(run: Path) -> dict[str | None, pa.Table]:
    """Kept (None) and every rejected folder, read whole with pyarrow (small test runs only)."""
    out: dict[str | None, pa.Table] = {None: read_dir(run / "data")}
    for folder in sorted((run / "rejected").iterdir()):
        table = read_dir(folder)
        if table is not None:
            out[folder.name] = table
    return out


def test_run_builds_the_report_and_prints_a_summary(runs):
    a = runs["a"]
    assert (a / "report" / "index.html").stat().st_size > 10_000
    assert "funnel:" in runs["stdout_a"] and "report:" in runs["stdout_a"] and "index.html" in runs["stdout_a"]
    assert "langid" in runs["stdout_a"]  # the biggest removals with their reasons
    stats = _stats(a)
    assert stats["format"] == "gristmill-report/1"
    assert list(stats["sections"]) == EXPECTED_SECTIONS
    assert not [k for k, v in stats["sections"].items() if "error" in v]
    assert stats["sections"]["summary"]["stages"][-1]["rows_out"] == stats["sections"]["funnel"]["kept"]
    ray = json.loads((a / "manifest.json").read_text())["ray"]
    assert stats["sections"]["summary"]["ray"] == ray and ray["cpus"] >= 1 and ray["nodes"] >= 1


def test_counts_equal_those_rederived_from_parquet(runs):
    run = runs["a"]
    sections = _stats(run)["sections"]
    tables = _folders(run)
    kept = tables[None]

    def chars(t: pa.Table) -> int:
        return int(pc.sum(pc.fill_null(pc.utf8_length(t.column("text")), 0)).as_py() or 0)

    # funnel: per step removed docs and chars, and the whole balance
    funnel = sections["funnel"]
    by_step = {s["step"]: s for s in funnel["steps"]}
    assert funnel["kept"] == kept.num_rows and funnel["kept_chars"] == chars(kept)
    for label, table in tables.items():
        if label is not None:
            assert by_step[label]["rejected"] == table.num_rows, label
            assert by_step[label]["rejected_chars"] == chars(table), label
    assert funnel["read"] == sum(t.num_rows for t in tables.values())
    assert funnel["quarantined"] == tables["_ingest"].num_rows == 2
    assert funnel["manifest_agrees"] is True
    assert [s["step"] for s in funnel["steps"]] == ["_ingest", "normalize", "langid", "length_filter", "pii"]
    for before, after in zip(funnel["steps"], funnel["steps"][1:]):
        assert before["out"] == after["in"]

    # reasons
    for label, reasons in sections["reasons"].items():
        vc = pc.value_counts(tables[label].column("reason")).to_pylist()
        assert reasons == {v["values"]: v["counts"] for v in vc}

    # languages: kept and removed per language
    langs = {r["lang"]: r for r in sections["languages"]["languages"]}
    for lang, n in zip(*np.unique(np.array(kept.column("langid.lang").to_pylist(), dtype=object).astype(str),
                                  return_counts=True)):
        assert langs[lang]["kept"] == n
    removed_de = sum(pc.sum(pc.equal(t.column("langid.lang"), "de")).as_py() or 0
                     for label, t in tables.items() if label not in (None, "_ingest"))
    assert langs.get("de", {"removed": 0})["removed"] == removed_de
    assert len(langs) >= 8  # the fortunes are in 12 languages

    # score histograms: every non-null value counted once, kept vs removed
    scores = sections["scores"]
    assert {"langid.score", "length.chars", "length.words"} <= set(scores)
    for col, s in scores.items():
        kept_n = kept.column(col).drop_null()
        removed_n = sum(len(t.column(col).drop_null()) for label, t in tables.items()
                        if label is not None and col in t.column_names)
        assert sum(s["kept"]) == s["kept_n"] == len(kept_n), col
        assert sum(s["removed"]) == s["removed_n"] == removed_n, col
    assert scores["langid.score"]["thresholds"] == [{"step": "langid", "field": "min_score", "value": 0.5, "bound": "min"}]
    assert scores["length.words"]["thresholds"][0]["value"] == 20
    words = scores["length.words"]
    assert words["step"] == "length_filter"
    assert sum(words["removed_by_step"]) == tables["length_filter"].num_rows
    assert all(n == 0 for lo, n in zip(words["edges"], words["removed_by_step"]) if lo >= 20), \
        "length_filter removed nothing at or above its threshold"
    low = min(kept.column("langid.score").to_pylist())
    assert low >= 0.5 - 1e-6, "kept documents respect the threshold the histogram marks"

    # lengths: every document with text, before and after
    lengths = sections["lengths"]
    with_text = sum(t.num_rows - t.column("text").null_count for t in tables.values())
    assert sum(lengths["entering"]) == lengths["entering_docs"] == with_text
    assert sum(lengths["kept"]) == kept.num_rows
    assert lengths["entering_chars"] == sum(chars(t) for t in tables.values())

    # domains: host without www., lower-cased; keep rates
    top = {r["domain"]: r for r in sections["domains"]["top"]}
    assert "news.example.com" in top and "www.News.example.com" not in top
    for host, row in top.items():
        def count(t: pa.Table) -> int:
            if "url" not in t.column_names:
                return 0
            return sum(1 for u in t.column("url").to_pylist() if u and u.split("/")[2].lower().removeprefix("www.") == host)
        assert row["kept"] == count(kept), host
        assert row["removed"] == sum(count(t) for label, t in tables.items() if label is not None), host

    # pii: per-type totals over every folder that has the columns
    pii = sections["pii"]
    for kind, entry in pii.items():
        col = f"pii.{kind}"
        total = sum(pc.sum(t.column(col)).as_py() or 0 for t in tables.values() if col in t.column_names)
        assert entry["replacements"] == total
        assert entry["replacements_kept"] == (pc.sum(kept.column(col)).as_py() or 0)
    assert pii["email"]["replacements"] >= 10 and pii["phone"]["replacements"] >= 10

    # samples are real rows of the folders they claim
    for label, sample in sections["samples"].items():
        assert set(sample["removed"]) <= set(tables[label].column("doc_id").to_pylist())
        assert set(sample["kept"]) <= set(kept.column("doc_id").to_pylist())


def test_hostile_text_is_escaped(runs):
    html = (runs["a"] / "report" / "index.html").read_text()
    assert "<script" not in html.lower(), "document text must never become markup"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;/div&gt;" in html and "&quot;quoted&quot;" in html and "&#x27;single&#x27;" in html
    assert "&amp;" in html
    # The page allows no script at all, even if escaping were ever missed.
    assert "default-src 'none'" in html


def test_report_command_rebuilds_the_same_stats(runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs["a"], run)
    shutil.rmtree(run / "report")
    proc = report_cli(str(run))
    assert proc.exit_code == 0 and "report:" in proc.text, proc.text
    old, new = _stats(runs["a"])["sections"], _stats(run)["sections"]
    for key in ("funnel", "reasons", "scores", "languages", "lengths", "domains", "pii", "samples"):
        assert old[key] == new[key], key
    bad = report_cli(str(tmp_path / "nothing-here"))
    assert bad.exit_code == 2 and "not a run directory" in bad.text


def test_compare_two_runs_with_different_thresholds(runs, tmp_path):
    a, b = runs["a"], runs["b"]
    proc = report_cli(str(a), "--compare", str(b))
    html_path = a / "report" / "compare-run-b.html"
    assert proc.exit_code == 0 and "compare-run-b.html" in proc.text, proc.text
    stats = json.loads((a / "report" / "compare-run-b.json").read_text())
    changes = {(c["step"], c["field"]): (c["a"], c["b"]) for c in stats["sections"]["changes"]["changes"]}
    assert changes == {("langid", "min_score"): (0.5, 0.8), ("length_filter", "min_words"): (20, 60)}
    # the funnels are each run's own, as its report counted them
    assert stats["sections"]["funnel"]["a"]["steps"] == _stats(a)["sections"]["funnel"]["steps"]
    assert stats["sections"]["funnel"]["b"]["steps"] == _stats(b)["sections"]["funnel"]["steps"]
    fa, fb = stats["sections"]["funnel"]["a"], stats["sections"]["funnel"]["b"]
    assert fb["kept"] < fa["kept"] and fa["read"] == fb["read"]
    # score distributions on shared bins, with both runs' thresholds
    sa, sb = stats["sections"]["scores"]["a"], stats["sections"]["scores"]["b"]
    assert sa["length.words"]["edges"] == sb["length.words"]["edges"]
    assert sum(sa["length.words"]["kept"]) == fa["kept"] and sum(sb["length.words"]["kept"]) == fb["kept"]
    html = html_path.read_text()
    assert "A ≥ 20" in html and "B ≥ 60" in html and "A ≥ 0.5" in html and "B ≥ 0.8" in html
    # --out puts it elsewhere
    out = tmp_path / "cmp" / "a-vs-b.html"
    assert report_cli(str(a), "--compare", str(b), "--out", str(out)).exit_code == 0
    assert out.exists() and (tmp_path / "cmp" / "a-vs-b.json").exists()


# ------------------------------------------------------------------------------------------ browser


def test_console_errors_are_seen(chromium, tmp_path):
    """The detector the next test relies on does see a page's console errors."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('boom'); missing();</script></body></html>")
    _, console = load_page(chromium, page, tmp_path)
    assert any("boom" in line for line in console) and any("missing" in line for line in console)


def test_report_renders_in_chromium(runs, chromium, tmp_path):
    page = runs["a"] / "report" / "index.html"
    dom, console = load_page(chromium, page, tmp_path, ARTIFACTS / "report-index.png")
    assert console == [], console
    found = re.findall(r'<section id="([a-z_]+)"', dom)
    assert found == EXPECTED_SECTIONS
    funnel = dom[dom.index('<section id="funnel"'):]
    assert "<svg" in funnel[:5000] and "length_filter" in funnel[:20000]
    assert "<script" not in dom.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    compare = runs["a"] / "report" / "compare-run-b.html"
    if not compare.exists():
        report_cli(str(runs["a"]), "--compare", str(runs["b"]))
    dom, console = load_page(chromium, compare, tmp_path, ARTIFACTS / "report-compare.png")
    assert console == [], console
    assert re.findall(r'<section id="([a-z_]+)"', dom) == ["changes", "funnel", "scores"]


def test_out_without_compare_is_an_error(runs):
    result = report_cli(str(runs["a"]), "--out", "/tmp/x.html")
    assert result.exit_code == 2 and "--compare" in result.text
