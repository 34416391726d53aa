"""The run directory: a local path or a pyarrow filesystem URI (``s3://bucket/runs/web``).

Everything a later stage or a resumed run trusts is written atomically: to a temporary name first,
then renamed (or, on object stores, committed by the manifest). Half-written files keep their
``.tmp-`` names and are swept away on the next start.

One run at a time: ``gristmill run`` holds a local run directory with :meth:`RunDir.hold` while it
works, so a second run into it is refused instead of interleaving with the first.
"""

from __future__ import annotations

import fcntl
import json
import os
import posixpath
import shlex
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.errors import STORAGE_ERRNOS, storage_problem

TMP_MARK = ".tmp-"
LOCK_FILE = "_run.lock"  # in the run directory's root: the lock, and who holds it
# Row groups of the Parquet a run writes hold about this many bytes of Arrow data (fewer rows when
# the rows are long), so a reader that takes a row group at a time (the report, tokenize, a training
# loader) holds a bounded amount whatever size of block Ray Data handed the writer.
MAX_ROW_GROUP_BYTES = 32 << 20


def open_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """``s3://b/x`` → (S3FileSystem, "b/x"); a local path → (LocalFileSystem, absolute path)."""
    if "://" in location:
        fs, path = pafs.FileSystem.from_uri(location)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(location)


@dataclass
class RunDir:
    location: str  # what the user gave (path or URI)
    fs: pafs.FileSystem
    root: str  # path inside fs

    @classmethod
    def open(cls, location: str) -> "RunDir":
        fs, root = open_filesystem(location)
        return cls(location, fs, root)

    def uri(self, *parts: str) -> str:
        """A location Ray Data can read or write (a URI for remote filesystems, a path locally)."""
        rel = posixpath.join(*parts) if parts else ""
        if "://" in self.location:
            return self.location.rstrip("/") + ("/" + rel if rel else "")
        return self.path(*parts)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    # ---------------------------------------------------------------- files

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        write_atomic(self.fs, self.path(rel), data)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_json(self, rel: str, value: Any) -> None:
        self.write_bytes(rel, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def list_files(self, rel: str, suffix: str = "", recursive: bool = False) -> list[str]:
        """Sorted file paths (inside fs) under ``rel`` (and its subfolders when ``recursive``, e.g.
        ``data/lang=xx/``); missing folder → []."""
        base = self.path(rel)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=recursive))
        except FileNotFoundError:
            return []
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)
                      and TMP_MARK not in posixpath.basename(i.path))

    def parquet_schema(self, rel: str) -> pa.Schema | None:
        """The schema of every Parquet file under ``rel`` unified (a column any file has, at the widest
        type; None without files): a stage's parts differ in their columns (an input without ``url``,
        a step that added a column only where it ran), and a reader told one file's schema drops the
        rest. Footers are read a few at a time: one request each on an object store."""
        from concurrent.futures import ThreadPoolExecutor

        files = self.list_files(rel, ".parquet", recursive=True)
        if not files:
            return None

        def footer(path: str) -> pa.Schema:
            with self.fs.open_input_file(path) as f:
                return pq.read_schema(f)

        with ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
            return pa.unify_schemas(list(pool.map(footer, files)), promote_options="permissive")

    def list_dirs(self, rel: str) -> list[str]:
        base = self.path(rel)
        infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)

    def delete_dir(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.delete_dir(self.path(rel))

    def delete_matching(self, rel: str, prefixes: tuple[str, ...]) -> int:
        """Delete files under ``rel`` whose names start with any prefix (partial outputs of a unit)."""
        n = 0
        base = self.path(rel)
        infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
        for info in infos:
            if info.type == pafs.FileType.File and posixpath.basename(info.path).startswith(prefixes):
                self.fs.delete_file(info.path)
                n += 1
        return n

    def sweep_temporaries(self) -> int:
        """Remove ``.tmp-`` files that a killed run left behind."""
        if not self.exists():
            return 0
        n = 0
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True)):
            if info.type == pafs.FileType.File and TMP_MARK in posixpath.basename(info.path):
                self.fs.delete_file(info.path)
                n += 1
        return n

    def clear(self) -> None:
        """Delete everything in the run directory but its lock file: the run clearing it holds that lock,
        and a new file would be a new lock, free for a second run to take."""
        if not self.exists():
            return
        for info in self.fs.get_file_info(pafs.FileSelector(self.root)):
            if posixpath.basename(info.path) == LOCK_FILE:
                continue
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(info.path)
            else:
                self.fs.delete_file(info.path)

    # ---------------------------------------------------------------- one run at a time

    def hold(self, command: str | None = None) -> "RunLock":
        """Take this run directory for the calling process, or raise :class:`RunDirBusy` naming the live
        process that has it. Only ``gristmill run`` calls this, once, for the directory it was given; the
        stages of a pipeline run inside that directory, in the same process, and Ray workers never lock.

        Local directories: an exclusive ``flock`` on ``_run.lock``, which the kernel drops when the
        holder's process ends, however it ends, so a killed run never blocks the next one. Object-store
        directories (``s3://`` …) are not locked: a lock object there would outlive a killed holder, and
        telling a dead holder from a slow one needs a heartbeat this does not have (see the README).
        """
        if "://" in self.location:
            return RunLock(None)
        self.makedirs()
        handle = open(os.path.join(self.root, LOCK_FILE), "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read()
            handle.close()
            raise RunDirBusy(self.location, holder) from None
        except BaseException:
            handle.close()
            raise
        try:
            handle.truncate(0)  # "a+" appends, so after the truncation the record starts at 0
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": now(),
                                     "command": command or shlex.join(sys.argv)}) + "\n")
            handle.flush()
        except OSError as exc:  # a full disk: name the file (a failed write() does not)
            try:
                handle.close()  # flushes the record again, fails again, closes all the same
            except OSError:
                pass
            raise OSError(exc.errno, exc.strerror, handle.name) from None
        return RunLock(handle)


