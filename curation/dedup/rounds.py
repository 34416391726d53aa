"""Rounds of a global op as verified resume points under ``work/<stage_id>/``.

Each round writes Parquet files into its own folder and, once every writer task has reported, a
``_round.json`` marker with the row count the writers reported. A later round trusts a folder only
when the marker exists *and* the row count in the Parquet footers matches it, so a round cut short
(a killed driver, a lost worker) is redone from scratch rather than half-read. A rerun of the op
skips every round whose marker verifies: that is the resume point.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation.faults import fault_point

MARKER = "_round.json"
TMP = ".tmp-"


def _fs_and_path(location: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    if "://" in location:
        fs, path = pafs.FileSystem.from_uri(location)
        return fs, path.rstrip("/")
    return filesystem or pafs.LocalFileSystem(), location.rstrip("/")


def write_table(fs: pafs.FileSystem, folder: str, table: pa.Table, prefix: str = "part") -> None:
    """Write one Parquet file atomically (temporary name, then rename): a reader never sees half a file."""
    fs.create_dir(folder, recursive=True)
    name = f"{prefix}-{uuid.uuid4().hex[:16]}.parquet"
    tmp = posixpath.join(folder, TMP + name)
    pq.write_table(table, tmp, filesystem=fs, compression="zstd")
    fs.move(tmp, posixpath.join(folder, name))


def parquet_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                  and not posixpath.basename(i.path).startswith(TMP))


def footer_rows(fs: pafs.FileSystem, folder: str) -> int:
    """Rows in every Parquet file under ``folder``, from the footers only."""
    total = 0
    for path in parquet_files(fs, folder):
        with fs.open_input_file(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


@dataclass
class WorkDir:
    """The op's scratch folder. Picklable, so Ray tasks receive it and write into it themselves."""

    location: str  # path or URI of work/<stage_id>
    filesystem: Any = None

    @property
    def fs(self) -> pafs.FileSystem:
        return _fs_and_path(self.location, self.filesystem)[0]

    def path(self, *parts: str) -> str:
        return posixpath.join(_fs_and_path(self.location, self.filesystem)[1], *parts)

    def uri(self, *parts: str) -> str:
        """What Ray Data reads (a URI for remote filesystems, a path locally)."""
        return posixpath.join(self.location.rstrip("/"), *parts)

    @property
    def stage(self) -> str:
        """The stage this scratch folder belongs to (``work/<stage_id>``), e.g. ``02-exact_dedup``."""
        return posixpath.basename(self.location.rstrip("/"))

    def ray_filesystem(self):
        return None if "://" in self.location else self.fs

    # ------------------------------------------------------------------ rounds

    def finished(self, name: str) -> dict | None:
        """The round's marker if the round completed and its files still hold exactly the rows the
        writers reported; None means the round must be (re)done."""
        marker = self.path(name, MARKER)
        if self.fs.get_file_info(marker).type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(marker) as f:
            info = json.loads(f.read())
        if footer_rows(self.fs, self.path(name)) != info["rows"]:
            return None
        return info

    def begin(self, name: str) -> None:
        """Start a round afresh: whatever an interrupted attempt left is removed."""
        folder = self.path(name)
        if self.fs.get_file_info(folder).type != pafs.FileType.NotFound:
            self.fs.delete_dir(folder)
        self.fs.create_dir(folder, recursive=True)

    def finish(self, name: str, rows: int, **extra: Any) -> dict:
        """Verify the round's files against the writers' count, then write the marker."""
        found = footer_rows(self.fs, self.path(name))
        fault_point(f"dedup.{self.stage}.{name}.written")  # inside a round: files complete, no marker yet
        if found != rows:
            raise RuntimeError(f"dedup round {name!r}: writers reported {rows} rows but {found} are on disk")
        info = {"rows": rows, **extra}
        tmp = self.path(name, TMP + MARKER)
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(info).encode())
        self.fs.move(tmp, self.path(name, MARKER))
        fault_point(f"dedup.{self.stage}.{name}.done")  # between rounds
        return info

    def has_rows(self, name: str) -> bool:
        return bool(parquet_files(self.fs, self.path(name)))


def sum_summaries(ds: Any) -> dict[str, int]:
    """Drive a writing pass and add up its per-task summaries (a few integers per task; nothing more
    ever reaches the driver)."""
    totals: dict[str, int] = {}
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for name in batch.column_names:
            totals[name] = totals.get(name, 0) + int(pc.sum(batch.column(name)).as_py() or 0)
    return totals
