"""Read-only, unwritable and full output locations: `gristmill run` refuses them before Ray starts (exit 2)
with one line naming the path, and a write that fails on a full disk names its file and leaves no
temporary behind. The disk filling up in the middle of a run (exit 1, rerun resumes) is in
tests/reliability/test_disk_full.py.

Root (CI) mounts small tmpfs file systems for this (tests/mounts.py); an unprivileged user gets a
folder without write permission instead, and the full-disk cases are skipped."""

from __future__ import annotations

import errno
import os
import subprocess

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from pipelines.errors import storage_problem
from pipelines.rundir import write_atomic, write_parquet_atomic
from tests.conftest import GRISTMILL, REPO
from tests.mounts import can_mount, fill, tmpfs

SPEC = "kind: curate\nname: tiny\ninput:\n  - {format: text, paths: [doc.txt]}\nsteps:\n  - normalize\n"


@pytest.fixture
def spec(tmp_path):
    (tmp_path / "doc.txt").write_text("a small document " * 20)
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def gristmill_run(spec, out) -> subprocess.CompletedProcess:
    """`gristmill run` with RAY_ADDRESS pointing nowhere: had it got as far as Ray, it would exit 1
    with "cannot reach Ray" instead of the refusal these tests expect."""
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9", "COLUMNS": "200"}
    return subprocess.run([GRISTMILL, "run", str(spec), "--out", str(out)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def refusal(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "cannot reach Ray" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot write: a read-only tmpfs as root, a mode-555 folder otherwise.
    Yields (folder, the reason the message gives)."""
    folder = tmp_path / "locked"
    if can_mount() is None:
        with tmpfs(folder, size="1m", readonly=True):
            yield folder, "read-only file system"
        return
    folder.mkdir()
    folder.chmod(0o555)
    try:
        yield folder, "permission denied"
    finally:
        folder.chmod(0o755)


def test_run_directory_under_a_read_only_parent_is_refused_before_ray(spec, unwritable):
    folder, reason = unwritable
    out = folder / "run"
    line = refusal(gristmill_run(spec, out))
    assert line == (f"cannot write the run directory {out}: {reason}: could not write {out}; "
                    + ("make that file system writable, or give --out another location" if reason.startswith("read")
                       else "make it writable for this user, or give --out another location")), line
    assert not out.exists()


def test_read_only_run_directory_is_refused_before_ray(spec, unwritable):
    folder, reason = unwritable  # the run directory itself exists and cannot be written
    line = refusal(gristmill_run(spec, folder))
    assert line.startswith(f"cannot write the run directory {folder}: {reason}: could not write {folder}/_run.lock"), line


def test_full_disk_before_the_run_is_refused_before_ray(spec, tmp_path):
    with tmpfs(tmp_path / "full", size="1m") as mount:
        fill(mount, 0)
        line = refusal(gristmill_run(spec, mount / "run"))
    assert line.startswith(f"cannot write the run directory {mount / 'run'}: disk full: could not write "
                           f"{mount / 'run'}/"), line
    assert line.endswith("(No space left on device); free space on that file system"), line


def test_a_write_on_a_full_disk_names_its_file_and_leaves_no_temporary(tmp_path):
    with tmpfs(tmp_path / "small", size="1m") as mount:
        fs = pafs.LocalFileSystem()
        with pytest.raises(OSError) as raised:
            write_atomic(fs, str(mount / "run" / "manifest.json"), b"x" * (2 << 20))
        assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(mount / "run" / "manifest.json")
        table = pa.table({"text": [os.urandom(2048).hex() for _ in range(512)]})  # 2 MB, no repeats
        with pytest.raises(OSError) as raised:
            write_parquet_atomic(fs, str(mount / "run" / "data" / "part-0.parquet"), table, "none")
        assert raised.value.errno == errno.ENOSPC
        assert raised.value.filename == str(mount / "run" / "data" / "part-0.parquet")
        assert [p.name for p in mount.rglob("*") if p.is_file()] == [], "the half-written temporaries are gone"


def test_storage_problem_reads_errors_from_ray_workers_and_arrow():
    from ray.exceptions import RayTaskError

    path = "/runs/x/data/part-u000003-abcd.parquet"
    # what write_parquet_atomic raises in a worker reaches the driver as a RayTaskError, its traceback as text,
    # after Arrow's own message, which names no file
    remote = ("Traceback (most recent call last):\n  File \"/work/pipelines/rundir.py\", line 1, in w\n"
              "OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device\n\n"
              "The above exception was the direct cause of the following exception:\n\n"
              f"OSError: [Errno 28] No space left on device: '{path}'\n")
    error = RayTaskError("MapBatches(write_outputs)", remote, ValueError("UDF failed")).as_instanceof_cause()
    problem = storage_problem(error, "/runs/x")
    assert (problem.code, problem.path) == (errno.ENOSPC, path)
    assert problem.describe("/runs/x") == f"disk full: could not write {path} (No space left on device)"

    arrow = OSError(errno.EROFS, "Cannot create directory '/mnt/ro/run'. Detail: [errno 30] Read-only file system")
    assert storage_problem(arrow).describe("/mnt/ro/run") == "read-only file system: could not write /mnt/ro/run"
    nameless = RuntimeError("training failed: OSError: [Errno 122] Disk quota exceeded; rerun the same command")
    assert storage_problem(nameless).describe("/runs/x") == \
        "disk quota exceeded: a write failed without naming its file; the run directory is /runs/x"
    # a temporary's name is reported as the file it was becoming
    tmp = OSError(errno.ENOSPC, "No space left on device", "/runs/x/.tmp-0a1b2c3d-manifest.json")
    assert storage_problem(tmp).path == "/runs/x/manifest.json"


def test_permission_denied_counts_only_inside_the_run_directory():
    inside = PermissionError(errno.EACCES, "Permission denied", "/runs/x/data/part-0.parquet")
    outside = PermissionError(errno.EACCES, "Permission denied", "/data/corpus/part-0.jsonl")  # an input
    assert storage_problem(inside, "/runs/x").describe("/runs/x") == \
        "permission denied: could not write /runs/x/data/part-0.parquet"
    assert storage_problem(outside, "/runs/x") is None
    assert storage_problem(FileNotFoundError(errno.ENOENT, "No such file", "/runs/x/a")) is None
    assert storage_problem(ValueError("nothing to do with disks")) is None
