"""Errors a user can act on. Spec errors say where (file:line:column and field path) and what was
expected; the CLI prints them and exits 2 before any Ray work starts. :func:`storage_problem` tells a
full, read-only or unwritable file system apart from other failures, wherever the write failed."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class SpecIssue:
    file: str
    line: int | None  # 1-based; None when the value came from --set or a default
    column: int | None
    path: str  # field path such as steps[3].langid.min_score ("" for the whole document)
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(Exception):
    """One or more problems with a spec, all reported at once."""

    def __init__(self, issues: list[SpecIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class RunError(Exception):
    """A run cannot go on (bad run directory, inconsistent outputs); the message says why."""


# ------------------------------------------------------------------------------ full or read-only disks

STORAGE_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
# Said without an errno by some writers (torch.save, Arrow's C++ messages)
_STORAGE_PHRASES = {"no space left on device": errno.ENOSPC, "disk quota exceeded": errno.EDQUOT,
                    "read-only file system": errno.EROFS}
_ERRNO = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)
_QUOTED_PATH = re.compile(r"'((?:/|[a-z][a-z0-9+.-]*://)[^'\n]+)'", re.IGNORECASE)
_TMP_PREFIX = re.compile(r"\.tmp-[0-9a-f]{8}-")  # rundir.write_atomic's temporary names


@dataclass(frozen=True)
class StorageProblem:
    """A write that failed because the file system is full, read-only or not ours to write."""

    code: int  # errno: ENOSPC, EDQUOT, EROFS or EACCES
    path: str | None  # what could not be written, when the error names it

    @property
    def what(self) -> str:
        return STORAGE_ERRNOS[self.code]

    def describe(self, under: str) -> str:
        """``disk full: could not write /runs/x/data/part-….parquet (No space left on device)``; when the
        error names no file (Arrow inside Ray Data, torch), the run directory ``under`` is named instead,
        without claiming the write was there (it may have been /tmp or /dev/shm)."""
        reason = os.strerror(self.code)
        reason = "" if reason.lower() == self.what else f" ({reason})"
        if self.path:
            return f"{self.what}: could not write {self.path}{reason}"
        return f"{self.what}: a write failed without naming its file{reason}; the run directory is {under}"

    def advice(self) -> str:
        """What to do before rerunning."""
        if self.code in (errno.ENOSPC, errno.EDQUOT):
            return "free space on that file system"
        if self.code == errno.EROFS:
            return "make that file system writable, or give --out another location"
        return "make it writable for this user, or give --out another location"

    def message(self, under: str) -> str:
        """The whole line for a run that failed on it: what, where, and what to do."""
        return (f"{self.describe(under)}; {self.advice()} and rerun the same command to resume "
                "(committed work is kept)")


def storage_problem(exc: BaseException, run_root: str | None = None) -> StorageProblem | None:
    """The full / read-only / not-writable file system behind ``exc``, if that is what it is.

    Looks through the exception's chain (``__cause__``, ``__context__``, a Ray task error's ``cause``)
    for an ``OSError`` with such an errno, then through their texts, since an error raised in a Ray
    worker reaches the driver with the worker's traceback as text (``RayTaskError``) and Arrow says
    ``[errno 28]`` in its messages. ``Permission denied`` counts only for a path inside ``run_root``:
    elsewhere it may be an input file that could not be read."""
    found: list[StorageProblem] = []
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            path = e.filename if isinstance(e.filename, str) else _path_in(str(e))
            found += filter(None, [_accept(e.errno, path, run_root)])
    for e in chain:
        for line in str(e).splitlines():
            code = next((int(m.group(1)) for m in _ERRNO.finditer(line) if int(m.group(1)) in STORAGE_ERRNOS),
                        None)
            if code is None:
                low = line.lower()
                code = next((c for phrase, c in _STORAGE_PHRASES.items() if phrase in low), None)
            if code is not None:
                found += filter(None, [_accept(code, _path_in(line), run_root)])
    # the first that names its path (Arrow's own message, chained first, does not), else the first
    return next((p for p in found if p.path), found[0] if found else None)


def _accept(code: int, path: str | None, run_root: str | None) -> StorageProblem | None:
    if path:
        path = _TMP_PREFIX.sub("", path)
    if code == errno.EACCES and not (path and run_root and _inside(path, run_root)):
        return None
    return StorageProblem(code, path)


def _inside(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/") or root.startswith(path.rstrip("/") + "/")


def _path_in(text: str) -> str | None:
    match = _QUOTED_PATH.search(text)
    return match.group(1) if match else None


def _chain(exc: BaseException):
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        cause = getattr(e, "cause", None)
        todo += [e.__cause__, e.__context__, cause if isinstance(cause, BaseException) else None]
