"""The run directory: a local path or a pyarrow filesystem URI (``s3://bucket/runs/web``).

Everything a later stage or a resumed run trusts is written atomically: to a temporary name first,
then renamed (or, on object stores, committed by the manifest). Half-written files keep their
``.tmp-`` names and are swept away on the next start.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TMP_MARK = ".tmp-"


def open_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """``s3://b/x`` → (S3FileSystem, "b/x"); a local path → (LocalFileSystem, absolute path)."""
    if "://" in location:
        fs, path = pafs.FileSystem.from_uri(location)
        return fs, path.rstrip("/")
    import os

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
        if self.exists():
            self.fs.delete_dir_contents(self.root, missing_dir_ok=True)


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    parent = posixpath.dirname(path)
    fs.create_dir(parent, recursive=True)
    tmp = posixpath.join(parent, f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{posixpath.basename(path)}")
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def write_parquet_atomic(fs: pafs.FileSystem, path: str, table: pa.Table, compression: str = "zstd") -> None:
    parent = posixpath.dirname(path)
    fs.create_dir(parent, recursive=True)
    tmp = posixpath.join(parent, f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{posixpath.basename(path)}")
    pq.write_table(table, tmp, filesystem=fs, compression=None if compression == "none" else compression)
    fs.move(tmp, path)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