class RunDirBusy(Exception):
    """Another live process holds the run directory; the message names it."""

    def __init__(self, location: str, holder_record: str):
        try:
            holder = json.loads(holder_record)
            who = (f"pid {holder['pid']} on {holder['host']}, started {holder['started']}, "
                   f"command: {holder['command']}")
        except (ValueError, TypeError, KeyError):  # it has the lock but has not written its record yet
            who = "a process that has not recorded itself yet"
        super().__init__(f"{location} is in use by another run ({who}); wait for it to end or stop it, "
                         "or give this run another --out")


class RunLock:
    """The hold :meth:`RunDir.hold` took; released by :meth:`release`, leaving the block, or the
    process ending. The lock file stays (deleting it would let two runs lock two different files)."""

    def __init__(self, handle: IO[str] | None):
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.truncate(0)  # the record names a live holder only
            self._handle.close()  # closing drops the flock
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    parent = posixpath.dirname(path)
    tmp = posixpath.join(parent, f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{posixpath.basename(path)}")
    with _naming_failed_write(fs, path, tmp):
        fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)


def write_parquet_atomic(fs: pafs.FileSystem, path: str, table: pa.Table, compression: str = "zstd") -> None:
    parent = posixpath.dirname(path)
    tmp = posixpath.join(parent, f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{posixpath.basename(path)}")
    with _naming_failed_write(fs, path, tmp):
        fs.create_dir(parent, recursive=True)
        pq.write_table(table, tmp, filesystem=fs, compression=None if compression == "none" else compression,
                       row_group_size=row_group_rows(table), use_dictionary=_dictionary_columns(table))
        fs.move(tmp, path)


def _dictionary_columns(table: pa.Table) -> list[str]:
    """Dictionary-encode every column but ``text``. A dictionary of documents saves little (Parquet
    falls back to plain past 1 MiB of dictionary), but a group of exact duplicates (``rejected/
    exact_dedup``) would stay tiny on disk and in the footer's sizes while decoding to copies of the
    same long text: plain, the footer tells a reader what a batch will cost."""
    return [name for name in table.column_names if name != "text"]


def row_group_rows(table: pa.Table, max_bytes: int = MAX_ROW_GROUP_BYTES) -> int:
    """Rows per row group so that one holds about ``max_bytes`` (the table's average row; a row larger
    than ``max_bytes`` gets a group of its own)."""
    if table.num_rows == 0 or table.nbytes <= max_bytes:
        return max(table.num_rows, 1)
    return max(1, table.num_rows * max_bytes // table.nbytes)


@contextmanager
def _naming_failed_write(fs: pafs.FileSystem, path: str, tmp: str) -> Iterator[None]:
    """A write that fails leaves no temporary behind (on a full disk that space is the point), and a
    full, read-only or unwritable file system is reported as ``OSError(errno, strerror, path)``: Arrow
    says ``[errno 28] No space left on device`` without the file, and an error raised in a Ray worker
    reaches the driver only as text, so the path must be in the message
    (:func:`pipelines.errors.storage_problem` reads it there)."""
    try:
        yield
    except OSError as exc:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        problem = storage_problem(exc)
        code = exc.errno if exc.errno in STORAGE_ERRNOS else problem.code if problem else None
        if code is None or (exc.errno == code and exc.filename == path):
            raise
        raise OSError(code, os.strerror(code), path) from exc


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
