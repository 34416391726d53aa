"""SIGKILL a Ray worker while it runs a task of the streaming pass: the stage completes through Ray's
task retries, with exactly the documents of an uninterrupted run (none lost, none twice)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.conftest import DATA, GRISTMILL, REPO
from tests.helpers import all_ids, kept_ids, manifest, write_jsonl_corpus

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

SPEC = """\
kind: curate
name: worker-kill
input:
  - {format: jsonl, paths: [docs/*.jsonl]}
steps:
  - normalize: {}
  - length_filter: {min_words: 30}
"""
FILES, DOCS = 16, 3000


def _map_workers(root_pid: int, marker: str) -> list[psutil.Process]:
    """Ray worker processes of this test session's Ray (our descendants) running a task whose
    process title names ``marker`` (Ray titles a busy worker ``ray::<task name>``)."""
    found = []
    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if title.startswith("ray::") and marker in title:
            found.append(proc)
    return found


def test_killed_worker_is_retried_with_the_same_output(gristmill, ray_address, tmp_path):
    words = (DATA / "text" / "tinyshakespeare" / "input.txt").read_text().split()
    write_jsonl_corpus(tmp_path / "docs", FILES, DOCS, words)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    reference = tmp_path / "reference"
    gristmill("run", str(spec), "--out", str(reference), timeout=600)

    run = tmp_path / "killed"
    cmd = [GRISTMILL, "run", str(spec), "--out", str(run), "--address", ray_address, "--set", "ray.ship_code=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    victim, title = None, ""
    deadline = time.time() + 300
    while victim is None and time.time() < deadline and proc.poll() is None:
        for worker in _map_workers(os.getpid(), "read_units"):
            try:
                title = " ".join(worker.cmdline())
                worker.send_signal(signal.SIGKILL)
                victim = worker.pid
                break
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert victim is not None, f"no worker ran read_units while the pass ran\n{err[-3000:]}"
    assert proc.returncode == 0, f"the stage did not survive losing worker {victim} ({title})\n{err[-4000:]}"

    ids = kept_ids(run)
    assert len(ids) == len(set(ids)), f"documents written twice after the worker ({title}) was killed"
    assert sorted(ids) == sorted(kept_ids(reference))
    everything = all_ids(run)
    assert len(everything) == len(set(everything)) == FILES * DOCS
    assert manifest(run)["totals"] == manifest(reference)["totals"]
