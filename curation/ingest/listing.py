"""Expanding a spec's input globs into the sorted listing that fixes every file's index.

The listing is sorted by location so that ``file_index`` (the high 32 bits of every ``doc_id``) is the
same on every rerun and on every machine.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

_WILDCARDS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    index: int
    location: str  # local absolute path or URI, as written to `source`
    size: int
    input: int  # which entry of the spec's `input:` list it came from

    def as_dict(self) -> dict:
        return asdict(self)


def filesystem_for(location: str) -> tuple[pafs.FileSystem, str]:
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), location


def expand(pattern: str) -> list[tuple[str, int]]:
    """All files matching one path or glob, with their sizes. A missing plain path is an error."""
    if "://" not in pattern:
        if not any(c in _WILDCARDS for c in pattern):
            if os.path.isdir(pattern):
                pattern = os.path.join(pattern, "**", "*")
            elif not os.path.exists(pattern):
                raise FileNotFoundError(f"input path does not exist: {pattern}")
        return _local_files(glob.glob(pattern, recursive=True))
    fs, path = pafs.FileSystem.from_uri(pattern)
    scheme = pattern.split("://", 1)[0]
    if not any(c in _WILDCARDS for c in path):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [(pattern, info.size)]
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"input path does not exist: {pattern}")
        selector = pafs.FileSelector(path, recursive=True)
        return sorted((f"{scheme}://{i.path}", i.size) for i in fs.get_file_info(selector) if i.type == pafs.FileType.File)
    # Object stores have no glob: list from the longest literal prefix, then match.
    prefix = path[: min(path.index(c) for c in _WILDCARDS if c in path)]
    base = posixpath.dirname(prefix)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    out = []
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File and fnmatch.fnmatchcase(info.path, path):
            out.append((f"{scheme}://{info.path}", info.size))
    return sorted(out)


def _local_files(matches: list[str]) -> list[tuple[str, int]]:
    """Files among glob matches, each real file once. A symlink to a folder above it (``up -> ..``)
    makes ``**`` list every file again under ``up/``, ``up/up/`` … until the OS stops it: those
    copies are dropped (the first path in sorted order stays), or every document would be read ~40
    times. A symlink that resolves to nothing (broken, or a loop) stays in the listing with size 0,
    so its reader quarantines it as ``unreadable_file`` instead of it vanishing without a word."""
    out, seen = [], set()
    for path in sorted(matches):
        if os.path.isfile(path):
            real = os.path.realpath(path)
        elif os.path.islink(path) and not os.path.exists(path):
            real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
            if os.path.exists(real):  # fine from its real folder: only the up/up/… path was too deep
                continue
        else:
            continue
        if real not in seen:
            seen.add(real)
            out.append((os.path.abspath(path), os.path.getsize(path) if os.path.isfile(path) else 0))
    return out


def list_inputs(patterns_per_input: list[list[str]]) -> list[InputFile]:
    """Expand every input entry's patterns; a file named by two entries is read once (first entry)."""
    seen: dict[str, tuple[int, int]] = {}
    for input_index, patterns in enumerate(patterns_per_input):
        for pattern in patterns:
            matches = expand(pattern)
            if not matches:
                raise FileNotFoundError(f"no files match {pattern}")
            for location, size in matches:
                seen.setdefault(location, (size, input_index))
    ordered = sorted(seen)
    return [InputFile(i, loc, seen[loc][0], seen[loc][1]) for i, loc in enumerate(ordered)]
