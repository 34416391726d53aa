"""Run a function on untrusted input in a persistent child process that may be killed at any time.

Parsers of hostile input (HTML, PDF) can hang, blow up memory or crash in C code. None of that may
take down the Ray worker that called them, so :class:`ProcessSandbox` keeps one child Python process
per owner and feeds it requests over a pipe, a batch at a time (:meth:`ProcessSandbox.call_many`: one
message out, one reply per request back, so the child never waits for the parent between requests):

* **Per-request wall-clock timeout**, enforced by the parent with ``select``: each reply must come
  within ``timeout_s`` of the one before it (of the batch being sent, for the first). On expiry the
  child is SIGKILLed, that request is reported as timed out and the rest of the batch goes to a fresh
  child. Signals (``SIGALRM``) are not used:
  they only fire between Python bytecodes, never inside a C parser, and only in the main thread.
* **Memory guard**: the child sets ``RLIMIT_AS``, so a runaway allocation fails inside the child
  (``MemoryError``, or a crash) instead of inviting the OOM killer into the worker. After a
  ``MemoryError`` the child is replaced, as its C libraries may be left in a bad state.
* **A crash** (segfault, SIGKILL by anyone) shows up as end-of-file on the pipe: reported as a
  ``CRASH`` outcome for the request being worked on, and the rest go to a fresh child.
* **No orphans**: the parent kills its child when the sandbox is closed, garbage collected or the
  interpreter exits (``weakref.finalize``); a child whose parent died without cleaning up (SIGKILL)
  sees end-of-file on its request pipe or, if busy, a changed parent pid within a second, and exits.

The child is a fresh interpreter (``subprocess``, fork + exec), not a ``fork`` of the parent: Ray
workers are multi-threaded, and forking a threaded process can deadlock the child on a lock some
other thread held. It imports the work function by name, with the parent's ``sys.path``, and signals
readiness before the first request, so start-up time never counts against a request's timeout.

Messages are length-prefixed pickles on dedicated pipes (the child's stdout is redirected to stderr,
so a library that prints cannot corrupt the protocol). Unpickling the child's replies grants the child
nothing new: it is our own code running as the same user.

Prior art: datatrove's ``ExtractorSandbox`` (a forked process per extractor, timeouts via a pipe);
this differs in exec-ing a fresh interpreter, guarding memory, and separating protocol from stdout.
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable, NamedTuple

_HEADER = struct.Struct("<Q")
OK, ERROR, TIMEOUT, CRASH = "ok", "error", "timeout", "crash"  # Outcome.status
_EXIT_OUT_OF_MEMORY = 3  # the child ran out of its address space outside the work function
_BOOT = "from curation.sandbox import _child_main; _child_main()"


class Outcome(NamedTuple):
    """One request's result: ``status`` OK with the work function's return ``value``, or ERROR,
    TIMEOUT or CRASH with a message; ``seconds`` from the reply before it (or from sending the batch,
    for the first) to its own reply: the request's wall time in the child, pipe included."""

    status: str
    value: Any
    seconds: float


