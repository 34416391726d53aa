"""The page sizes of a Parquet column chunk, read from its page headers without decoding a page.

A Parquet value can only be measured once its page is decompressed, and a writer decides how big a
page is: Arrow's checks its page size only every 1,024 values, so a row group of huge strings can be
one page of gigabytes. Before reading a large column chunk, the Parquet reader walks its page headers
(a few dozen bytes each, Thrift compact protocol) to learn every page's uncompressed size, so that a
page over the configured bound is refused instead of decoded.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

# Thrift compact protocol type codes (field headers and list element types).
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)
_HEADER_READ = 4096  # bytes fetched at a time while parsing a header


class CorruptPageHeader(ValueError):
    pass


class Page(NamedTuple):
    offset: int  # file offset of the page header
    uncompressed_size: int
    compressed_size: int
    num_values: int | None  # data pages only


class _Cursor:
    """Reads bytes forward from a random-access file, fetching _HEADER_READ bytes at a time."""

    def __init__(self, source: Any, offset: int, end: int):
        self.source, self.pos, self.end = source, offset, end
        self.buf, self.buf_start = b"", offset

    def byte(self) -> int:
        i = self.pos - self.buf_start
        if i >= len(self.buf):
            if self.pos >= self.end:
                raise CorruptPageHeader(f"page header runs past the column chunk's end at offset {self.end}")
            self.buf = self.source.read_at(min(_HEADER_READ, self.end - self.pos), self.pos)
            self.buf_start, i = self.pos, 0
            if not self.buf:
                raise CorruptPageHeader(f"the file ends inside a page header at offset {self.pos}")
        self.pos += 1
        return self.buf[i]

    def varint(self) -> int:
        shift = result = 0
        for _ in range(10):
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise CorruptPageHeader("varint longer than 10 bytes")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise CorruptPageHeader(f"a page header field of {n} bytes runs past the column chunk")
        self.pos += n


def _skip_value(cur: _Cursor, kind: int, depth: int) -> None:
    if depth > 32:
        raise CorruptPageHeader("page header nested too deeply")
    if kind in (_TRUE, _FALSE):
        return
    if kind == _BYTE:
        cur.skip(1)
    elif kind in (_I16, _I32, _I64):
        cur.varint()
    elif kind == _DOUBLE:
        cur.skip(8)
    elif kind == _BINARY:
        cur.skip(cur.varint())
    elif kind in (_LIST, _SET):
        head = cur.byte()
        size, elem = head >> 4, head & 0x0F
        if size == 15:
            size = cur.varint()
        for _ in range(size):
            # booleans inside a list take one byte each
            cur.skip(1) if elem in (_TRUE, _FALSE) else _skip_value(cur, elem, depth + 1)
    elif kind == _MAP:
        size = cur.varint()
        if size:
            types = cur.byte()
            for _ in range(size):
                _skip_value(cur, types >> 4, depth + 1)
                _skip_value(cur, types & 0x0F, depth + 1)
    elif kind == _STRUCT:
        _read_struct(cur, depth + 1, {})
    else:
        raise CorruptPageHeader(f"unknown Thrift compact type {kind}")


def _read_struct(cur: _Cursor, depth: int, wanted: dict[int, Any]) -> dict[int, Any]:
    """Fields of a struct: i32 fields listed in ``wanted`` (value None) are read, a struct field listed
    with a dict of its own wanted fields is read into it; everything else is skipped."""
    found: dict[int, Any] = {}
    field_id = 0
    while True:
        head = cur.byte()
        if head == 0:
            return found
        delta, kind = head >> 4, head & 0x0F
        field_id = field_id + delta if delta else cur.zigzag()
        spec = wanted.get(field_id, False)
        if spec is None and kind == _I32:
            found[field_id] = cur.zigzag()
        elif isinstance(spec, dict) and kind == _STRUCT:
            found[field_id] = _read_struct(cur, depth + 1, spec)
        else:
            _skip_value(cur, kind, depth)


# PageHeader: 2 uncompressed_page_size, 3 compressed_page_size, 5 data_page_header (1 num_values),
# 8 data_page_header_v2 (1 num_values).
_PAGE_HEADER = {2: None, 3: None, 5: {1: None}, 8: {1: None}}


def column_chunk_pages(source: Any, chunk: Any) -> Iterator[Page]:
    """Every page of a column chunk (``pyarrow.parquet.ColumnChunkMetaData``) of an open Parquet file
    (a ``pyarrow.NativeFile``), in file order."""
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    end = start + chunk.total_compressed_size
    pos = start
    while pos < end:
        cur = _Cursor(source, pos, end)
        fields = _read_struct(cur, 0, _PAGE_HEADER)
        if 2 not in fields or 3 not in fields or fields[2] < 0 or fields[3] < 0:
            raise CorruptPageHeader(f"page header at offset {pos} has no valid page sizes")
        data = fields.get(5) or fields.get(8) or {}
        yield Page(pos, fields[2], fields[3], data.get(1))
        pos = cur.pos + fields[3]
