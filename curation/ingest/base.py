"""The input-reader contract: one reader class per `format:` in a spec's `input:` list.

A reader turns one input file into a stream of Arrow batches. Every record it meets becomes a row:
good records carry ``text``; records it cannot use (invalid JSON, bad UTF-8, a missing field, an
empty document, a corrupt tail of a file) carry a ``reason`` instead and are quarantined by the
runner under ``rejected/_ingest/``. Nothing is dropped silently.

Row identity: ``doc_id = file_index << 32 | record`` where ``record`` is the record's position in
its file (the 0-based line number for line-oriented formats), so an id maps back to its source.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curation.operator import DOC_ID, REASON, REASON_DETAIL, RECORD, SOURCE, TEXT, UnknownName

# Yield a batch once it holds this many rows or this many bytes of text, whichever comes first:
# blocks stay small enough for Ray Data to spread a large file over many workers.
BATCH_ROWS = 4096
BATCH_BYTES = 16 << 20


class InputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Fields holding local paths that are resolved relative to the spec file (str or list of str).
    path_fields: ClassVar[tuple[str, ...]] = ("paths",)

    format: str
    paths: list[str] = Field(min_length=1, description="files or glob patterns; local paths are "
                             "relative to the spec file; URIs such as s3://bucket/prefix/*.jsonl.gz work too")


# The largest record a file reader accepts by default (bytes of one JSONL line, one text line or
# file, one Parquet text value). Beyond it a record is quarantined as `too_large`, and the line-based
# readers stream past it without holding it, so a reader's memory follows from this cap and the batch
# size above, never from what a file happens to contain. 16 MiB: far above any document worth
# training on (Gopher keeps at most 100,000 words, ~0.6 MB), and the filters hold up to ~33x a
# document while they judge it (the ops' `memory`), so this cap bounds them at ~0.5 GiB per row.
DEFAULT_MAX_RECORD_BYTES = 16 << 20


class CappedInputConfig(InputConfig):
    max_bytes: int = Field(DEFAULT_MAX_RECORD_BYTES, gt=0, description="the largest record in bytes "
                           "(decompressed): larger ones are quarantined as too_large, with their size, "
                           "instead of being read into memory")


class InputReader:
    format: ClassVar[str]
    Config: ClassVar[type[InputConfig]] = InputConfig

    def __init__(self, config: InputConfig):
        self.config = config

    # A reader whose files do not exist yet (a crawl) defines `prepare(work_dir) -> list[str]`:
    # the runner calls it on the driver (Ray is up) before listing inputs, with a folder inside the
    # run directory, and reads the returned files with this reader's `read_file`.

    def read_file(self, path: str, file_index: int, filesystem: Any) -> Iterator[pa.Table]:
        """Yield batches for one file (see :class:`BatchBuilder`). ``filesystem`` is a
        ``pyarrow.fs.FileSystem`` and ``path`` is a path within it."""
        raise NotImplementedError


def make_doc_id(file_index: int, record: int) -> int:
    if record >= 1 << 32:
        raise ValueError(f"record index {record} does not fit in 32 bits")
    return (file_index << 32) | record


class BatchBuilder:
    """Accumulates rows of one file and cuts them into Arrow batches.

    Columns: ``doc_id`` int64, ``text`` string (null when quarantined), ``source`` string,
    ``record`` int64, ``reason`` / ``reason_detail`` string (null when good), plus any ``extra``
    string columns the reader declares up front (``url`` for example).
    """

    def __init__(self, source: str, file_index: int,
                 extra_columns: tuple[str, ...] | dict[str, pa.DataType] = ()):
        self.source = source
        self.file_index = file_index
        # Extra columns are strings unless typed explicitly ({"content": pa.binary(), "http_status": pa.int32()}).
        if isinstance(extra_columns, dict):
            self.extra_types = dict(extra_columns)
        else:
            self.extra_types = {name: pa.string() for name in extra_columns}
        self.extra_columns = tuple(self.extra_types)
        self._reset()

    def _reset(self) -> None:
        self.records: list[int] = []
        self.texts: list[str | None] = []
        self.reasons: list[str | None] = []
        self.details: list[str | None] = []
        self.extras: dict[str, list[Any]] = {c: [] for c in self.extra_columns}
        self.nbytes = 0

    def add(self, record: int, text: str | None, **extra: Any) -> None:
        """A good record. ``text`` may be None for formats whose document is still raw bytes in an
        extra column (HTML from WARC, extracted later by the `extract` op)."""
        self._append(record, text, None, None, extra)
        self.nbytes += len(text) if text else 0
        for value in extra.values():
            if isinstance(value, (bytes, str)):
                self.nbytes += len(value)

    def quarantine(self, record: int, reason: str, detail: str | None = None, **extra: Any) -> None:
        self._append(record, None, reason, detail, extra)

    def _append(self, record, text, reason, detail, extra) -> None:
        self.records.append(record)
        self.texts.append(text)
        self.reasons.append(reason)
        self.details.append(detail)
        for c in self.extra_columns:
            self.extras[c].append(extra.get(c))

    def full(self) -> bool:
        return len(self.records) >= BATCH_ROWS or self.nbytes >= BATCH_BYTES

    def __len__(self) -> int:
        return len(self.records)

    def schema(self) -> pa.Schema:
        """The exact schema of every batch this builder yields."""
        fields = [(DOC_ID, pa.int64()), (TEXT, pa.string()), (SOURCE, pa.string()), (RECORD, pa.int64()),
                  (REASON, pa.string()), (REASON_DETAIL, pa.string())]
        return pa.schema(fields + list(self.extra_types.items()))

    def flush(self) -> pa.Table:
        base = self.file_index << 32
        columns = {
            DOC_ID: pa.array([base | r for r in self.records], pa.int64()),
            TEXT: pa.array(self.texts, pa.string()),
            SOURCE: pa.array([self.source] * len(self.records), pa.string()),
            RECORD: pa.array(self.records, pa.int64()),
            REASON: pa.array(self.reasons, pa.string()),
            REASON_DETAIL: pa.array(self.details, pa.string()),
        }
        for c, kind in self.extra_types.items():
            columns[c] = pa.array(self.extras[c], kind)
        table = pa.table(columns)
        self._reset()
        return table


_READERS: dict[str, type[InputReader]] = {}


def register_reader(cls: type[InputReader]) -> type[InputReader]:
    existing = _READERS.get(cls.format)
    if existing is not None and existing is not cls:
        raise ValueError(f"input format {cls.format!r} is registered twice ({existing.__qualname__}, {cls.__qualname__})")
    _READERS[cls.format] = cls
    return cls


def registered_readers() -> dict[str, type[InputReader]]:
    from curation.operator import load_builtin_ops

    load_builtin_ops()
    return dict(sorted(_READERS.items()))


def get_reader(fmt: str) -> type[InputReader]:
    readers = registered_readers()
    if fmt not in readers:
        raise UnknownName("input format", fmt, list(readers))
    return readers[fmt]
