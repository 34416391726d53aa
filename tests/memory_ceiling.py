"""Run a function in a fresh process under a memory ceiling that fails fast.

A test of bounded memory must not find a regression by swapping the machine: the child's peak
resident set (VmHWM, which also catches a spike between two looks) is watched every few
milliseconds and the child is killed as soon as it passes the ceiling. RLIMIT_AS cannot stand in:
Arrow and NumPy reserve far more address space than they touch.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any, Callable

POLL_S = 0.005


def _peak_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _child(conn: Any, func: Callable[..., Any], args: tuple) -> None:
    try:
        result = func(*args)
        conn.send(("ok", result, _peak_mib_self()))
    except BaseException as exc:  # reported to the parent, which fails the test with it
        conn.send(("error", f"{type(exc).__name__}: {exc}", _peak_mib_self()))
    finally:
        conn.close()


def _peak_mib_self() -> float | None:
    import os

    return _peak_mib(os.getpid())


def run_bounded(func: Callable[..., Any], *args: Any, ceiling_mib: float, timeout_s: float = 300) -> tuple[Any, float]:
    """``func(*args)`` in a spawned process (a clean interpreter: only what ``func`` imports counts);
    returns its result and the child's peak RSS in MiB. Fails the test when the peak passes
    ``ceiling_mib`` (the child is killed at once), on a time-out, or when ``func`` raises."""
    ctx = mp.get_context("spawn")
    parent, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child_end, func, args), daemon=True)
    proc.start()
    child_end.close()
    deadline = time.monotonic() + timeout_s
    peak = 0.0
    try:
        while True:
            seen = _peak_mib(proc.pid)
            peak = max(peak, seen or 0.0)
            if peak > ceiling_mib:
                raise AssertionError(f"peak RSS {peak:.0f} MiB passed the {ceiling_mib:.0f} MiB ceiling")
            if parent.poll(POLL_S):
                status, value, child_peak = parent.recv()
                peak = max(peak, child_peak or 0.0)
                if peak > ceiling_mib:
                    raise AssertionError(f"peak RSS {peak:.0f} MiB passed the {ceiling_mib:.0f} MiB ceiling")
                if status != "ok":
                    raise AssertionError(f"the bounded function failed: {value}")
                return value, peak
            if not proc.is_alive():
                raise AssertionError(f"the bounded process died (exit code {proc.exitcode})")
            if time.monotonic() > deadline:
                raise AssertionError(f"the bounded function ran over {timeout_s:.0f} s")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)


def run_command_bounded(cmd: list[str], *, ceiling_mib: float, timeout_s: float = 600,
                        **popen: Any) -> tuple[Any, float]:
    """Run a command (e.g. `gristmill run` with its own embedded Ray) and watch the resident memory of
    its whole process tree, the Ray raylet and workers included: the sum over the tree, sampled
    every few milliseconds. The tree is killed as soon as the sum passes ``ceiling_mib``. Returns the
    ``subprocess.CompletedProcess`` and the largest sum seen."""
    import subprocess

    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout_s
    peak = 0.0
    try:
        while proc.poll() is None:
            total = 0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in tree:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak = max(peak, total / (1 << 20))
            if peak > ceiling_mib:
                raise AssertionError(f"the process tree's resident memory reached {peak:.0f} MiB, over the "
                                     f"{ceiling_mib:.0f} MiB ceiling")
            if time.monotonic() > deadline:
                raise AssertionError(f"{cmd[:3]} ran over {timeout_s:.0f} s")
            time.sleep(0.02)
        out, err = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err), peak
    finally:
        if proc.poll() is None:
            for p in [*root.children(recursive=True), root]:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            proc.wait(30)
