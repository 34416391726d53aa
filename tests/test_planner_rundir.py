"""Planner grouping and hashing, input listing, run directory atomicity. No Ray."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from curation.ingest.listing import list_inputs
from pipelines.planner import plan_stages
from pipelines.rundir import RunDir, write_parquet_atomic
from pipelines.specs import validate_spec
from pipelines.yaml_source import SourceMap


def spec_with(steps, paths):
    return validate_spec({"kind": "curate", "name": "p", "input": [{"format": "jsonl", "paths": paths}],
                          "steps": steps}, SourceMap("<test>"))


@pytest.fixture
def corpus(tmp_path) -> list[str]:
    for name in ("b.jsonl", "a.jsonl", "sub/c.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('{"text": "x"}\n')
    return [str(tmp_path / "*.jsonl"), str(tmp_path / "sub")]


def test_listing_is_sorted_with_stable_indices(corpus, tmp_path):
    listing = list_inputs([corpus])
    assert [Path(f.location).relative_to(tmp_path).as_posix() for f in listing] == ["a.jsonl", "b.jsonl", "sub/c.jsonl"]
    assert [f.index for f in listing] == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_inputs([[str(tmp_path / "missing.jsonl")]])
    with pytest.raises(FileNotFoundError, match="no files match"):
        list_inputs([[str(tmp_path / "*.parquet")]])


def test_row_ops_fuse_and_global_ops_split(corpus):
    spec = spec_with([{"normalize": {}}, {"length_filter": {}}, {"shuffle": {}}, {"length_filter": {"min_words": 2}}], corpus)
    stages = plan_stages(spec, list_inputs([corpus]))
    assert [(s.id, [x.label for x in s.steps]) for s in stages] == [
        ("01-stream", ["normalize", "length_filter"]), ("02-shuffle", ["shuffle"]), ("03-stream", ["length_filter_2"])]
    assert [s.output_dir for s in stages] == ["stages/01-stream", "stages/02-shuffle", "data"]
    assert stages[0].rejected_labels == ["_ingest", "normalize", "length_filter"]
    assert stages[0].reads_inputs and not stages[2].reads_inputs


def test_global_first_gets_an_ingest_stage(corpus):
    stages = plan_stages(spec_with([{"shuffle": {}}], corpus), list_inputs([corpus]))
    assert [s.id for s in stages] == ["01-stream", "02-shuffle"]


def test_changing_a_config_changes_that_stage_and_later_hashes_only(corpus):
    listing = list_inputs([corpus])
    base = [{"normalize": {}}, {"shuffle": {}}, {"length_filter": {"min_words": 2}}]
    a = plan_stages(spec_with(base, corpus), listing)
    changed = [{"normalize": {}}, {"shuffle": {"seed": 5}}, {"length_filter": {"min_words": 2}}]
    b = plan_stages(spec_with(changed, corpus), listing)
    assert a[0].hash == b[0].hash and a[1].hash != b[1].hash and a[2].hash != b[2].hash
    appended = plan_stages(spec_with(base + [{"shuffle": {"seed": 9}}], corpus), listing)
    assert [s.hash for s in appended[:3]] == [s.hash for s in a]


def test_new_input_file_invalidates_everything(corpus, tmp_path):
    before = plan_stages(spec_with([{"normalize": {}}], corpus), list_inputs([corpus]))
    (tmp_path / "z.jsonl").write_text('{"text": "y"}\n')
    after = plan_stages(spec_with([{"normalize": {}}], corpus), list_inputs([corpus]))
    assert before[0].hash != after[0].hash


def test_run_dir_atomic_writes_and_sweep(tmp_path):
    run = RunDir.open(str(tmp_path / "run"))
    run.write_json("a/b.json", {"x": 1})
    assert run.read_json("a/b.json") == {"x": 1}
    write_parquet_atomic(run.fs, run.path("data", "part-u000001-a0-x.parquet"), pa.table({"x": [1]}))
    (tmp_path / "run" / "data" / ".tmp-dead-part.parquet").write_bytes(b"half")
    assert run.list_files("data", ".parquet") == [run.path("data", "part-u000001-a0-x.parquet")]
    assert run.sweep_temporaries() == 1
    assert run.delete_matching("data", ("part-u000001-",)) == 1
    assert run.list_files("data") == []


def test_listing_survives_symlink_loops(tmp_path):
    """A link to a folder above it lists each file once (not once per up/up/… level); a link that
    resolves to nothing stays listed (size 0) so its reader quarantines it instead of it vanishing."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "real.jsonl").write_text('{"text": "a"}\n')
    (folder / "self.jsonl").symlink_to(folder / "self.jsonl")
    (folder / "up").symlink_to(tmp_path)
    for pattern in (str(folder), str(folder / "*.jsonl"), str(tmp_path / "**" / "*.jsonl")):
        listing = list_inputs([[pattern]])
        assert [(Path(f.location).name, f.size) for f in listing] == [("real.jsonl", 14), ("self.jsonl", 0)], pattern
