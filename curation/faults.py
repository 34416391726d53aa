"""Fault injection for the reliability suite (tests/reliability/): SIGKILL the driver at a named point.

A run started with ``GRISTMILL_KILL_AT=<point>`` (or ``<point>:N``, the N-th time that point is
reached in one process) dies with SIGKILL when it gets there, as a user's Ctrl-\\ or the kernel's
OOM killer would end it: no ``finally``, no atexit, no flush. Rerunning the same command must then
finish with exactly the outputs of an uninterrupted run.

``<point>[:N]:TERM`` sends SIGTERM instead, as a scheduler, ``kill`` or ``timeout`` would: the run must
stop cleanly (exit 143, committed work kept, the embedded Ray shut down; pipelines/interrupt.py) and
the rerun must again match an uninterrupted run.

Points run in the driver (the ``gristmill`` process) or in Ray workers (a training loop). The driver
puts its own pid in ``GRISTMILL_KILL_PID`` and both variables in the job's ``runtime_env``
(:func:`runtime_env_vars`), so a point reached in a worker kills the *driver* and then its own
process: the job goes down with its driver, as it does when a real driver dies. With ``TERM`` the
worker signals the driver and then waits where it is (as a long step would) for the driver's stop to end
it: stopping the workers is the driver's job, and the run cannot race to its end meanwhile.

Unset (every normal run), :func:`fault_point` is one comparison against ``None``.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

KILL_AT_ENV = "GRISTMILL_KILL_AT"
KILL_PID_ENV = "GRISTMILL_KILL_PID"
WORKER_WAIT_S = 300  # a worker that sent SIGTERM waits this long for its driver to stop it

# Read once at import: the variable is fixed for the life of a process (a worker gets it from the
# job's runtime_env before it imports anything of ours).
_TARGET = os.environ.get(KILL_AT_ENV) or None
_hits: Counter = Counter()


def fault_point(name: str) -> None:
    """SIGKILL (or SIGTERM) the driver here when ``GRISTMILL_KILL_AT`` names this point (and this is its N-th hit)."""
    if _TARGET is None:
        return
    point, nth, sig = _parse(_TARGET)
    if name != point:
        return
    _hits[name] += 1
    if _hits[name] != nth:
        return
    me = os.getpid()
    driver = int(os.environ.get(KILL_PID_ENV) or me)
    os.kill(driver, sig)
    if driver == me:
        return
    if sig == signal.SIGKILL:  # a worker: the job is going down with its driver; do not run on into the next step
        os.kill(me, signal.SIGKILL)
    # SIGTERM: stopping this worker is up to the driver now. Wait here as a long step would, so the run
    # cannot finish on its own before the driver's stop reaches it; give up after a while all the same.
    time.sleep(WORKER_WAIT_S)
    os._exit(1)


def _parse(target: str) -> tuple[str, int, int]:
    """``point``, ``point:N``, ``point:TERM``, ``point:N:TERM`` → (point, N, signal)."""
    point, *rest = target.split(":")
    sig = signal.SIGKILL
    if rest and rest[-1].upper() == "TERM":
        sig = signal.SIGTERM
        rest = rest[:-1]
    return point, int(rest[0]) if rest and rest[0] else 1, sig


def runtime_env_vars() -> dict[str, str]:
    """What the driver adds to its job's ``runtime_env["env_vars"]`` so points in workers can reach it."""
    if _TARGET is None:
        return {}
    return {KILL_AT_ENV: _TARGET, KILL_PID_ENV: os.environ.get(KILL_PID_ENV) or str(os.getpid())}
