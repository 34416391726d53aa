"""Readers for document files: ``jsonl``, ``parquet`` and ``text`` inputs.

Every reader emits the columns of :class:`~curation.ingest.base.BatchBuilder`, with ``source`` set
to the path as given and ``record`` the record's position in its file (0-based line number for
line-oriented files, row position for Parquet, 0 for a whole-file text document). Records that
cannot become documents are kept as quarantined rows with a stable ``reason`` code and a human
``reason_detail``; the codes are listed on each reader.

JSONL and text files may be gzip or zstd compressed (see :mod:`curation.ingest.streams`).
"""

from __future__ import annotations

import codecs
import json
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, field_validator, model_validator

from curation.ingest.base import (BATCH_BYTES, BATCH_ROWS, BatchBuilder, CappedInputConfig, InputReader,
                                  register_reader)
from curation.ingest.parquet_pages import CorruptPageHeader, column_chunk_pages
from curation.ingest.streams import (READ_ERRORS, READ_SIZE, Compression, OversizedLine, UnreadableInput,
                                     iter_lines, read_at_most)
from curation.operator import DOC_ID, INTERNAL_COLUMNS, REASON, REASON_DETAIL, RECORD, SOURCE, TEXT

try:  # orjson is optional: several times faster than json, same results (see _parse_json).
    import orjson

    _fast_loads: Any = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None

URL = "url"
SOURCE_ID = "source_id"
_RESERVED = {DOC_ID, TEXT, SOURCE, RECORD, REASON, REASON_DETAIL, URL, SOURCE_ID, *INTERNAL_COLUMNS}
_MISSING = object()


# --------------------------------------------------------------------------------- shared helpers


class RecordFieldsConfig(CappedInputConfig):
    """Where a structured record keeps its text and metadata. Shared by ``jsonl`` and ``parquet``."""

    text_field: str = Field("text", min_length=1, description="field holding the document text")
    url_field: str | None = Field("url", description="field copied to the `url` column when it holds a "
                                  "string (null otherwise); null: no `url` column")
    id_field: str | None = Field(None, description="field whose value (stringified) goes to the "
                                 "`source_id` column, e.g. the dataset's own document id")
    keep_fields: list[str] = Field(default_factory=list, description="more fields carried along as "
                                   "string columns of the same name; non-string values are JSON-encoded")

    @model_validator(mode="after")
    def _check_keep_fields(self):
        clash = sorted(set(self.keep_fields) & _RESERVED)
        if clash:
            raise ValueError(f"keep_fields may not use reserved column names {clash}; "
                             f"use url_field / id_field for the url and the source's id")
        seen = set()
        for name in self.keep_fields:
            if name in seen:
                raise ValueError(f"keep_fields lists {name!r} twice")
            seen.add(name)
        return self

    def extra_columns(self) -> tuple[str, ...]:
        return ((URL,) if self.url_field else ()) + ((SOURCE_ID,) if self.id_field else ()) + tuple(self.keep_fields)


