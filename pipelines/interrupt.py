"""Ctrl-C and SIGTERM: one clean way out of ``gristmill run``.

SIGTERM is what schedulers, ``kill``, ``timeout`` and cluster tooling send. Left to Ray, it ends the
driver mid-step: ``ray.init`` replaces Python's handler with ``sys.exit(15)``, Ray's C++ core adds a
failure-signal handler that prints ``*** SIGTERM received ...`` with a native stack dump first, and a
pretraining run then exits 1 or aborts (SIGABRT); Ray Train installs its own SIGINT handler during
``fit``, which left an interrupted training run exiting 1 without a word. Here both signals raise
``KeyboardInterrupt`` in the main thread wherever the driver is (in a ``ray.get``, a Ray Data
iterator, between two writes), so every kind of run leaves the way Ctrl-C always left a curate run:
the stage stops where it is, nothing unfinished is marked done, the embedded Ray is shut down, and the
CLI says ``interrupted`` and exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM).

A second signal while the command cleans up (:func:`stopping`) or inside :func:`shielded` (the Ray
shutdown) is noted and ignored, so shutdown is never cut short into a traceback or stray processes;
SIGKILL remains for a hard stop. Before the CLI has reached its cleanup (the first interrupt is still
unwinding, or a library swallowed it), a further signal raises again.

The handlers are Python-level: they must be installed again after anything that replaces them
(:func:`install` after ``ray.init``, which also drops the native handler Ray's core added).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None  # the first signal of this process, if any
_stopping = False  # the CLI caught the interrupt and is cleaning up
_shield = 0  # inside shielded(): a signal is recorded, raised when the block ends
_pending = False  # a signal arrived inside shielded()
_noted = False
_installed = False
_atexit_registered = False


def install() -> None:
    """Route SIGINT and SIGTERM to :func:`_handler` (only possible on the main thread)."""
    global _installed, _atexit_registered
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    if not _atexit_registered:
        atexit.register(_ignore_while_exiting)
        _atexit_registered = True
    _installed = True


def _ignore_while_exiting() -> None:
    """Interpreter shutdown puts SIG_DFL back for every Python handler (after the atexit callbacks, Ray's
    shutdown among them), so a SIGTERM in the last moments would kill the process and lose its exit code
    and output; an ignored signal stays ignored. Registered after ``ray`` is imported, so it runs first."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def reinstall() -> None:
    """Install the handlers again if :func:`install` did before (after ``ray.init`` replaced them); a
    program that never asked for them (a test session, a benchmark) keeps its own."""
    if _installed:
        install()


def active() -> bool:
    """Whether this process routes SIGINT and SIGTERM through here (``gristmill run`` does)."""
    return _installed


def record(signum: int) -> None:
    """Note a signal that reached the process another way (Ray's handler during ``ray.init``)."""
    global _received
    if _received is None:
        _received = signum


def _handler(signum: int, frame: object) -> None:
    global _received, _pending, _noted
    if _received is None:
        _received = signum
    if _stopping or _shield:
        _pending = _pending or not _stopping
        if not _noted:
            _noted = True
            name = signal.Signals(signum).name
            os.write(2, f"\n{name}: already stopping (shutting down Ray); further signals are ignored, "
                        "SIGKILL stops at once\n".encode())
        return
    raise KeyboardInterrupt


def received() -> int | None:
    """The signal that interrupted this process (SIGINT or SIGTERM), None when none did."""
    return _received


def stopping() -> None:
    """The command caught the interrupt and is cleaning up: ignore further signals from now on."""
    global _stopping
    _stopping = True


def exit_code() -> int:
    """128 + the signal number: 130 for Ctrl-C (also when Python's own handler raised it), 143 for SIGTERM."""
    return 128 + (_received or signal.SIGINT)


def describe() -> str:
    """``interrupted`` for Ctrl-C, ``interrupted (SIGTERM)`` for SIGTERM."""
    return "interrupted" if _received in (None, signal.SIGINT) else f"interrupted ({signal.Signals(_received).name})"


@contextmanager
def shielded() -> Iterator[None]:
    """Let the block finish (a Ray shutdown): a signal arriving inside is raised when it ends, unless the
    command is already stopping."""
    global _shield, _pending
    _shield += 1
    try:
        yield
    finally:
        _shield -= 1
    if not _shield and _pending:
        _pending = False
        if not _stopping:
            raise KeyboardInterrupt


def _reset_for_tests() -> None:
    global _received, _stopping, _shield, _pending, _noted, _installed
    _received, _stopping, _shield, _pending, _noted, _installed = None, False, 0, False, False, False
