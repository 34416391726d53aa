"""The runner driven in-process (as an embedding program would), on the session's local Ray."""

from __future__ import annotations

import gzip
import io

import pyarrow as pa

from pipelines.rundir import RunDir
from pipelines.runner import CurateRun, Reporter
from pipelines.specs import validate_spec
from pipelines.stream_pass import group_units, split_by_bytes
from pipelines.yaml_source import SourceMap
from tests.conftest import DATA
from tests.helpers import all_ids, manifest, write_jsonl_corpus


def make_spec(paths):
    return validate_spec({"kind": "curate", "name": "inproc", "input": [{"format": "jsonl", "paths": paths}],
                          "steps": [{"normalize": {}}, {"length_filter": {"min_words": 20}}]}, SourceMap("<test>"))


def test_model_ops_run_in_the_pass_tasks_and_files_commit_as_they_finish(ray_session, tmp_path):
    """A model-loading op (langid) runs in the same task as the read, the other ops and the write; on a
    2-CPU local Ray with many files, input files are committed while others are still being read
    (with actor pools, the filter and write tasks waited for every read to finish)."""
    words = (DATA / "text" / "tinyshakespeare" / "input.txt").read_text().split()
    write_jsonl_corpus(tmp_path / "docs", files=16, docs_per_file=300, words=words)
    spec = validate_spec({"kind": "curate", "name": "inproc", "input": [{"format": "jsonl",
                          "paths": [str(tmp_path / "docs" / "*.jsonl")]}],
                          "steps": [{"normalize": {}}, {"langid": {"keep": ["en"], "min_score": 0.0}},
                                    {"length_filter": {"min_words": 20}}]}, SourceMap("<test>"))
    run = tmp_path / "run"
    result = CurateRun(spec, RunDir.open(str(run)), Reporter(), num_cpus=2, local=True).execute()
    totals = result.data["totals"]
    assert totals["balanced"] and totals["read"] == 16 * 300
    assert len(set(all_ids(run))) == 16 * 300
    assert manifest(run)["stages"][0]["counts"]["rejected"]["length_filter"] > 0
    progress = next((run / "_progress").iterdir())
    reads = [p.stat().st_mtime for p in progress.glob("read-u*.json")]
    commits = [p.stat().st_mtime for p in progress.glob("u*.json")]
    assert len(reads) == len(commits) == 16
    assert min(commits) < max(reads), "no input file was committed before the last one was read"


def test_split_by_language_writes_hive_folders(ray_session, tmp_path):
    lines = (DATA / "langid" / "fortunes-12lang.jsonl").read_text().splitlines()
    sample = [line for i, line in enumerate(lines) if i % 12 == 0]  # every language, a few of each
    (tmp_path / "f.jsonl").write_text("\n".join(sample) + "\n")
    spec = validate_spec({"kind": "curate", "name": "split",
                          "input": [{"format": "jsonl", "paths": [str(tmp_path / "f.jsonl")]}],
                          "steps": [{"langid": {"keep": ["en", "de", "ru"], "min_score": 0.5, "split_by_language": True}}]},
                         SourceMap("<test>"))
    run = tmp_path / "run"
    result = CurateRun(spec, RunDir.open(str(run)), Reporter(), num_cpus=2, local=True).execute()
    assert result.data["totals"]["balanced"]
    folders = sorted(p.name for p in (run / "data").iterdir() if p.is_dir())
    assert folders == ["lang=de", "lang=en", "lang=ru"]
    import pyarrow.dataset as pads

    for folder in folders:
        table = pads.dataset(str(run / "data" / folder)).to_table()
        assert set(table.column("langid.lang").to_pylist()) == {folder.split("=")[1]}
    kept = pads.dataset(str(run / "data"), partitioning="hive").to_table()
    assert kept.num_rows == result.data["totals"]["kept"] > 0


def test_split_by_bytes_cuts_by_the_rows_string_and_binary_bytes():
    table = pa.table({"doc_id": list(range(6)), "content": [b"x" * 100, b"x" * 100, None, b"x" * 500, b"x" * 10, b"x" * 10],
                      "url": ["u"] * 6})
    sizes = lambda parts: [p.num_rows for p in parts]  # noqa: E731
    assert sizes(split_by_bytes(table, None)) == [6]
    assert sizes(split_by_bytes(table, 10_000)) == [6]
    # 101, 101, 1, 501, 11, 11 bytes: a row over the budget travels alone, nothing is lost or reordered.
    parts = list(split_by_bytes(table, 250))
    assert sizes(parts) == [3, 1, 2]
    assert pa.concat_tables(parts).equals(table)
    assert sizes(split_by_bytes(table, 1)) == [1] * 6


def test_small_files_share_a_read_task_and_big_ones_stay_alone():
    kib, mib = 1 << 10, 1 << 20
    items = lambda sizes: [({"unit": i}, size) for i, size in enumerate(sizes)]  # noqa: E731
    units = lambda groups: [[item["unit"] for item in group] for group in groups]  # noqa: E731
    # 300 files of 10 KiB on 2 CPUs: eight groups of consecutive files (four per CPU), none lost
    groups = units(group_units(items([10 * kib] * 300), 2))
    assert len(groups) == 8 and sum(groups, []) == list(range(300))
    # files of a MiB or more are seconds of work each: one task per file, as before
    assert units(group_units(items([20 * mib] * 40), 2)) == [[i] for i in range(40)]
    assert units(group_units(items([2 * mib] * 3), 2)) == [[0], [1], [2]]
    # one big file among small ones travels alone; the small ones around it are grouped
    groups = units(group_units(items([5 * kib] * 20 + [8 * mib] + [5 * kib] * 20), 2))
    assert [20] in groups and sum(groups, []) == list(range(41)) and len(groups) < 41
    assert group_units([], 2) == [] and units(group_units(items([0] * 5), 2)) == [[0, 1, 2, 3, 4]]


def test_one_file_behind_a_heavy_op_is_cut_into_blocks_for_every_core(ray_session, tmp_path):
    """One WARC file and `extract` (Resources.block_bytes = 2 MiB): the few-files path cuts the read
    into ~2 MiB blocks, so its pages spread over both CPUs instead of one block per 16 MB read."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    pages = sorted((DATA / "extraction-dev" / "pages").glob("*/source.html.gz"))[:40]
    html_bytes = 0
    with (tmp_path / "pages.warc.gz").open("wb") as out:
        writer = WARCWriter(out, gzip=True)
        for i, path in enumerate(pages):
            body = gzip.decompress(path.read_bytes())
            html_bytes += len(body)
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(f"https://example.test/{i}", "response",
                                                          payload=io.BytesIO(body), http_headers=headers))
    assert html_bytes > 3 * 2 * 2**20
    spec = validate_spec({"kind": "curate", "name": "one-file", "input": [{"format": "warc",
                          "paths": [str(tmp_path / "pages.warc.gz")]}], "steps": [{"extract": {}}]}, SourceMap("<test>"))
    from ray.data import DataContext

    default_block = DataContext.get_current().target_max_block_size
    run = tmp_path / "run"
    result = CurateRun(spec, RunDir.open(str(run)), Reporter(), num_cpus=2, local=True).execute()
    assert DataContext.get_current().target_max_block_size == default_block  # the pass's own copy only
    totals = result.data["totals"]
    assert totals["balanced"] and totals["read"] == len(pages) and totals["kept"] > 0.9 * len(pages)
    parts = list((run / "data").glob("part-u000000-*.parquet"))
    assert len(parts) >= html_bytes // (3 * 2**20), f"{len(parts)} blocks for {html_bytes:,} bytes of HTML"