class ProcessSandbox:
    """A persistent child process running ``factory(config)`` (a ``"module:function"`` returning a
    one-argument callable) on requests, one after the other. Thread-safe; started lazily or by :meth:`start`.

    ``memory_mb`` caps the child's address space (None: no cap). ``start_timeout_s`` bounds the
    child's start-up (imports, warm-up), which is not charged to any request.
    """

    def __init__(self, factory: str, config: Any = None, memory_mb: int | None = None,
                 start_timeout_s: float = 60.0):
        self.factory, self.config, self.memory_mb = factory, config, memory_mb
        self.start_timeout_s = start_timeout_s
        self.restarts = 0  # children replaced after a timeout, crash or memory error
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()

    # A copy (e.g. an op pickled to another Ray worker) starts its own child.
    def __getstate__(self) -> dict:
        return {"factory": self.factory, "config": self.config, "memory_mb": self.memory_mb,
                "start_timeout_s": self.start_timeout_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        with self._lock:
            self._ensure_started()

    def call_many(self, requests: list[Any], timeout_s: float) -> list[Outcome]:
        """Run the work function on each request, in order, with ``timeout_s`` per request; return one
        :class:`Outcome` per request.

        The batch goes to the child as one message and the child answers each request as it finishes
        it, so per-request costs are one pickle each way, not a round trip. Keep a batch to a few MB:
        the child holds the whole message while it works through it."""
        results: list[Outcome] = []
        with self._lock:
            while len(results) < len(requests):
                results += self._run_batch(requests[len(results):], timeout_s)
        return results

    def _run_batch(self, requests: list[Any], timeout_s: float) -> list[Outcome]:
        """Send ``requests`` to the child and collect replies until all are in or one fails the child
        (timeout, crash, memory); that one's outcome ends the list, and the caller resends the rest."""
        proc = self._ensure_started()
        results: list[Outcome] = []
        last = time.perf_counter()

        def add(status: str, value: Any) -> None:
            nonlocal last
            now = time.perf_counter()
            results.append(Outcome(status, value, now - last))
            last = now

        try:
            _write_frame(proc.stdin.fileno(), pickle.dumps(requests, protocol=5), time.monotonic() + timeout_s)
            while len(results) < len(requests):
                status, value = pickle.loads(_read_frame(proc.stdout.fileno(), time.monotonic() + timeout_s))
                if status == "fatal":  # MemoryError: the child's libraries may be in a bad state
                    self._kill(restart=True)
                    add(ERROR, value)
                    break
                add(OK if status == "ok" else ERROR, value)
        except TimeoutError:
            self._kill(restart=True)
            add(TIMEOUT, f"no result within {timeout_s:g} s; child process killed")
        except (EOFError, OSError):
            add(CRASH, f"child process died ({self._kill(restart=True, grace_s=2.0)})")
        return results

    def close(self) -> None:
        with self._lock:
            self._kill()

    # ------------------------------------------------------------------------------------- internals

    def _ensure_started(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:  # died while idle (killed from outside)
            self._kill(restart=True)
        env = dict(os.environ)
        # The parent's import path, so the child finds `curation` wherever Ray unpacked it.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        proc = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=env, close_fds=True)
        self._proc = proc
        self._finalizer = weakref.finalize(self, _terminate, proc)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            _write_frame(proc.stdin.fileno(), pickle.dumps(
                (self.factory, self.config, self.memory_mb, os.getpid()), protocol=5), deadline)
            status, value = pickle.loads(_read_frame(proc.stdout.fileno(), deadline))
        except (TimeoutError, EOFError, OSError) as error:
            how = self._kill()
            raise RuntimeError(f"sandbox child for {self.factory} did not start ({type(error).__name__}, {how})") from None
        if status != "ready":
            self._kill()
            raise RuntimeError(f"sandbox child for {self.factory} failed to start: {value}")
        return proc

    def _kill(self, restart: bool = False, grace_s: float = 0.0) -> str:
        """Kill and reap the child; describe how it ended. ``grace_s``: time for a child that is
        already dying (we saw end-of-file) to finish, so its own exit status is reported."""
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is None:
            return "not running"
        try:
            already = proc.wait(timeout=grace_s) if grace_s else proc.poll()
        except subprocess.TimeoutExpired:
            already = None
        _terminate(proc)
        self.restarts += restart
        if already is None:
            return "killed"
        if already == _EXIT_OUT_OF_MEMORY:
            return "memory limit reached"
        if already < 0:
            try:
                return f"signal {signal.Signals(-already).name}"
            except ValueError:
                return f"signal {-already}"
        return f"exit code {already}"


def _terminate(proc: subprocess.Popen) -> None:
    """SIGKILL and reap; safe to call twice, at interpreter exit, or on a dead process."""
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # unkillable (D state); nothing more we can do
        pass


def _wait(fd: int, write: bool, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    ready = select.select([], [fd], [], left) if write else select.select([fd], [], [], left)
    if not (ready[1] if write else ready[0]):
        raise TimeoutError


def _write_frame(fd: int, payload: bytes, deadline: float) -> None:
    os.set_blocking(fd, False)
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    while view:
        _wait(fd, True, deadline)
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    chunks, left = [], n
    while left:
        _wait(fd, False, deadline)
        try:
            chunk = os.read(fd, min(left, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float) -> bytes:
    os.set_blocking(fd, False)
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return _read_exact(fd, size, deadline)


# ------------------------------------------------------------------------------------------- child


def _child_read(stream) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError
    return pickle.loads(payload)


def _child_write(stream, message: Any) -> None:
    payload = pickle.dumps(message, protocol=5)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(0)


def _child_main() -> None:
    # Keep the protocol pipes private; stray prints go to stderr, stray reads see /dev/null.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        factory, config, memory_mb, parent_pid = _child_read(requests)
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
        module, _, name = factory.partition(":")
        work: Callable[[Any], Any] = getattr(importlib.import_module(module), name)(config)
        if memory_mb is not None:
            import resource

            limit = memory_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except EOFError:
        return
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises
        _child_write(replies, ("error", f"{type(error).__name__}: {error}"))
        return
    _child_write(replies, ("ready", os.getpid()))
    while True:
        try:
            batch = _child_read(requests)
            batch.reverse()  # pop() from the end: each request is let go once it is answered
            while batch:
                request = batch.pop()
                try:
                    reply = ("ok", work(request))
                except MemoryError:
                    reply = ("fatal", "MemoryError: memory limit reached")
                except Exception as error:  # noqa: BLE001 - reported per request
                    reply = ("error", f"{type(error).__name__}: {str(error)[:300]}")
                del request  # a large body is not held while the next one is worked on
                _child_write(replies, reply)
                if reply[0] == "fatal":
                    break  # the parent replaces this child and resends the rest
        except (EOFError, OSError):
            return  # the parent closed the pipe or died
        except MemoryError:  # reading the request or writing the reply: the protocol is lost
            os._exit(_EXIT_OUT_OF_MEMORY)
