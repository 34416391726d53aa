"""Kill a run mid-pass with SIGKILL, run it again, and compare with an uninterrupted run: the same
doc_ids in data/, none duplicated, none missing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import DATA, GRISTMILL, REPO
from tests.helpers import all_ids, kept_ids, manifest, write_jsonl_corpus

pytestmark = pytest.mark.e2e

SPEC = """\
kind: curate
name: resume
input:
  - {format: jsonl, paths: [docs/*.jsonl]}
steps:
  - normalize: {}
  - length_filter: {min_words: 30}
"""
FILES, DOCS = 24, 1500


def test_sigkill_mid_pass_then_resume_matches_uninterrupted(gristmill, ray_address, tmp_path):
    words = (DATA / "text" / "tinyshakespeare" / "input.txt").read_text().split()
    write_jsonl_corpus(tmp_path / "docs", FILES, DOCS, words)
    spec = tmp_path / "resume.yaml"
    spec.write_text(SPEC)

    # The uninterrupted reference runs side by side with the run that gets killed (two jobs on the
    # session's Ray, as test_report's runs): a small run leaves the 2 CPUs idle much of its wall
    # time, and sharing them only makes the killed run slower, so the kill lands mid-pass all the same.
    reference = tmp_path / "reference"
    pool = ThreadPoolExecutor(1)
    reference_run = pool.submit(gristmill, "run", str(spec), "--out", str(reference))

    run = tmp_path / "killed"
    progress = run / "_progress" / "01-stream"
    cmd = [GRISTMILL, "run", str(spec), "--out", str(run), "--address", ray_address, "--set", "ray.ship_code=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        committed = len(list(progress.glob("u*.json"))) if progress.exists() else 0
        if committed >= 2:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reference_run.result()
    pool.shutdown()
    assert 2 <= committed < FILES, f"the kill should land mid-pass (committed {committed} of {FILES})"
    assert manifest(run)["status"] == "running"

    resumed = gristmill("run", str(spec), "--out", str(run))
    assert "resuming" in resumed.stderr

    ids = kept_ids(run)
    assert len(ids) == len(set(ids)), "no document duplicated"
    assert sorted(ids) == sorted(kept_ids(reference)), "same kept set as the uninterrupted run"
    everything = all_ids(run)
    assert len(everything) == len(set(everything)) == FILES * DOCS, "none missing, none twice"
    assert manifest(run)["totals"] == manifest(reference)["totals"]
    assert not list(run.rglob("*.tmp-*")), "no half-written files left"