def _json_string(value: Any) -> str | None:
    """A field's value as a string column value: strings as they are, anything else as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _lookup(obj: dict, path: str) -> Any:
    """``obj[path]``, else follow a dotted path (``meta.body``) into nested objects; _MISSING if absent.
    The literal key wins, so a field whose name contains a dot is still reachable."""
    if path in obj:
        return obj[path]
    if "." not in path:
        return _MISSING
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _over_cap(what: str, size: int, cap: int) -> str:
    return f"{what} of {size:,} bytes is over max_bytes={cap:,}"


def _is_valid_unicode(*values: Any) -> bool:
    """False if a string holds a lone surrogate (JSON allows the escape ``\\ud800``; UTF-8 does not)."""
    try:
        for v in values:
            if isinstance(v, str):
                v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_JSON_TYPE_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _parse_json(line: str) -> Any:
    if _fast_loads is not None:
        try:
            return _fast_loads(line)
        except ValueError:
            pass  # orjson is stricter (NaN, huge ints, raw control characters): let json decide
    # strict=False accepts raw control characters (tabs, NULs) inside strings: unambiguous, and common
    # in real dumps; normalize removes them later if asked to.
    return json.loads(line, strict=False)


# ------------------------------------------------------------------------------------------ jsonl


class JsonlConfig(RecordFieldsConfig):
    format: Literal["jsonl"]
    compression: Compression = Field("auto", description="auto: from the extension (.gz, .zst)")


@register_reader
class JsonlReader(InputReader):
    """One JSON object per line; plain, gzip (``.gz``) or zstd (``.zst``/``.zstd``).

    ``record`` is the 0-based line number. Blank (whitespace-only) lines are not documents and
    produce no row, but still count as lines. A UTF-8 byte-order mark on the first line is ignored.
    Quarantine reasons: ``invalid_utf8``, ``invalid_json``, ``not_an_object``, ``missing_field`` (text
    absent or null), ``wrong_type`` (text not a string), ``empty_text`` (empty or whitespace only),
    ``too_large`` (a line over ``max_bytes``: read through, never held), and ``unreadable_file`` (cannot be opened, or the stream breaks: that row sits at the line where
    it broke and reading stops; rows before it are kept).
    """

    format = "jsonl"
    Config = JsonlConfig

    def read_file(self, path: str, file_index: int, filesystem: Any) -> Iterator[pa.Table]:
        cfg: JsonlConfig = self.config  # type: ignore[assignment]
        builder = BatchBuilder(path, file_index, cfg.extra_columns())
        try:
            for record, raw in iter_lines(filesystem, path, cfg.compression, cfg.max_bytes):
                if isinstance(raw, OversizedLine):
                    builder.quarantine(record, "too_large", _over_cap("line", raw.size, cfg.max_bytes))
                elif not raw.strip():
                    continue
                else:
                    if record == 0 and raw.startswith(codecs.BOM_UTF8):
                        raw = raw[len(codecs.BOM_UTF8):]
                    self._add_line(builder, record, raw)
                if builder.full():
                    yield builder.flush()
        except UnreadableInput as exc:
            builder.quarantine(exc.record, "unreadable_file", exc.detail)
        if len(builder):
            yield builder.flush()

    def _add_line(self, builder: BatchBuilder, record: int, raw: bytes) -> None:
        cfg: JsonlConfig = self.config  # type: ignore[assignment]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            builder.quarantine(record, "invalid_utf8", str(exc))
            return
        try:
            obj = _parse_json(line)
        except ValueError as exc:  # JSONDecodeError, and orjson's, are ValueErrors
            builder.quarantine(record, "invalid_json", str(exc))
            return
        except RecursionError:
            builder.quarantine(record, "invalid_json", "JSON nested too deeply to parse")
            return
        if not isinstance(obj, dict):
            builder.quarantine(record, "not_an_object", f"line holds a JSON {_json_type(obj)}, not an object")
            return
        extra = {}
        if cfg.url_field:
            url = _lookup(obj, cfg.url_field)
            extra[URL] = url if isinstance(url, str) else None
        if cfg.id_field:
            value = _lookup(obj, cfg.id_field)
            extra[SOURCE_ID] = None if value is _MISSING else _json_string(value)
        for name in cfg.keep_fields:
            value = _lookup(obj, name)
            extra[name] = None if value is _MISSING else _json_string(value)
        text = _lookup(obj, cfg.text_field)
        # Only a `\ud...` escape can smuggle a lone surrogate in; checking for it on the raw bytes
        # keeps the encode test off the common path.
        if (b"\\ud" in raw or b"\\uD" in raw) and not _is_valid_unicode(text, *extra.values()):
            builder.quarantine(record, "invalid_utf8", "a JSON string holds a lone surrogate escape "
                               "(\\ud800-\\udfff), which is not valid Unicode")
            return
        if text is _MISSING or text is None:
            what = "absent" if text is _MISSING else "null"
            builder.quarantine(record, "missing_field", f"field {cfg.text_field!r} is {what}", **extra)
        elif not isinstance(text, str):
            builder.quarantine(record, "wrong_type", f"field {cfg.text_field!r} is a JSON {_json_type(text)}, "
                               "not a string", **extra)
        elif not text.strip():
            builder.quarantine(record, "empty_text", f"field {cfg.text_field!r} is empty or only whitespace", **extra)
        else:
            builder.add(record, text, **extra)


# ---------------------------------------------------------------------------------------- parquet


class ParquetConfig(RecordFieldsConfig):
    """Field names are whole top-level column names (a dot is part of the name, not a path)."""

    format: Literal["parquet"]
    max_page_bytes: int = Field(256 << 20, gt=0, description="the largest Parquet page (uncompressed) "
                                "the reader decodes: a row group with a larger page in a column it reads "
                                "is quarantined row by row as too_large without being decoded. A page is "
                                "decoded whole, so this (not max_bytes) bounds a Parquet reader's memory")


def _is_string_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _as_string_column(values: pa.Array) -> pa.Array:
    """Strings, integers and booleans cast in Arrow (same text as JSON); anything else JSON-encoded."""
    t = values.type
    if _is_string_type(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
        return values.cast(pa.string())
    return pa.array([_json_string(v) for v in values.to_pylist()], pa.string())


@register_reader
class ParquetReader(InputReader):
    """Documents as rows of a Parquet file, streamed batch by batch, reading only the needed columns.

    ``record`` is the row position in the file. Field names are top-level column names. Quarantine
    reasons: ``missing_column`` / ``wrong_type`` (the text column is absent or not a string column:
    one row at record 0 for the whole file), ``missing_field`` (null text), ``empty_text``
    (empty or whitespace only), ``too_large`` (text over ``max_bytes``) and ``unreadable_file`` (not
    Parquet, or corrupt where it broke). A url column that is not a string column gives a null
    ``url``, like a non-string JSON url.

    Memory: column chunks are streamed (buffered reads, not whole chunks), and each row group is read
    in batches sized from its metadata so that a batch holds about BATCH_BYTES of the wanted columns
    however large the documents are. A page is decoded whole and its size is the writer's choice, so
    pages are checked first (:mod:`curation.ingest.parquet_pages`): a row group with a page over
    ``max_page_bytes`` is quarantined row by row (``too_large``) without being decoded. A value over
    ``max_bytes`` in a page within that bound is decoded, then quarantined with its size.
    """

    format = "parquet"
    Config = ParquetConfig

    def read_file(self, path: str, file_index: int, filesystem: Any) -> Iterator[pa.Table]:
        cfg: ParquetConfig = self.config  # type: ignore[assignment]
        builder = BatchBuilder(path, file_index, cfg.extra_columns())
        # BatchBuilder's empty output fixes the schema: Parquet batches must look exactly like it.
        out_schema = builder.flush().schema
        try:
            source = filesystem.open_input_file(path)
        except READ_ERRORS as exc:
            builder.quarantine(0, "unreadable_file", f"{type(exc).__name__}: {exc}")
            yield builder.flush()
            return
        with source:
            try:
                parquet = pq.ParquetFile(source, buffer_size=READ_SIZE)
            except READ_ERRORS as exc:
                builder.quarantine(0, "unreadable_file", f"{type(exc).__name__}: {exc}")
                yield builder.flush()
                return
            problem = self._check_text_column(parquet.schema_arrow)
            if problem:
                builder.quarantine(0, *problem)
                yield builder.flush()
                return
            present = set(parquet.schema_arrow.names)
            wanted = [cfg.text_field, cfg.url_field, cfg.id_field, *cfg.keep_fields]
            columns = list(dict.fromkeys(c for c in wanted if c and c in present))
            offset = 0
            # Row group by row group: a batch never spans two groups, so a corrupt group costs only
            # its own rows and the quarantine row sits where the damage starts.
            for group in range(parquet.num_row_groups):
                row_group = parquet.metadata.row_group(group)
                try:
                    oversized = _oversized_page(source, row_group, columns, cfg.max_page_bytes)
                except (CorruptPageHeader, *READ_ERRORS) as exc:
                    builder.quarantine(offset, "unreadable_file", f"{type(exc).__name__}: {exc}")
                    yield builder.flush()
                    return
                if oversized:
                    yield from _quarantine_rows(out_schema, path, file_index, offset, row_group.num_rows,
                                                "too_large", f"row group {group}: {oversized}; its rows are not read")
                    offset += row_group.num_rows
                    continue
                batch_rows = rows_per_batch(row_group, columns)
                batches = parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)
                while True:
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except READ_ERRORS as exc:
                        builder.quarantine(offset, "unreadable_file", f"{type(exc).__name__}: {exc}")
                        yield builder.flush()
                        return
                    if batch.num_rows:
                        yield from self._split(self._convert(batch, out_schema, path, file_index, offset))
                    offset += batch.num_rows

    def _check_text_column(self, schema: pa.Schema) -> tuple[str, str] | None:
        name = self.config.text_field  # type: ignore[attr-defined]
        index = schema.get_field_index(name)
        if index < 0:
            names = ", ".join(schema.names[:20]) + (", ..." if len(schema.names) > 20 else "")
            return "missing_column", f"no column {name!r}; columns: {names}"
        if not _is_string_type(schema.field(index).type):
            return "wrong_type", f"column {name!r} has type {schema.field(index).type}, not string"
        return None

    def _convert(self, batch: pa.RecordBatch, schema: pa.Schema, path: str, file_index: int, offset: int) -> pa.Table:
        cfg: ParquetConfig = self.config  # type: ignore[assignment]
        n = batch.num_rows
        if offset + n > 1 << 32:
            raise ValueError(f"{path}: row {offset + n - 1} does not fit in the 32 bits of a doc_id")
        text = batch.column(cfg.text_field).cast(pa.string())
        is_null = pc.is_null(text)
        length = pc.binary_length(text)
        is_blank = pc.or_(pc.equal(length, 0), pc.utf8_is_space(text))
        is_large = pc.greater(length, cfg.max_bytes)
        null_str = pa.scalar(None, pa.string())
        reason = pc.if_else(is_null, "missing_field", pc.if_else(is_large, "too_large",
                                                                 pc.if_else(is_blank, "empty_text", null_str)))
        large_detail = null_str
        if pc.any(is_large).as_py():
            large_detail = pa.array([_over_cap("value", n, cfg.max_bytes) if n is not None and n > cfg.max_bytes
                                     else None for n in length.to_pylist()], pa.string())
        detail = pc.if_else(is_null, f"column {cfg.text_field!r} is null",
                            pc.if_else(is_large, large_detail,
                                       pc.if_else(is_blank, f"column {cfg.text_field!r} is empty or only whitespace",
                                                  null_str)))
        records = np.arange(offset, offset + n, dtype=np.int64)
        columns = {
            DOC_ID: pa.array(records + (file_index << 32)),
            TEXT: pc.if_else(pc.is_null(reason), text, null_str),
            SOURCE: pa.repeat(pa.scalar(path, pa.string()), n),
            RECORD: pa.array(records),
            REASON: reason,
            REASON_DETAIL: detail,
        }
        names = batch.schema.names
        if cfg.url_field:
            url_ok = cfg.url_field in names and _is_string_type(batch.schema.field(cfg.url_field).type)
            columns[URL] = batch.column(cfg.url_field).cast(pa.string()) if url_ok else pa.nulls(n, pa.string())
        for column, field in ([(SOURCE_ID, cfg.id_field)] if cfg.id_field else []) + [(f, f) for f in cfg.keep_fields]:
            columns[column] = _as_string_column(batch.column(field)) if field in names else pa.nulls(n, pa.string())
        return pa.table([columns[f.name] for f in schema], schema=schema)

    @staticmethod
    def _split(table: pa.Table) -> Iterator[pa.Table]:
        """Cut a batch of long documents so that no yielded table holds much more than BATCH_BYTES."""
        nbytes = pc.sum(pc.binary_length(table.column(TEXT))).as_py() or 0
        parts = max(1, -(-nbytes // BATCH_BYTES))
        step = -(-table.num_rows // parts)
        for start in range(0, table.num_rows, step):
            yield table.slice(start, step)


def _oversized_page(source: Any, row_group: Any, columns: list[str], cap: int) -> str | None:
    """Why a row group cannot be read within ``cap`` bytes per page, or None. Page headers are walked
    only for column chunks that could hold such a page (uncompressed size over the cap)."""
    wanted = set(columns)
    for i in range(row_group.num_columns):
        chunk = row_group.column(i)
        if chunk.path_in_schema.split(".")[0] not in wanted or chunk.total_uncompressed_size <= cap:
            continue
        for page in column_chunk_pages(source, chunk):
            if page.uncompressed_size > cap:
                return (f"a page of {page.uncompressed_size:,} bytes in column {chunk.path_in_schema!r} is over "
                        f"max_page_bytes={cap:,}")
    return None


def _quarantine_rows(schema: pa.Schema, path: str, file_index: int, start: int, count: int, reason: str,
                     detail: str) -> Iterator[pa.Table]:
    """Rows ``start .. start+count-1`` of a file as quarantined rows (every input row is accounted for)."""
    for first in range(start, start + count, BATCH_ROWS):
        n = min(BATCH_ROWS, start + count - first)
        records = np.arange(first, first + n, dtype=np.int64)
        columns = {DOC_ID: pa.array(records + (file_index << 32)), SOURCE: pa.repeat(pa.scalar(path, pa.string()), n),
                   RECORD: pa.array(records), REASON: pa.repeat(pa.scalar(reason, pa.string()), n),
                   REASON_DETAIL: pa.repeat(pa.scalar(detail, pa.string()), n)}
        yield pa.table([columns.get(f.name, pa.nulls(n, f.type)) for f in schema], schema=schema)


def rows_per_batch(row_group: Any, columns: list[str], max_rows: int | None = None, max_bytes: int | None = None) -> int:
    """Rows per batch so that one batch decodes to about ``max_bytes`` of the wanted columns, from the
    row group's metadata (uncompressed sizes): many small documents read ``max_rows`` at a time, a
    group of large ones a few at a time. (A dictionary-encoded column's size is its encoded size,
    which can be far less than it decodes to: the run's own Parquet keeps ``text`` plain.)"""
    max_rows = BATCH_ROWS if max_rows is None else max_rows
    max_bytes = BATCH_BYTES if max_bytes is None else max_bytes
    wanted = set(columns)
    nbytes = sum(row_group.column(i).total_uncompressed_size for i in range(row_group.num_columns)
                 if row_group.column(i).path_in_schema.split(".")[0] in wanted)
    rows = row_group.num_rows
    if rows <= 0 or nbytes <= 0:
        return max_rows
    return max(1, min(max_rows, max_bytes * rows // nbytes))


# ------------------------------------------------------------------------------------------- text


class TextConfig(CappedInputConfig):
    format: Literal["text"]
    mode: Literal["file", "line"] = Field("file", description="file: each file is one document; "
                                          "line: each non-blank line is one document")
    encoding: str = Field("utf-8", description="any Python codec; line mode needs one where '\\n' is "
                          "the byte 0x0A (UTF-8, Latin-1, cp1252, ...)")
    errors: Literal["strict", "replace"] = Field("strict", description="strict: undecodable documents "
                                                  "are quarantined; replace: bad bytes become U+FFFD")
    compression: Compression = Field("auto", description="auto: from the extension (.gz, .zst)")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None

    @model_validator(mode="after")
    def _line_mode_encoding(self):
        if self.mode == "line" and "\n".encode(self.encoding) != b"\n":
            raise ValueError(f"mode: line cannot split {self.encoding} text on newline bytes; "
                             "use an ASCII-compatible encoding such as utf-8, or mode: file")
        return self


@register_reader
class TextReader(InputReader):
    """Plain text files (optionally ``.gz``/``.zst``), one document per file or per line.

    ``file`` mode: the whole file is document 0 (a leading UTF-8 BOM is dropped); ``line`` mode:
    each non-blank line is a document whose ``record`` is its 0-based line number (line endings are
    removed, whitespace-only lines give no row). Quarantine reasons: ``invalid_utf8`` (or
    ``invalid_encoding`` for other codecs) with ``errors: strict``, ``empty_text``, ``too_large``
    (over ``max_bytes``: in file mode the file, read no further than the cap; in line mode a line,
    read through and never held), ``unreadable_file``.
    """

    format = "text"
    Config = TextConfig

    def read_file(self, path: str, file_index: int, filesystem: Any) -> Iterator[pa.Table]:
        cfg: TextConfig = self.config  # type: ignore[assignment]
        builder = BatchBuilder(path, file_index)
        if cfg.mode == "file":
            self._read_whole(builder, path, filesystem)
        else:
            try:
                for record, raw in iter_lines(filesystem, path, cfg.compression, cfg.max_bytes):
                    if isinstance(raw, OversizedLine):
                        builder.quarantine(record, "too_large", _over_cap("line", raw.size, cfg.max_bytes))
                    else:
                        self._add(builder, record, raw.rstrip(b"\r\n"))
                    if builder.full():
                        yield builder.flush()
            except UnreadableInput as exc:
                builder.quarantine(exc.record, "unreadable_file", exc.detail)
        if len(builder):
            yield builder.flush()

    def _read_whole(self, builder: BatchBuilder, path: str, filesystem: Any) -> None:
        cfg: TextConfig = self.config  # type: ignore[assignment]
        try:
            data = read_at_most(filesystem, path, cfg.max_bytes + 1, cfg.compression)
        except UnreadableInput as exc:
            builder.quarantine(0, "unreadable_file", exc.detail)
            return
        if len(data) > cfg.max_bytes:
            builder.quarantine(0, "too_large", f"file holds more than max_bytes={cfg.max_bytes} bytes "
                               "(not read further)")
            return
        self._add(builder, 0, data, whole_file=True)

    def _add(self, builder: BatchBuilder, record: int, raw: bytes, whole_file: bool = False) -> None:
        cfg: TextConfig = self.config  # type: ignore[assignment]
        try:
            text = raw.decode(cfg.encoding, cfg.errors)
        except UnicodeDecodeError as exc:
            reason = "invalid_utf8" if cfg.encoding.startswith("utf-8") else "invalid_encoding"
            builder.quarantine(record, reason, str(exc))
            return
        if record == 0 and text.startswith("\ufeff"):
            text = text[1:]
        if text.strip():
            builder.add(record, text)
        elif whole_file:  # a blank line is no document, but a blank file is a document with no text
            builder.quarantine(record, "empty_text", "file is empty or only whitespace")
