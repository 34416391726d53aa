"""The disk fills up in the middle of a run: the run stops with exit 1 and one line saying the disk is
full and which file it could not write (no traceback), nothing half-written is left, and the rerun
after space is freed resumes and ends with exactly the output of an uninterrupted run.

The run directory is on a 64 MB tmpfs that a ballast file (another program's data) fills to 6 MB of
free space; the streaming pass writes ~13 MB of uncompressed Parquet from Ray workers (~1.6 MB per
input file, two files at a time), so the first files are committed and a later worker's write fails
with ENOSPC. Mounting needs root (CI runs as root); elsewhere the test is skipped. Refusing
a read-only or full location before anything starts is tested in tests/test_storage_errors.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.helpers import all_ids, kept_ids, manifest, rejected_tables, write_jsonl_corpus
from tests.mounts import fill, tmpfs
from tests.reliability.chain import cli, must

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

SPEC = """\
kind: curate
name: disk-full
input:
  - {format: jsonl, paths: [docs/*.jsonl]}
steps:
  - normalize: {}
  - length_filter: {min_words: 30}
output: {compression: none}
"""


def outcome(run: Path) -> dict:
    rejected = {step: sorted(zip(t.column("doc_id").to_pylist(), t.column("reason").to_pylist()))
                for step, t in rejected_tables(run).items()}
    return {"kept": sorted(kept_ids(run)), "rejected": rejected, "totals": manifest(run)["totals"]}


def test_disk_full_mid_run_fails_in_one_line_then_rerun_after_freeing_space_resumes(tmp_path, ray_address):
    words = (DATA / "text" / "moby-dick" / "chapter_1.txt").read_text().split() * 5
    write_jsonl_corpus(tmp_path / "docs", 8, 4000, words)  # 13 MB of JSONL, 32,000 documents
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    must(cli(spec, tmp_path / "ref", ray_address))
    expected = outcome(tmp_path / "ref")

    with tmpfs(tmp_path / "disk", size="64m") as disk:
        ballast = fill(disk, 6 << 20)
        run = disk / "run"
        failed = cli(spec, run, ray_address)
        assert failed.returncode == 1, f"exit {failed.returncode}\n{failed.stderr[-4000:]}"
        assert "Traceback" not in failed.stderr and "ERROR" not in failed.stderr, failed.stderr[-4000:]
        lines = [line for line in failed.stderr.splitlines() if line.strip() and not line.startswith("note:")]
        assert len(lines) == 1, failed.stderr[-4000:]
        match = re.fullmatch(r"run failed: disk full: could not write (\S+) \(No space left on device\); free space "
                             r"on that file system and rerun the same command to resume \(committed work is kept\)",
                             lines[0])
        assert match, lines[0]
        assert match.group(1).startswith(f"{run}/"), "the file it could not write, inside the run directory"
        assert not Path(match.group(1)).exists(), "the file that failed is not there half-written"
        assert manifest(run)["status"] != "done"
        assert not [p for p in run.rglob("*") if ".tmp-" in p.name], "no half-written temporary left"

        ballast.unlink()  # space freed
        resumed = must(cli(spec, run, ray_address))
        assert "01-stream: resuming" in resumed.stderr, "the files committed before the disk filled were kept"
        assert manifest(run)["status"] == "done"
        assert outcome(run) == expected, "the rerun differs from an uninterrupted run"
        ids = all_ids(run)
        assert len(ids) == len(set(ids)) == expected["totals"]["read"], "every input document exactly once"
