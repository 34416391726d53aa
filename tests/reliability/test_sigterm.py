"""SIGTERM, what schedulers, `kill`, `timeout` and cluster tooling send, stops a run cleanly, and the rerun
equals an uninterrupted run.

Beside the SIGKILL chains of test_kill_points.py: a curate run (the chain's spec: normalize, length
filter, exact + MinHash dedup, tokenize) gets SIGTERM from outside once its streaming pass has
committed a file, on an embedded Ray, then from a kill point inside the MinHash dedup
(``GRISTMILL_KILL_AT=<point>:TERM``, :mod:`curation.faults`), and is rerun unarmed; a pretraining run
gets it from inside a Ray Train worker (the driver waits in Ray Train's ``fit``), and is rerun. Each
stop must exit 143 with ``interrupted (SIGTERM): rerun the same command to resume`` and nothing else
alarming on the console (no Python traceback, no ``*** SIGTERM received`` native stack dump, no
``Fatal Python error``), leave the run unfinished, and leave no process behind: the embedded Ray's
raylet and workers, or Ray Train's controller and workers on the shared Ray. The reruns must give the
reference outcome (kept and rejected ids, tokenizer, shards; the loss curve).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import GRISTMILL, REPO
from tests.helpers import all_ids, manifest
from tests.reliability.chain import cli, curate_outcome, loss_curve, must, write_specs

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

STOPPED = "interrupted (SIGTERM): rerun the same command to resume"
# a Python traceback, Ray's native stack dump, a crash, an error raised in a finalizer, an ERROR log line
ALARMS = ("Traceback", "SIGTERM received", "Fatal Python error", "Exception ignored", "ERROR ")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_address):
    """Uninterrupted curate → pretrain, run once for the module on the test session's Ray."""
    folder = tmp_path_factory.mktemp("sigterm")
    specs = write_specs(folder)
    ref = folder / "ref"
    for kind in ("curate", "pretrain"):
        must(cli(specs[kind], ref / kind, ray_address))
    return {"specs": specs, "curate": curate_outcome(ref / "curate"), "pretrain": loss_curve(ref / "pretrain")}


def assert_stopped_cleanly(proc_rc: int, stderr: str, run: Path) -> None:
    assert proc_rc == 128 + signal.SIGTERM, f"exit {proc_rc}\n{stderr[-6000:]}"
    assert STOPPED in stderr, stderr[-4000:]
    # Lines a Ray actor printed carry its name; PlacementGroupCleaner (Ray Train's) prints a ConnectionError
    # traceback whenever more than one Ray instance runs on the machine (a Ray quirk unrelated to signals).
    own = [line for line in stderr.splitlines() if "PlacementGroupCleaner" not in line]
    alarming = [line for line in own if any(a in line for a in ALARMS)]
    assert not alarming, "\n".join(own[-80:])
    assert manifest(run)["status"] != "done", "stopped, yet the run says done"


def wait_gone(pids: dict[int, str], seconds: float = 30) -> dict[int, str]:
    """The processes of ``pids`` (pid → command line) still alive after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        alive = {pid: cmd for pid, cmd in pids.items() if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def test_sigterm_stops_curate_cleanly_then_rerun_equals_uninterrupted(reference, ray_address, tmp_path):
    run = tmp_path / "curate"
    spec = reference["specs"]["curate"]

    # 1. SIGTERM from outside, once the streaming pass has committed a file, on an embedded Ray
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    for name in ("RAY_ADDRESS", "GRISTMILL_KILL_AT", "GRISTMILL_KILL_PID"):
        env.pop(name, None)
    proc = subprocess.Popen([GRISTMILL, "run", str(spec), "--out", str(run), "--set", "ray.num_cpus=2"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    family: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 300
        while not list((run / "_progress" / "01-stream").glob("u*.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "no file committed"
            time.sleep(0.05)
        for child in psutil.Process(proc.pid).children(recursive=True):  # raylet, GCS, workers …
            try:
                family[child.pid] = " ".join(child.cmdline())[:160]
            except psutil.Error:
                pass
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_stopped_cleanly(proc.returncode, stderr, run)
    assert any("raylet" in cmd for cmd in family.values()), family
    left = wait_gone(family)
    assert not left, f"the embedded Ray left processes behind: {left}"
    committed = sorted(p.name for p in (run / "_progress" / "01-stream").glob("u*.json"))
    assert committed, "committed work is kept"

    # 2. SIGTERM from a kill point inside the MinHash LSH round (the driver; the test session's Ray)
    stopped = cli(spec, run, ray_address, kill_at="dedup.03-minhash_dedup.lsh-000.written:TERM")
    assert_stopped_cleanly(stopped.returncode, stopped.stderr, run)
    assert "01-stream: resuming" in stopped.stderr, "the files committed before the first stop were kept"

    resumed = must(cli(spec, run, ray_address))
    assert manifest(run)["status"] == "done", resumed.stderr[-2000:]
    got, expected = curate_outcome(run), reference["curate"]
    for key in ("kept", "rejected", "totals", "tokenizer", "shard_manifest", "shards"):
        assert got[key] == expected[key], f"{key} differs from the uninterrupted run"
    ids = all_ids(run)
    assert len(ids) == len(set(ids)) == got["totals"]["read"], "every input document exactly once"
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name], "no half-written file left"


def _train_actors() -> dict[int, str]:
    """Ray Train's controller and worker processes on the test session's Ray (descendants of this process)."""
    found = {}
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if title.startswith(("ray::TrainController", "ray::RayTrainWorker")):
            found[child.pid] = title[:120]
    return found


def test_sigterm_mid_pretraining_stops_its_workers_then_rerun_equals_uninterrupted(reference, ray_address, tmp_path):
    run = tmp_path / "pretrain"
    spec = reference["specs"]["pretrain"]
    before = _train_actors()
    stopped = cli(spec, run, ray_address, kill_at="train.step:6:TERM")  # sent by the worker, at step 6 of 12
    assert_stopped_cleanly(stopped.returncode, stopped.stderr, run)
    deadline = time.monotonic() + 60
    while (left := {p: t for p, t in _train_actors().items() if p not in before}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray Train's controller or workers outlived their driver: {left}"

    resumed = must(cli(spec, run, ray_address))
    assert "resuming from" in resumed.stderr and "step-000004" in resumed.stderr, resumed.stderr[-2000:]
    assert loss_curve(run) == reference["pretrain"], "the loss curve differs from the uninterrupted run"
