"""One run at a time per run directory: a second `gristmill run` into a directory a live run holds is
refused at once (exit 2) naming the holder, `--fresh` included, and a SIGKILLed holder blocks nobody.
The holder is another process taking the lock through the project's own code; no Ray starts (the
refusal comes first, and `connect` is made to fail the test if it is ever reached)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.rundir import LOCK_FILE, RunDir, RunDirBusy
from tests.conftest import REPO

HOLDER = """\
import sys, time
from pipelines.rundir import RunDir
lock = RunDir.open(sys.argv[1]).hold("gristmill run holder.yaml --out somewhere")
print("held", flush=True)
time.sleep(300)
"""


@pytest.fixture
def spec(tmp_path):
    (tmp_path / "doc.txt").write_text("a small document " * 20)
    path = tmp_path / "tiny.yaml"
    path.write_text("kind: curate\nname: tiny\ninput:\n  - {format: text, paths: [doc.txt]}\nsteps:\n  - normalize\n")
    return path


@pytest.fixture
def no_ray(monkeypatch):
    def connect(*args, **kwargs):
        raise AssertionError("Ray was started: the lock did not refuse the run")

    monkeypatch.setattr("pipelines.ray_session.connect", connect)


@pytest.fixture
def holder(tmp_path):
    """A live process holding tmp_path/run; yields (process, run directory)."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "held", "the holder could not take the lock"
        yield proc, run
    finally:
        proc.kill()
        proc.wait()


def run_cli(*args: str):
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["run", *args])
    return result, time.perf_counter() - started


def test_second_run_is_refused_naming_the_holder(holder, spec, no_ray):
    proc, run = holder
    result, seconds = run_cli(str(spec), "--out", str(run))
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"run directory in use: {run} is in use by another run (pid {proc.pid} on {socket.gethostname()}, " \
           "started " in message, message
    assert "command: gristmill run holder.yaml --out somewhere)" in message
    assert not (run / "spec.yaml").exists(), "nothing of the second run was written"
    assert seconds < 5, f"refused after {seconds:.1f}s"


def test_fresh_does_not_delete_a_held_directory(holder, spec, no_ray):
    proc, run = holder
    (run / "data").mkdir()
    (run / "data" / "part-0.parquet").write_bytes(b"the holder's output")
    result, _ = run_cli(str(spec), "--out", str(run), "--fresh")
    assert result.exit_code == 2 and f"pid {proc.pid}" in result.output, result.output
    assert (run / "data" / "part-0.parquet").read_bytes() == b"the holder's output"


def test_a_killed_holder_blocks_nobody(holder):
    proc, run = holder
    with pytest.raises(RunDirBusy):
        RunDir.open(str(run)).hold()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with RunDir.open(str(run)).hold("the next run"):  # the kernel dropped the dead holder's lock
        assert f'"pid": {os.getpid()}' in (run / LOCK_FILE).read_text()
    assert (run / LOCK_FILE).read_text() == "", "a released lock names no holder"


def test_fresh_clear_keeps_the_lock_it_holds(tmp_path):
    run = RunDir.open(str(tmp_path / "run"))
    with run.hold():
        run.write_bytes("data/part-0.parquet", b"old")
        run.write_bytes("manifest.json", b"{}")
        run.clear()
        assert os.listdir(run.root) == [LOCK_FILE]
        with pytest.raises(RunDirBusy, match="in use by another run"):
            run.hold()  # still held: another open of the same file is another lock (flock semantics)
    run.hold().release()  # and free once left


def test_object_store_run_directories_are_not_locked(tmp_path):
    import pyarrow.fs as pafs

    remote = RunDir("s3://bucket/runs/x", pafs.LocalFileSystem(), str(tmp_path / "x"))
    with remote.hold(), remote.hold():
        assert not (tmp_path / "x").exists(), "nothing is written for the lock"
