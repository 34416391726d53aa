"""Readers for web archives: ``warc`` (WARC / WARC.gz), ``wet`` (Common Crawl WET) and ``arc`` (ARC v1/v2).

Every reader emits the columns of :class:`~curation.ingest.base.BatchBuilder` plus typed metadata
columns (see each reader). ``record`` is the 0-based position of the record among *all* records of
the file (warcinfo, request, metadata ... included), so ``doc_id`` maps back to the record; records
that are not documents (warcinfo, request, metadata, revisit, ...) produce no row. ``warc_offset`` is
the byte offset of the record in the file: for gzip files, the offset of the gzip member in which
the record starts (the seekable offset of the record when, as is the norm, every record is its own
member; a file compressed as one gzip stream reports that one member's offset for every record).
Files are plain or gzip, recognised by content whatever their name; other compressions (zstd WARCs)
are not read: such a file gives one ``unreadable_file`` row.

Bodies stay bytes in ``content`` with ``text`` null, text/plain included: the extract op decodes
every body the same way (header charset, else sniffed), so nothing is decoded twice or differently.

Library choice. Both were run over the shipped files and damaged copies of them. warcio rejects gzip
files whose members are not records (``example-bad*.warc.gz``, ``example-wrong-chunks.warc.gz``:
valid gzip), stops silently at a corrupt gzip member (the rest of the file is lost without an
error), raises at garbage between records, and cannot read ``IAH-...-blackbook-truncated.arc``.
FastWARC's tolerant mode resynchronises at the next ``WARC/`` line and accepts LF line ends, and it is
the faster parser; it does not de-chunk bodies, does not report truncated records, and in its own
gzip layer positions are unusable for non-aligned members. So FastWARC parses the record framing,
and this module does the rest: gzip member by member in Python's zlib (offsets, and resuming after
a damaged member), checking every record's Content-Length against the bytes that follow it, HTTP
heads, chunked transfer coding and Content-Encoding (gzip, deflate, br, zstd). ARC files are parsed
here (a header line and a length; records need not be newline-separated).

Fast path. A gzip WARC/WET file is first read with FastWARC doing the decompression too
(:func:`fast_scan_warc`), which holds as long as the file is record-aligned (one gzip member per
record, the norm) and undamaged, checked cheaply per record (the member at the record's position
starts with its header, the member's gzip trailer gives header + Content-Length + CRLF CRLF, no
FastWARC error, the last member decompressed again to the end of the file). At the first failed
check the careful path takes over at the record whose row was not emitted yet, as if it had read
the file from the start: the rows are the same as the careful path's alone (one known exception:
see :func:`fast_scan_warc`). Plain files take the careful path, which for them is the plain parse.

Damage, and what cannot be recovered:

* gzip files: a corrupt gzip member, or bytes between members that are not gzip, give one
  ``corrupt_record`` row (offset and zlib's message in ``reason_detail``); reading resumes at the next
  gzip member that starts a record. The records inside the damaged member are lost (and the next
  one too when zlib notices the damage only after reading into it, which is rare). The damaged
  stretch counts as one record, so if it held several, later ``record`` numbers are lower than the
  records' true positions (``warc_offset`` stays exact). A file compressed as a single gzip stream
  has no later member to resume at: everything after the damage is lost. A file that ends inside a
  member (cut download) gives ``truncated_record`` for the record cut short.
* A record followed by bytes other than the CRLF CRLF separator (its Content-Length is too short,
  as in ``edge-cases/example-trunc.warc``, or garbage follows it) becomes ``corrupt_record`` and
  reading resumes at the next ``WARC/`` line. A Content-Length that is too long swallows what
  follows into the body: this is not detected. A WARC header line without a colon is folded into
  the previous header by FastWARC: not detected either.
* A record cut by the end of the file, in its header or its body, is ``truncated_record``; so is a
  record whose header carries ``WARC-Truncated`` (the crawler cut the payload), and a body whose
  chunked or compressed encoding ends early.
* ARC: a malformed record header line gives ``corrupt_record``; reading resumes at the next line
  that parses as an ARC record header (lines in between are skipped).
"""

from __future__ import annotations

import io
import re
import zlib
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, NamedTuple

import pyarrow as pa
from pydantic import Field, field_validator

from curation.ingest.base import BatchBuilder, InputConfig, InputReader, register_reader
from curation.ingest.streams import READ_ERRORS, READ_SIZE

# Column names (in addition to BatchBuilder's own).
URL = "url"
RECORD_ID = "warc_record_id"
DATE = "warc_date"
CONTENT_TYPE = "content_type"
HTTP_STATUS = "http_status"
CHARSET = "charset"
OFFSET = "warc_offset"
CONTENT = "content"

WARC_COLUMNS: dict[str, pa.DataType] = {
    URL: pa.string(), RECORD_ID: pa.string(), DATE: pa.string(), CONTENT_TYPE: pa.string(),
    HTTP_STATUS: pa.int32(), CHARSET: pa.string(), OFFSET: pa.int64(), CONTENT: pa.binary(),
}
WET_COLUMNS: dict[str, pa.DataType] = {
    URL: pa.string(), RECORD_ID: pa.string(), DATE: pa.string(), OFFSET: pa.int64(), CONTENT_TYPE: pa.string(),
}

DEFAULT_CONTENT_TYPES = ["text/html", "application/xhtml+xml", "text/plain"]
_MIME = re.compile(r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")
_WHITESPACE = b" \t\r\n"
_PADDING = _WHITESPACE + b"\0"
_GZIP_MAGIC = b"\x1f\x8b\x08"
# How far the reader looks for the end of a header block, and the HTTP head of an ARC record.
MAX_HEADER = 64 << 10
# Compressed bytes fed to zlib per call: bounds the copies zlib makes of unconsumed input.
FEED_SIZE = 16 << 10
# Compressed bytes tried when looking for the next good gzip member after damage.
PROBE_SIZE = 64 << 10
# Bytes already handed to the parser that stay available for the Content-Length checks.
WINDOW = 1 << 20


# ------------------------------------------------------------------------------------------ config


class ArchiveConfig(InputConfig):
    max_body_bytes: int = Field(10 << 20, gt=0, description="larger bodies (after decoding) become "
                                "`too_large` quarantined rows; the body is not stored")


class DocumentTypesConfig(ArchiveConfig):
    content_types: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTENT_TYPES), min_length=1,
                                     description="mime types (no parameters) whose bodies are documents; "
                                     "other records become `unsupported_content_type` rows")

    @field_validator("content_types")
    @classmethod
    def _mime_types(cls, value: list[str]) -> list[str]:
        out = []
        for mime in value:
            norm = mime.strip().lower()
            if not _MIME.match(norm):
                raise ValueError(f"{mime!r} is not a mime type such as 'text/html' (no parameters, no wildcards)")
            if norm not in out:
                out.append(norm)
        return out


class WarcConfig(DocumentTypesConfig):
    format: Literal["warc"]
    record_types: list[Literal["response", "resource"]] = Field(
        default_factory=lambda: ["response", "resource"], min_length=1,
        description="WARC record types that hold documents: response (HTTP) and resource (a bare body)")


class WetConfig(ArchiveConfig):
    format: Literal["wet"]


class ArcConfig(DocumentTypesConfig):
    format: Literal["arc"]


# ----------------------------------------------------------------------------------------- streams


@dataclass
class Damage:
    """Where and how a file's bytes broke. ``pos``: position in the (decompressed) stream where the
    good bytes end; ``offset``: byte offset in the file."""

    reason: str
    detail: str
    offset: int
    pos: int
    claimed: bool = False  # a record's row already reports it
    resumable: bool = True


class ArchiveStream(io.RawIOBase):
    """The bytes of an archive as the parser reads them, plus what the readers need to find damage:
    ``tell()`` is the position in the (decompressed) stream, the last :data:`WINDOW` bytes handed out
    stay available (:meth:`header_block`, :meth:`span`, :meth:`blank_from`), and read errors become a :class:`Damage`
    with an end of stream instead of an exception inside the C++ parser."""

    def __init__(self, raw: Any, first: bytes):
        self._raw = raw
        self._first = first
        self._pos = 0
        self._chunks: deque[tuple[int, bytes]] = deque()
        self._kept = 0
        self.at_eof = False
        self.damage: Damage | None = None

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = READ_SIZE
        if self.damage is not None or n == 0:
            return b""
        try:
            data = self._next(n)
        except READ_ERRORS as exc:
            self.damage = Damage("unreadable_file", f"{type(exc).__name__}: {exc}", self.offset_of(self._pos),
                                 self._pos, resumable=False)
            return b""
        if data:
            self._chunks.append((self._pos, data))
            self._kept += len(data)
            self._pos += len(data)
            while len(self._chunks) > 2 and self._kept - len(self._chunks[0][1]) >= WINDOW:
                self._kept -= len(self._chunks.popleft()[1])
        else:
            self.at_eof = self.damage is None
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _raw_read(self) -> bytes:
        if self._first:
            data, self._first = self._first, b""
            return data
        return self._raw.read(READ_SIZE)

    def _next(self, n: int) -> bytes:
        raise NotImplementedError

    def offset_of(self, pos: int) -> int:
        """Byte offset in the file of the stream position ``pos`` (its gzip member for .gz files)."""
        return pos

    def resume(self) -> bool:
        """After damage: skip to the next place a record can start. False where none can be found."""
        return False

    # -- the window of recent bytes

    def _chunk_at(self, pos: int) -> int | None:
        for i in range(len(self._chunks) - 1, -1, -1):
            start = self._chunks[i][0]
            if start <= pos:
                return i if pos < start + len(self._chunks[i][1]) else None
        return None

    def header_block(self, start: int) -> tuple[int, int, bytes] | None:
        """Where the header block that the parser found at ``start`` really begins (its ``WARC/``
        line: the parser reports where it started looking, so bytes it skipped come first), the
        position just after the blank line that ends it, and the (up to) 4 bytes before it. None
        when that is not in the window."""
        i = self._chunk_at(start)
        if i is None:
            return None
        base, data = self._chunks[i]
        off = start - base
        while True:
            line = off if data.startswith(b"WARC/", off) else data.find(b"WARC/", off)
            if line >= 0:
                end = _blank_line_end(data, line)
                if end is not None:
                    return base + line, base + end, data[max(0, line - 4):line]
            i += 1
            if i >= len(self._chunks):
                return None
            data = data[off:] + self._chunks[i][1]  # across two reads: rare
            base, off = start, 0

    def span(self, start: int, end: int) -> bytes | None:
        """Bytes [start, end) if they are still in the window."""
        if start >= end:
            return b""
        i = self._chunk_at(start)
        if i is None or end > self._pos:
            return None
        base, data = self._chunks[i]
        if end <= base + len(data):
            return data[start - base:end - base]
        parts = [data[start - base:]]
        for j in range(i + 1, len(self._chunks)):
            base, data = self._chunks[j]
            parts.append(data[:end - base])
            if end <= base + len(data):
                break
        return b"".join(parts)

    def skip_to(self, pos: int) -> None:
        """Read on (keeping the window) until the stream position reaches ``pos`` or the end."""
        while self._pos < pos and self.read(min(READ_SIZE, pos - self._pos)):
            pass

    def blank_from(self, pos: int) -> int | None:
        """Position of the first byte at or after ``pos`` that is not whitespace or NUL, reading on to
        the end of the stream if needed; None if there is none (nothing but padding left)."""
        if pos < self._pos:
            seen = self.span(pos, self._pos)
            if seen is None:
                return pos
            rest = seen.lstrip(_PADDING)
            if rest:
                return self._pos - len(rest)
        while True:
            start = self._pos
            data = self.read(READ_SIZE)
            if not data:
                return None if self.damage is None else self.damage.pos
            rest = data.lstrip(_PADDING)
            if rest:
                return start + len(data) - len(rest)


def _blank_line_end(data: bytes, off: int) -> int | None:
    """End of the first empty line (LF LF or LF CR LF) at or after ``off``."""
    crlf = data.find(b"\n\r\n", off)
    limit = crlf if crlf >= 0 else len(data)
    lf = data.find(b"\n\n", off, limit + 1)
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else None


class PlainStream(ArchiveStream):
    """An uncompressed file, read from the filesystem in :data:`READ_SIZE` pieces."""

    def __init__(self, raw: Any, first: bytes):
        super().__init__(raw, first)
        self._buf = b""
        self._at = 0

    def _next(self, n: int) -> bytes:
        if self._at >= len(self._buf):
            self._buf, self._at = self._raw_read(), 0
        data = self._buf[self._at:self._at + n]
        self._at += len(data)
        return data


class GzipStream(ArchiveStream):
    """Multi-member gzip, decompressed member by member so that every stream position maps to the
    file offset of its member, and so that reading can resume after a damaged member.

    ``offset``/``pos``: where ``first`` starts, in the file and in the decompressed stream; the fast
    path hands over in the middle of a file (at a member start) with the positions the stream would
    have reached reading from the start, so that what is reported is the same."""

    def __init__(self, raw: Any, first: bytes, starts_record: Callable[[bytes], bool], offset: int = 0,
                 pos: int = 0):
        super().__init__(raw, first)
        self._pos = pos
        self._starts_record = starts_record
        self._buf = b""           # compressed bytes read from the file
        self._at = 0              # next unconsumed byte of _buf
        self._buf_offset = offset  # file offset of _buf[0]
        self._first_offset = offset
        self._raw_eof = False
        self._inflate: Any = None  # zlib decompressor of the member being read; None between members
        self._member = 0          # file offset of that member
        self._members: deque[tuple[int, int]] = deque()  # (stream position, file offset) of member starts

    def offset_of(self, pos: int) -> int:
        members = self._members
        while len(members) > 1 and members[1][0] <= pos:
            members.popleft()
        return members[0][1] if members and members[0][0] <= pos else self._first_offset

    def _load(self, keep_from: int) -> bool:
        """Drop _buf before ``keep_from`` and append the next read. False at end of file."""
        if self._raw_eof:
            return False
        data = self._raw_read()
        if not data:
            self._raw_eof = True
            return False
        self._buf_offset += keep_from
        self._buf = self._buf[keep_from:] + data if keep_from < len(self._buf) else data
        self._at -= keep_from
        return True

    def _available(self, n: int) -> bool:
        while len(self._buf) - self._at < n:
            if not self._load(self._at):
                return len(self._buf) > self._at
        return True

    def _damaged(self, reason: str, detail: str, offset: int) -> None:
        self.damage = Damage(reason, detail, offset, self._pos)
        self._inflate = None

    def _next(self, n: int) -> bytes:
        while self.damage is None:
            if self._inflate is None and not self._start_member():
                return b""
            if self._at >= len(self._buf) and not self._load(len(self._buf)):
                self._damaged("truncated_record", f"the file ends inside the gzip member at offset {self._member}",
                              self._member)
                return b""
            view = memoryview(self._buf)[self._at:self._at + FEED_SIZE]
            try:
                out = self._inflate.decompress(view, n)
            except zlib.error as exc:
                self._damaged("corrupt_record", f"corrupt gzip member at offset {self._member}: {exc}", self._member)
                return b""
            if self._inflate.eof:
                self._at += len(view) - len(self._inflate.unused_data)
                self._inflate = None
            else:
                self._at += len(view) - len(self._inflate.unconsumed_tail)
            if out:
                return out
        return b""

    def _start_member(self) -> bool:
        """At a member boundary: skip padding; start the next member. False at the end or on damage."""
        while True:
            if not self._available(1):
                return False
            if self._buf[self._at] not in _PADDING:
                break
            rest = self._buf[self._at:self._at + 4096]
            self._at += len(rest) - len(rest.lstrip(_PADDING))
        offset = self._buf_offset + self._at
        self._available(len(_GZIP_MAGIC))
        if not self._buf.startswith(_GZIP_MAGIC, self._at):
            self._damaged("corrupt_record", f"bytes at offset {offset} are not a gzip member: "
                          f"{bytes(self._buf[self._at:self._at + 16])!r}", offset)
            return False
        self._inflate = zlib.decompressobj(31)
        self._member = offset
        self._members.append((self._pos, offset))
        return True

    def resume(self) -> bool:
        damage = self.damage
        if damage is None or not damage.resumable:
            return damage is None
        self.damage = None
        self._inflate = None
        # Look from just after the start of the damage, as far back as the buffer still reaches: zlib
        # may notice a bad member only after reading into the next one.
        pos = min(max(damage.offset + 1 - self._buf_offset, 0), len(self._buf))
        while True:
            found = self._buf.find(_GZIP_MAGIC, pos)
            if found < 0:
                keep = max(pos, len(self._buf) - (len(_GZIP_MAGIC) - 1))
                self._at = keep
                if not self._load(keep):
                    self.at_eof = True
                    return False
                pos = 0
                continue
            if self._probe(found):
                return True
            pos = self._at + 1

    def _probe(self, index: int) -> bool:
        """Does a gzip member that starts a record begin at _buf[index]? Leaves _at on it."""
        self._at = index
        while len(self._buf) - self._at < PROBE_SIZE and self._load(self._at):
            pass
        try:
            head = zlib.decompressobj(31).decompress(self._buf[self._at:self._at + PROBE_SIZE], 4096)
        except zlib.error:
            return False
        return self._starts_record(head)


def open_archive(filesystem: Any, path: str, starts_record: Callable[[bytes], bool]) -> ArchiveStream:
    """Open ``path`` as an :class:`ArchiveStream`; gzip is recognised by its magic bytes, whatever
    the file is called. Raises one of READ_ERRORS when the file cannot be opened."""
    raw = filesystem.open_input_stream(path, compression=None)
    try:
        first = raw.read(READ_SIZE)
    except BaseException:
        raw.close()
        raise
    if first.startswith(_GZIP_MAGIC[:2]):
        return GzipStream(raw, first, starts_record)
    return PlainStream(raw, first)


def _starts_warc(head: bytes) -> bool:
    return head.startswith(b"WARC/")


# ------------------------------------------------------------------------------------- HTTP bodies


class BodyError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_content_type(value: str | None) -> tuple[str | None, str | None]:
    """``'text/html; charset="UTF-8"'`` → ``('text/html', 'utf-8')``; missing parts are None."""
    if not value:
        return None, None
    mime, _, params = value.partition(";")
    charset = None
    if params:
        for param in params.split(";"):
            key, _, val = param.partition("=")
            if key.strip().lower() == "charset":
                charset = val.strip().strip("\"'").strip().lower() or None
                break
    return mime.strip().lower() or None, charset


_STATUS_LINE = re.compile(rb"HTTP/\d+(?:\.\d+)?[ \t]+(\d{3})(?:\s|$)")


class HttpHead(NamedTuple):
    status: int
    content_type: str | None
    transfer_encoding: str | None
    content_encoding: str | None
    length: int  # bytes of the status line, headers and blank line: the body starts here


def parse_http_head(block: bytes) -> HttpHead | str:
    """The parts of an HTTP response head that the readers use, or why there is no valid head.
    Accepts LF as well as CRLF line ends; the first of repeated headers wins."""
    if not block[:256].strip() and not block.strip():
        return "the record holds no HTTP response"
    end = _blank_line_end(block, 0)
    if end is None:
        end = len(block)  # a head without the blank line, and no body
    eol = block.find(b"\n", 0, end)
    status_line = block[:eol if eol >= 0 else end].strip()
    match = _STATUS_LINE.match(status_line)
    if not match:
        return f"no valid HTTP status line: {status_line[:200]!r}"
    head = block[eol:end].lower() if eol >= 0 else b""
    return HttpHead(int(match.group(1)), _header(head, b"\ncontent-type:"), _header(head, b"\ntransfer-encoding:"),
                    _header(head, b"\ncontent-encoding:"), end)


def _header(head: bytes, name: bytes) -> str | None:
    at = head.find(name)
    if at < 0:
        return None
    at += len(name)
    eol = head.find(b"\n", at)
    return head[at:eol if eol >= 0 else len(head)].strip().decode("latin-1")


_HEX = re.compile(rb"[0-9a-fA-F]+")


def dechunk(body: bytes, limit: int) -> bytes:
    """Undo HTTP chunked transfer coding. A body that does not start with a chunk-size line was
    stored already de-chunked by the crawler (the header kept) and is returned as it is."""
    parts, pos, total, end = [], 0, 0, len(body)
    while True:
        eol = body.find(b"\n", pos, pos + 1024)
        size_field = body[pos:eol if eol >= 0 else pos + 1024].split(b";", 1)[0].strip()
        if eol < 0 or not _HEX.fullmatch(size_field):
            if pos == 0:  # not chunked after all: the crawler stored the body de-chunked
                return body
            if not body[pos:].strip():  # the final 0-size chunk is missing: accept what came
                break
            raise BodyError("bad_content_encoding", f"malformed chunked transfer coding: no chunk size at byte {pos}")
        size = int(size_field, 16)
        if size == 0:
            break
        start = eol + 1
        if start + size > end:
            if pos == 0:
                return body
            raise BodyError("truncated_record", f"chunked body: a chunk of {size} bytes at byte {start} runs past "
                            f"the end of the body ({end} bytes)")
        total += size
        if total > limit:
            raise BodyError("too_large", f"chunked body holds more than max_body_bytes={limit} bytes")
        parts.append(body[start:start + size])
        pos = start + size
        if body.startswith(b"\r\n", pos):
            pos += 2
        elif body.startswith(b"\n", pos):
            pos += 1
        elif pos < end:
            raise BodyError("bad_content_encoding", f"malformed chunked transfer coding: chunk at byte {start} "
                            "is not followed by a line end")
    return b"".join(parts)


def decode_content(body: bytes, encodings: str, limit: int) -> bytes:
    """Undo Content-Encoding (``gzip``, ``deflate``, ``br``, ``zstd``, stacked right to left). Some
    crawlers store bodies decoded but keep the header: a body said to be gzip without the gzip magic,
    or one that fails to decode but starts like markup, is kept as it is."""
    for enc in reversed([e.strip().lower() for e in encodings.split(",")]):
        if enc in ("", "identity", "none"):
            continue
        if enc in ("gzip", "x-gzip"):
            if body.startswith(b"\x1f\x8b"):
                body = _inflate(body, 31, limit, enc)
            continue
        try:
            if enc == "deflate":
                try:
                    body = _inflate(body, 15, limit, enc)
                except BodyError as exc:
                    if exc.reason != "bad_content_encoding":
                        raise
                    body = _inflate(body, -15, limit, enc)  # raw deflate, as some servers send
            elif enc == "br":
                body = _unbrotli(body, limit)
            elif enc in ("zstd", "x-zstd"):
                body = _unzstd(body, limit)
            else:
                raise BodyError("bad_content_encoding", f"unsupported Content-Encoding {enc!r}")
        except BodyError as exc:
            if exc.reason != "bad_content_encoding" or not body[:64].lstrip().startswith(b"<"):
                raise
    return body


def _inflate(body: bytes, wbits: int, limit: int, name: str) -> bytes:
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BodyError("bad_content_encoding", f"Content-Encoding {name}: {exc}") from None
    if len(out) > limit:
        raise BodyError("too_large", f"decoded body holds more than max_body_bytes={limit} bytes")
    if not d.eof:
        raise BodyError("truncated_record", f"Content-Encoding {name}: the compressed body is cut short")
    return out


def _unbrotli(body: bytes, limit: int) -> bytes:
    try:
        import brotli
    except ImportError:  # pragma: no cover - brotli comes with fastwarc
        raise BodyError("bad_content_encoding", "Content-Encoding br: the brotli module is not installed") from None
    d = brotli.Decompressor()
    try:
        out = d.process(body, output_buffer_limit=limit + 1)
    except brotli.error as exc:
        raise BodyError("bad_content_encoding", f"Content-Encoding br: {exc}") from None
    if len(out) > limit:
        raise BodyError("too_large", f"decoded body holds more than max_body_bytes={limit} bytes")
    if not d.is_finished():
        raise BodyError("truncated_record", "Content-Encoding br: the compressed body is cut short")
    return out


def _unzstd(body: bytes, limit: int) -> bytes:
    import zstandard

    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
            out = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise BodyError("bad_content_encoding", f"Content-Encoding zstd: {exc}") from None
    if len(out) > limit:
        raise BodyError("too_large", f"decoded body holds more than max_body_bytes={limit} bytes")
    return out


def decode_body(body: bytes, transfer: str | None, encoding: str | None, limit: int) -> bytes:
    if transfer and "chunked" in transfer.lower():
        body = dechunk(body, limit)
    if encoding:
        body = decode_content(body, encoding, limit)
    if len(body) > limit:
        raise BodyError("too_large", f"body holds more than max_body_bytes={limit} bytes")
    return body


# --------------------------------------------------------------------------------- the WARC reading


@dataclass
class Row:
    record: int
    extra: dict[str, Any]
    text: str | None = None
    reason: str | None = None
    detail: str | None = None

    def fail(self, reason: str, detail: str) -> None:
        self.reason, self.detail, self.text = reason, detail, None
        if CONTENT in self.extra:
            self.extra[CONTENT] = None


class _Pending:
    """The last record seen: its row is held back until what follows it has been checked."""

    __slots__ = ("record", "row", "offset", "rec", "end", "end_sep", "short")

    def __init__(self, record: int, row: Row | None, offset: int, rec: Any, end: int | None):
        self.record, self.row, self.offset, self.rec = record, row, offset, rec
        self.end = end  # stream position where its block ends (None: unknown)
        self.end_sep = end + 4 if end is not None else -1  # where the next record starts, after CRLF CRLF
        self.short = row is not None and row.reason == "truncated_record"  # cut by the end of the stream


def _warc_meta(rec: Any, offset: int, head: bytes | None) -> dict[str, Any]:
    """The columns every record row carries. ``head``: the raw WARC header block when at hand
    (looking names up in it is several times faster than FastWARC's header map)."""
    if head is not None:
        lower = head.lower()
        url = _raw_header(head, lower, b"\nwarc-target-uri:")
        record_id = _raw_header(head, lower, b"\nwarc-record-id:")
        date = _raw_header(head, lower, b"\nwarc-date:")
    else:
        headers = rec.headers
        url, record_id, date = headers.get("WARC-Target-URI"), headers.get("WARC-Record-ID"), headers.get("WARC-Date")
    if url and url.startswith("<") and url.endswith(">"):  # WARC/1.0 grammar, as wget writes it
        url = url[1:-1]
    return {URL: url, RECORD_ID: record_id, DATE: date, OFFSET: offset}


def _raw_header(head: bytes, lower: bytes, name: bytes) -> str | None:
    """The value of header ``name`` (lower case, with the leading newline and the colon)."""
    at = lower.find(name)
    if at < 0:
        return None
    at += len(name)
    eol = lower.find(b"\n", at)
    return head[at:eol if eol >= 0 else len(head)].strip().decode("utf-8", "replace")


def _warc_header(rec: Any, head: bytes | None, name: str) -> str | None:
    if head is None:
        return rec.headers.get(name)
    return _raw_header(head, head.lower(), b"\n" + name.lower().encode() + b":")


def scan_warc(stream: ArchiveStream, convert: Callable[[Any, int, int, bytes | None], Row | None],
              columns: dict[str, pa.DataType], first_index: int = 0) -> Iterator[Row]:
    """Run FastWARC over ``stream`` and yield one row per document record (``convert(record, index,
    offset, raw WARC header block or None)`` makes it, or returns None for records that are not
    documents), plus the rows that report damage. ``first_index``: the index of the first record,
    when the stream starts at a record in the middle of the file (taking over from the fast path,
    which has emitted the rows of every record before it)."""
    from fastwarc.stream_io import FastWARCError
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    index = first_index
    pending: _Pending | None = None  # the last record seen; its row waits until what follows is checked
    seen_any = first_index > 0

    def settle(p: _Pending, reason: str | None = None, detail: str = "") -> Iterator[Row]:
        row = p.row
        if reason:
            if row is None:  # a record that is no document (a request, say) is damaged: report it too
                meta = _warc_meta(p.rec, p.offset, None)
                row = Row(p.record, {c: meta[c] for c in columns if c in meta})
            row.fail(reason, detail)
        if row is not None:
            yield row

    header_block, offset_of, span = stream.header_block, stream.offset_of, stream.span
    while True:
        iterator = ArchiveIterator(stream, record_types=WarcRecordType.any_type, parse_http=False,
                                   strict_mode=False)
        parser_error = None
        try:
            for rec in iterator:
                start, head_end, before = header_block(rec.stream_pos) or (rec.stream_pos, None, b"")
                if pending is not None:
                    if start == pending.end_sep and before == b"\r\n\r\n":  # the usual case: nothing to check
                        gap = None
                    else:
                        gap = _gap(stream, pending, start)
                    if gap:
                        yield from settle(pending, "corrupt_record", gap)
                    elif pending.row is not None:
                        yield pending.row
                elif start > rec.stream_pos and (stream.span(rec.stream_pos, start) or b"?").strip(_WHITESPACE):
                    at = stream.offset_of(rec.stream_pos)
                    yield Row(index, {OFFSET: at}, reason="corrupt_record", detail=f"{start - rec.stream_pos} "
                              f"unparsable bytes at offset {at}, before the next record")
                    index += 1
                seen_any = True
                offset = offset_of(start)
                length = rec.content_length  # the WARC Content-Length (HTTP heads are parsed here, later)
                if head_end is None and stream.at_eof and stream.span(start, start + 1):
                    # no blank line after the header before the end of the file: the header is cut
                    pending = None
                    yield Row(index, {OFFSET: offset}, reason="truncated_record",
                              detail=f"the record header at offset {offset} is cut off by the end of the file")
                    index += 1
                    continue
                row = convert(rec, index, offset, span(start, head_end) if head_end is not None else None)
                pending = _Pending(index, row, offset, rec,
                                   head_end + length if head_end is not None and length is not None else None)
                index += 1
        except (FastWARCError, *READ_ERRORS) as exc:
            parser_error = f"{type(exc).__name__}: {exc}"

        problem = None
        if parser_error is None and stream.damage is None:
            # The parser reached the end of its input: what follows the last record must be padding.
            after = (pending.end if pending is not None else None) if seen_any else 0
            if after is not None:
                stream.skip_to(after)
                if stream.tell() >= after:
                    problem = stream.blank_from(after)

        damage = stream.damage
        if damage is not None:
            if pending is not None and (pending.short or (pending.end is not None and pending.end > damage.pos)):
                damage.claimed = True
                yield from settle(pending, damage.reason, damage.detail)
            elif pending is not None:
                yield from settle(pending)
            pending = None
            if not damage.claimed:
                yield Row(index, {OFFSET: damage.offset}, reason=damage.reason, detail=damage.detail)
                index += 1
            if stream.resume():
                continue
            return
        if pending is not None and pending.end is not None and pending.end > stream.tell() and not pending.short:
            yield from settle(pending, "truncated_record", f"the file ends {pending.end - stream.tell()} bytes "
                              f"before the end of the record at offset {pending.offset}")
            return
        if parser_error is not None and not seen_any:
            problem = stream.blank_from(0)
            if problem is None:  # an empty file: no records, nothing wrong
                return
            parser_error = None  # nothing WARC-like at all: reported below as unreadable_file
        if parser_error is not None or problem is None:
            if pending is not None:
                yield from settle(pending)
            if parser_error is not None:
                at = stream.offset_of(stream.tell())
                yield Row(index, {OFFSET: at}, reason="corrupt_record",
                          detail=f"the WARC parser stopped near offset {at}: {parser_error}")
            return
        snippet = stream.span(problem, min(problem + 64, stream.tell())) or b""
        at = stream.offset_of(problem)
        if not seen_any:
            yield Row(0, {OFFSET: at}, reason="unreadable_file",
                      detail=f"no WARC record found: the data at offset {at} starts with {snippet[:32]!r}")
        elif snippet.startswith(b"WARC/"):
            assert pending is not None
            yield from settle(pending)
            yield Row(index, {OFFSET: at}, reason="truncated_record",
                      detail=f"the record header at offset {at} is cut off by the end of the file")
        else:
            assert pending is not None
            yield from settle(pending, "corrupt_record",
                              f"unparsable bytes follow the record at offset {pending.offset} (stream position "
                              f"{problem}): {snippet[:32]!r}; is its Content-Length wrong?")
        return


def _gap(stream: ArchiveStream, pending: _Pending, start: int) -> str | None:
    """Why the bytes between the end of the pending record and the next record (at ``start``) are not
    just the record separator, or None if they are."""
    if pending.end is None or start <= pending.end:
        return None
    between = stream.span(pending.end, start)
    if between == b"\r\n\r\n":
        return None
    if between is not None and not between.strip(_WHITESPACE):
        return None
    shown = repr(between[:32]) if between is not None else "(not kept)"
    return (f"{start - pending.end} unexpected bytes follow the record at offset {pending.offset}, "
            f"starting {shown}: its Content-Length is wrong or garbage follows it; reading resumed at the next record")


# ---------------------------------------------------------------------------------- the fast path


# Tests set this to False to read every file the careful way only.
FAST_PATH = True
# Per process: "fast" counts gzip files the fast path read to the end; "careful" the files it handed
# over to the careful path ("careful_at_start": before emitting any row).
fast_path_counts: Counter[str] = Counter()
# Compressed bytes the tap keeps back to the start of the pending record's member, at most; past
# this (a huge record) a hand-over reads the file again up to that member instead.
TAP_KEEP = 32 << 20
# Compressed bytes looked at first for the WARC header at the start of a gzip member, and the
# decompressed bytes asked for per step (most WARC headers fit in one).
HEAD_PROBE = 1024
HEAD_STEP = 1024


class _Tap:
    """The compressed bytes of a gzip file as FastWARC's gzip layer reads them (``read``/``tell``,
    what its Python stream adapter calls), read from the file in :data:`READ_SIZE` pieces. The bytes
    from :attr:`keep` on stay at hand (the last two pieces at least, :data:`TAP_KEEP` at most): the
    fast path looks there at member starts and trailers, and the careful path takes over from there."""

    def __init__(self, raw: Any, first: bytes):
        self.raw = raw
        self.keep = 0
        self.at_eof = False
        self._chunks: deque[tuple[int, bytes]] = deque()  # (file offset, bytes), contiguous
        self._kept = 0
        self._end = 0     # file offset just past the bytes read from the file
        self._served = 0  # bytes handed to FastWARC
        if first:
            self._add(first)

    def read(self, n: int = -1) -> bytes:
        if self._served >= self._end and not self.more():
            return b""
        base, data = self._chunks[-1]  # everything before the last piece has been handed out
        at = self._served - base
        out = data if at == 0 and (n < 0 or n >= len(data)) else data[at:at + n if n >= 0 else len(data)]
        self._served += len(out)
        return out

    def tell(self) -> int:
        return self._served

    def close(self) -> None:
        pass  # the reader closes the file

    def more(self) -> bool:
        """Read the next piece of the file. False at its end."""
        if self.at_eof:
            return False
        data = self.raw.read(READ_SIZE)
        if not data:
            self.at_eof = True
            return False
        self._add(data)
        return True

    def _add(self, data: bytes) -> None:
        chunks = self._chunks
        chunks.append((self._end, data))
        self._end += len(data)
        self._kept += len(data)
        while len(chunks) > 2 and (chunks[1][0] <= self.keep or self._kept - len(chunks[0][1]) >= TAP_KEEP):
            self._kept -= len(chunks.popleft()[1])

    def get(self, pos: int, n: int) -> bytes:
        """Up to ``n`` bytes from file offset ``pos``, as far as read so far; b"" when not at hand."""
        chunks = self._chunks
        for i in range(len(chunks) - 1, -1, -1):
            base, data = chunks[i]
            if base <= pos:
                out = data[pos - base:pos - base + n]
                if len(out) < n and i + 1 < len(chunks):
                    out += chunks[i + 1][1][:n - len(out)]
                return out
        return b""

    def kept_from(self, pos: int) -> bytes | None:
        """Every byte read from offset ``pos`` on; None if they are no longer all kept."""
        if not self._chunks or self._chunks[0][0] > pos:
            return None
        return b"".join(data[max(0, pos - base):] for base, data in self._chunks if base + len(data) > pos)


def _member_head(tap: _Tap, pos: int) -> bytes | None:
    """The WARC header block (``WARC/`` line to blank line, as :meth:`ArchiveStream.header_block`
    takes it) that the gzip member at file offset ``pos`` starts with, or None if it starts with
    anything else, is not gzip, or is not at hand."""
    data = tap.get(pos, HEAD_PROBE)
    if not data.startswith(_GZIP_MAGIC):
        return None
    d = zlib.decompressobj(31)
    out = b""
    at = pos
    try:
        while True:
            out += d.decompress(data, HEAD_STEP)
            if not out.startswith(b"WARC/"[:len(out)]):
                return None
            end = _blank_line_end(out, 0)
            if end is not None:
                return out[:end] if end > 5 else None
            if d.eof or len(out) >= MAX_HEADER:
                return None
            at += len(data) - len(d.unconsumed_tail)
            data = d.unconsumed_tail or tap.get(at, 8 * HEAD_PROBE)
            if not data:
                return None
    except zlib.error:
        return None


def _head_length_field(head: bytes) -> int | None:
    """The Content-Length of a raw WARC header block: the first such header, digits only."""
    at = head.lower().find(b"\ncontent-length:")
    if at < 0:
        return None
    at += 16
    eol = head.find(b"\n", at)
    value = head[at:eol if eol >= 0 else len(head)].strip()
    return int(value) if value.isdigit() else None


def _last_member_ok(tap: _Tap, pos: int, size: int) -> bool:
    """Is everything from file offset ``pos`` to the end of the file one gzip member that holds
    ``size`` bytes (header and block) and then nothing but padding? (What the careful path checks at
    the end of a file: a member cut short, bytes after the record, a record cut short.)"""
    d = zlib.decompressobj(31)
    seen = 0
    at = pos
    while not d.eof:
        comp = tap.get(at, FEED_SIZE)
        if not comp:
            if tap.more():
                continue
            return False  # the file ends inside the member
        data = comp
        while True:
            out = d.decompress(data, READ_SIZE)
            if seen + len(out) > size and out[max(0, size - seen):].strip(_PADDING):
                return False
            seen += len(out)
            data = d.unconsumed_tail
            if not data or d.eof:
                break
        at += len(comp) - len(d.unused_data)
    if seen < size or d.unused_data or tap.get(at, 1):
        return False
    return not tap.more()


def fast_scan_warc(tap: _Tap, convert: Callable[[Any, int, int, bytes | None], Row | None]
                   ) -> Iterator[Row]:
    """The rows of a record-aligned gzip WARC (one gzip member per record, as every common writer
    makes them) with FastWARC doing the decompression itself, as a bare FastWARC loop does. They are
    the rows :func:`scan_warc` makes of the same file (same ``convert``, same raw header block, same
    offsets and record numbers) as long as these checks hold; they look at a few bytes per record
    and never at the decompressed stream:

    * every record's ``stream_pos`` is a gzip member start (the first at offset 0, then increasing)
      whose decompressed bytes start with a WARC header block (decompressed here, ~1 KiB: the raw
      header ``convert`` gets) that has CRLF line ends only (so that FastWARC's strict mode, used
      here, parses it as the careful path's tolerant mode does) and the Content-Length FastWARC
      read. FastWARC reports the compressed position at which it started a record, which is the
      record's member only when the record begins its member: a record that starts inside a member
      gets the start of a later member, and one of these checks fails, then or at a later record;
    * the gzip trailer of that member (its last 4 bytes, just before the next record's member)
      gives its decompressed size as exactly header + Content-Length + 4 (CRLF CRLF): nothing else
      is in the member (a wrong Content-Length, bytes after the record, a second record);
    * FastWARC raised nothing (a corrupt member, bytes between members that are not gzip, a read
      error) and did not stop early: in strict mode it stops at bytes that are not a record, where
      its tolerant mode would skip to the next ``WARC/`` line, possibly over a whole record;
    * the last record's member is decompressed again here to the end of the file: it must end,
      hold the record and then only padding, and be followed by nothing.

    A record's row is held back until the next record (or the end of the file) has passed them.
    When a check fails, the generator returns ``(index, offset, pos)`` of the record whose row is
    held back (or of the first record, at offset 0): its record number, the file offset of its
    member, and the position of that member in the decompressed stream (the sum of the sizes of all
    members before it). The careful path takes over there: :class:`GzipStream` starts at that offset
    and position, :func:`scan_warc` at that record number. Every row emitted before is kept, none is
    emitted twice, and the careful path reports from there on what it would have reported reading
    the whole file, since it would have found everything before as the fast path did (stream
    positions in ``reason_detail`` included). Returns None when the whole file was read.

    Known difference: a CRLF CRLF separator replaced by 4 bytes of white space that include a
    vertical tab or form feed is skipped by FastWARC (C ``isspace``) while the careful path reports
    ``corrupt_record``; the fast path cannot see those bytes."""
    from fastwarc.stream_io import FastWARCError, GZipStream
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    index = pos = 0
    pending: tuple[Row | None, int, int] | None = None  # (row, member offset, member size) of the last record
    start = (0, 0, 0)  # where the careful path takes over: (record index, file offset, stream position)
    try:
        for rec in ArchiveIterator(GZipStream(tap), record_types=WarcRecordType.any_type, parse_http=False,
                                   strict_mode=True):
            offset = rec.stream_pos
            length = rec.content_length
            head = _member_head(tap, offset)
            if head is None or _head_length_field(head) != length or head.count(b"\n") != head.count(b"\r\n"):
                return start
            if pending is not None:
                row, before, size = pending
                trailer = tap.get(offset - 4, 4)
                if offset <= before or len(trailer) < 4 or int.from_bytes(trailer, "little") != size & 0xFFFFFFFF:
                    return start
                if row is not None:
                    yield row
                index += 1
                pos += size
            elif offset != 0:
                return start
            tap.keep = offset
            start = (index, offset, pos)
            pending = (convert(rec, index, offset, head), offset, len(head) + length + 4)
        if pending is None or not _last_member_ok(tap, pending[1], pending[2] - 4):
            return start
    except (FastWARCError, *READ_ERRORS):
        return start
    if pending[0] is not None:
        yield pending[0]
    return None


def _warc_rows(path: str, filesystem: Any, raw: Any, first: bytes,
               convert: Callable[[Any, int, int, bytes | None], Row | None],
               columns: dict[str, pa.DataType]) -> Iterator[Row]:
    """The rows of a WARC file whose first bytes have been read: :func:`fast_scan_warc` for gzip
    files, then :func:`scan_warc` from where it stopped (if it did); :func:`scan_warc` only for
    plain files. Closes the file."""
    opened = [raw]
    try:
        if not first.startswith(_GZIP_MAGIC[:2]):
            yield from scan_warc(PlainStream(raw, first), convert, columns)
            return
        if FAST_PATH:
            tap = _Tap(raw, first)
            stop = yield from fast_scan_warc(tap, convert)
            if stop is None:
                fast_path_counts["fast"] += 1
                return
            fast_path_counts["careful"] += 1
            index, offset, pos = stop
            if offset == 0:
                fast_path_counts["careful_at_start"] += 1
            first = tap.kept_from(offset)  # type: ignore[assignment]
            if first is None:  # a huge record: read the file again up to it
                first = b""
                raw.close()
                try:
                    raw = filesystem.open_input_stream(path, compression=None)
                    opened.append(raw)
                    skip = offset
                    while skip > 0:
                        data = raw.read(min(READ_SIZE, skip))
                        if not data:
                            raise EOFError(f"the file is shorter than {offset} bytes on a second read")
                        skip -= len(data)
                except READ_ERRORS as exc:
                    yield Row(index, {OFFSET: offset}, reason="unreadable_file", detail=f"{type(exc).__name__}: {exc}")
                    return
        else:
            index = offset = pos = 0
        yield from scan_warc(GzipStream(raw, first, _starts_warc, offset, pos), convert, columns, index)
    finally:
        for stream in opened:
            stream.close()


# ------------------------------------------------------------------------------------------ readers


def _read_archive(path: str, filesystem: Any, builder: BatchBuilder, starts_record: Callable[[bytes], bool],
                  rows: Callable[[ArchiveStream], Iterator[Row]]) -> Iterator[pa.Table]:
    try:
        stream = open_archive(filesystem, path, starts_record)
    except READ_ERRORS as exc:
        builder.quarantine(0, "unreadable_file", f"{type(exc).__name__}: {exc}")
        yield builder.flush()
        return
    with stream:
        yield from _batches(builder, rows(stream))


def _read_warc_file(path: str, filesystem: Any, builder: BatchBuilder,
                    convert: Callable[[Any, int, int, bytes | None], Row | None],
                    columns: dict[str, pa.DataType]) -> Iterator[pa.Table]:
    try:
        raw = filesystem.open_input_stream(path, compression=None)
        try:
            first = raw.read(READ_SIZE)
        except BaseException:
            raw.close()
            raise
    except READ_ERRORS as exc:
        builder.quarantine(0, "unreadable_file", f"{type(exc).__name__}: {exc}")
        yield builder.flush()
        return
    yield from _batches(builder, _warc_rows(path, filesystem, raw, first, convert, columns))


def _batches(builder: BatchBuilder, rows: Iterator[Row]) -> Iterator[pa.Table]:
    for row in rows:
        if row.reason is None:
            builder.add(row.record, row.text, **row.extra)
        else:
            builder.quarantine(row.record, row.reason, row.detail, **row.extra)
        if builder.full():
            yield builder.flush()
    if len(builder):
        yield builder.flush()


@register_reader
class WarcReader(InputReader):
    """WARC 1.0/1.1 files, plain or gzip (recognised by content, any file name).

    Documents are ``response`` records (HTTP: status line and headers removed, chunked transfer
    coding and Content-Encoding undone) and ``resource`` records (the block as it is), as chosen by
    ``record_types``. Columns: ``url`` (WARC-Target-URI, without the ``<>`` some writers add),
    ``warc_record_id``, ``warc_date`` (as in the header), ``content_type`` (the HTTP Content-Type mime
    type, or the WARC one for resource records; lower case, no parameters), ``http_status`` (int32),
    ``charset`` (the Content-Type charset parameter, lower case, else null: sniffing is the extract
    op's job), ``warc_offset`` (int64) and ``content`` (binary body). ``text`` stays null for every
    document, text/plain included: extract decodes all bodies the same way, with the header's
    charset or a sniffed one.

    Quarantine reasons: ``unsupported_content_type`` (the mime type, or ``(none)``, in
    ``reason_detail``: how non-HTML records are counted by type), ``too_large``, ``empty_text`` (empty
    body), ``bad_http_headers`` (no parsable HTTP status line), ``bad_content_encoding``,
    ``truncated_record``, ``corrupt_record``, ``unreadable_file``; see the module docstring.
    """

    format = "warc"
    Config = WarcConfig

    def __init__(self, config: WarcConfig):
        super().__init__(config)
        from fastwarc.warc import WarcRecordType

        self._response = WarcRecordType.response
        self._types = 0
        for name in config.record_types:
            self._types |= int(getattr(WarcRecordType, name))
        self._allowed = frozenset(config.content_types)

    def read_file(self, path: str, file_index: int, filesystem: Any) -> Iterator[pa.Table]:
        builder = BatchBuilder(path, file_index, WARC_COLUMNS)
        yield from _read_warc_file(path, filesystem, builder, self._convert, WARC_COLUMNS)

    def _convert(self, rec: Any, index: int, offset: int, head: bytes | None) -> Row | None:
        rtype = rec.record_type
        if not int(rtype) & self._types:
            return None
        limit = self.config.max_body_bytes  # type: ignore[attr-defined]
        extra = _warc_meta(rec, offset, head)
        row = Row(index, extra)
        size = rec.content_length
        # A block far over the limit: read only what the HTTP head needs (the parser skips the rest).
        block = rec.reader.read(MAX_HEADER if size > limit + MAX_HEADER else size)
        whole = len(block) == size
        if len(block) < min(size, MAX_HEADER):
            row.fail("truncated_record", f"the file ends {size - len(block)} bytes before the end of the record "
                     f"at offset {offset}")
            return row
        transfer = encoding = None
        start = 0
        if rtype == self._response:
            http = parse_http_head(block)
            if isinstance(http, str):
                row.fail("bad_http_headers", http)
                return row
            extra[HTTP_STATUS] = http.status
            mime, charset = parse_content_type(http.content_type)
            transfer, encoding, start = http.transfer_encoding, http.content_encoding, http.length
        else:
            mime, charset = parse_content_type(_warc_header(rec, head, "Content-Type"))
        extra[CONTENT_TYPE], extra[CHARSET] = mime, charset
        if mime not in self._allowed:
            row.fail("unsupported_content_type", mime or "(none)")
            return row
        truncated = _warc_header(rec, head, "WARC-Truncated")
        if truncated is not None:
            row.fail("truncated_record", f"WARC-Truncated: {truncated} (the crawler cut the payload)")
            return row
        if not whole:
            row.fail("too_large", f"body of {size - start} bytes is over max_body_bytes={limit}")
            return row
        try:
            body = decode_body(block[start:] if start else block, transfer, encoding, limit)
        except BodyError as exc:
            row.fail(exc.reason, exc.detail)
            return row
        if len(body) < 256 and not body.strip(_WHITESPACE):
            row.fail("empty_text", "the body is empty or only whitespace")
            return row
        extra[CONTENT] = body
        return row


@register_reader
class WetReader(InputReader):
    """Common Crawl WET files: each ``conversion`` record is a document whose ``text`` is its payload
    decoded as UTF-8. Columns: ``url``, ``warc_record_id``, ``warc_date``, ``warc_offset``,
    ``content_type`` (the record's, normally text/plain). Other records (warcinfo) give no row.
    Quarantine reasons: ``invalid_utf8``, ``empty_text``, ``too_large``, ``truncated_record``,
    ``corrupt_record``, ``unreadable_file``.
    """

    format = "wet"
    Config = WetConfig

    def __init__(self, config: WetConfig):
        super().__init__(config)
        from fastwarc.warc import WarcRecordType

        self._conversion = WarcRecordType.conversion

    def read_file(self, path: str, file_index: int, filesystem: Any) -> Iterator[pa.Table]:
        builder = BatchBuilder(path, file_index, WET_COLUMNS)
        yield from _read_warc_file(path, filesystem, builder, self._convert, WET_COLUMNS)

    def _convert(self, rec: Any, index: int, offset: int, head: bytes | None) -> Row | None:
        if rec.record_type != self._conversion:
            return None
        limit = self.config.max_body_bytes  # type: ignore[attr-defined]
        extra = _warc_meta(rec, offset, head)
        extra[CONTENT_TYPE] = parse_content_type(_warc_header(rec, head, "Content-Type"))[0]
        row = Row(index, extra)
        size = rec.content_length
        if size > limit:
            row.fail("too_large", f"text of {size} bytes is over max_body_bytes={limit}")
            return row
        body = rec.reader.read()
        if len(body) < size:
            row.fail("truncated_record", f"the file ends {size - len(body)} bytes before the end of the record "
                     f"at offset {offset}")
            return row
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            row.fail("invalid_utf8", str(exc))
            return row
        if not text.strip():
            row.fail("empty_text", "the record's text is empty or only whitespace")
            return row
        row.text = text
        return row


# --------------------------------------------------------------------------------------------- ARC


_ARC_DATE = re.compile(rb"\d{8,}")


class _LineReader:
    """Lines and blocks over an :class:`ArchiveStream`, knowing the stream position of each byte."""

    def __init__(self, stream: ArchiveStream):
        self.stream = stream
        self.buf = b""
        self.at = 0
        self.base = stream.tell()

    @property
    def pos(self) -> int:
        return self.base + self.at

    def _more(self) -> bool:
        data = self.stream.read(READ_SIZE)
        if not data:
            return False
        self.base += self.at
        self.buf = self.buf[self.at:] + data
        self.at = 0
        return True

    def reset(self) -> None:
        """Forget buffered bytes (after the stream resumed elsewhere)."""
        self.buf, self.at, self.base = b"", 0, self.stream.tell()

    def readline(self, limit: int = MAX_HEADER) -> bytes:
        while True:
            eol = self.buf.find(b"\n", self.at, self.at + limit)
            if eol >= 0 or len(self.buf) - self.at >= limit or not self._more():
                end = eol + 1 if eol >= 0 else min(len(self.buf), self.at + limit)
                line = self.buf[self.at:end]
                self.at = end
                return line

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the stream)."""
        if len(self.buf) - self.at >= n:
            data = self.buf[self.at:self.at + n]
            self.at += n
            return data
        parts, got = [self.buf[self.at:]], len(self.buf) - self.at
        self.base += len(self.buf)
        self.buf, self.at = b"", 0
        while got < n:
            data = self.stream.read(READ_SIZE)
            if not data:
                break
            if len(data) > n - got:  # keep the rest buffered
                parts.append(data[:n - got])
                self.buf, self.at = data, n - got
                break
            parts.append(data)
            self.base += len(data)
            got += len(data)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        skipped = 0
        while skipped < n:
            if self.at >= len(self.buf) and not self._more():
                break
            step = min(n - skipped, len(self.buf) - self.at)
            self.at += step
            skipped += step
        return skipped


@dataclass
class ArcHeader:
    url: str
    date: str
    mime: str | None
    length: int | None  # None: not a valid length
    raw_length: str = ""


def parse_arc_header(line: bytes, nfields: int) -> ArcHeader | None:
    """An ARC record header line (``URL IP date mime length`` in v1, 10 fields in v2); the URL may
    contain spaces, so fields are taken from the right. None if the line does not look like one."""
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) < nfields:
        if nfields > 5 and len(parts) >= 5:
            nfields = 5
        else:
            return None
    url = b" ".join(parts[:len(parts) - nfields + 1])
    date, mime, raw_length = parts[-nfields + 2], parts[-nfields + 3], parts[-1]
    if b":" not in url or not _ARC_DATE.fullmatch(date):
        return None
    length = int(raw_length) if raw_length.isdigit() else None
    mime_type = mime.decode("latin-1").lower()
    return ArcHeader(url.decode("utf-8", "replace"), date.decode("ascii"),
                     None if mime_type in ("no-type", "-") else mime_type, length, raw_length.decode("latin-1"))


def _arc_date(date: str) -> str:
    if len(date) == 14:  # YYYYMMDDhhmmss → the WARC-Date form
        return f"{date[:4]}-{date[4:6]}-{date[6:8]}T{date[8:10]}:{date[10:12]}:{date[12:14]}Z"
    return date


@register_reader
class ArcReader(InputReader):
    """Internet Archive ARC files (v1 and v2), plain or gzip. Same columns as ``warc``;
    ``warc_record_id`` is null and ``warc_date`` is the ARC header date in WARC form
    (``2008-04-30T20:48:25Z``). The ``filedesc://`` record gives no row; every other record is a
    document candidate: ``http(s)`` records hold an HTTP response (parsed as for ``warc``), others
    (``dns:`` ...) are bodies whose type is the header's. Records need not be newline-separated.
    Quarantine reasons as for ``warc``; a malformed header line is ``corrupt_record``.
    """

    format = "arc"
    Config = ArcConfig

    def __init__(self, config: ArcConfig):
        super().__init__(config)
        self._allowed = frozenset(config.content_types)

    def read_file(self, path: str, file_index: int, filesystem: Any) -> Iterator[pa.Table]:
        builder = BatchBuilder(path, file_index, WARC_COLUMNS)
        yield from _read_archive(path, filesystem, builder, self._starts_record, self._rows)

    @staticmethod
    def _starts_record(head: bytes) -> bool:
        return parse_arc_header(head.split(b"\n", 1)[0], 5) is not None

    def _rows(self, stream: ArchiveStream) -> Iterator[Row]:
        reader = _LineReader(stream)
        index, nfields, resyncing = 0, 5, False
        while True:
            start = reader.pos
            line = reader.readline()
            if not line:
                damage = stream.damage
                if damage is None:
                    return
                if not damage.claimed:
                    yield Row(index, {OFFSET: damage.offset}, reason=damage.reason, detail=damage.detail)
                    index += 1
                if not stream.resume():
                    return
                reader.reset()
                resyncing = False
                continue
            if not line.strip(_PADDING):
                continue
            offset = stream.offset_of(start)
            if len(line) < MAX_HEADER and not line.endswith(b"\n"):  # the readable bytes end inside the line
                damage = stream.damage
                if damage is not None:
                    damage.claimed = True
                    yield Row(index, {OFFSET: offset}, reason=damage.reason, detail=damage.detail)
                else:
                    yield Row(index, {OFFSET: offset}, reason="truncated_record",
                              detail=f"the record header at offset {offset} is cut off by the end of the file")
                index += 1
                continue
            header = parse_arc_header(line, nfields)
            if header is None or header.length is None:
                if header is None and resyncing:
                    continue  # inside a damaged stretch: wait for the next header line
                resyncing = True
                shown = line[:200].rstrip(b"\r\n")
                what = f"invalid length {header.raw_length!r}" if header is not None else "no ARC record header"
                extra = {OFFSET: offset, URL: header.url if header else None}
                yield Row(index, extra, reason="corrupt_record", detail=f"{what} at offset {offset}: {shown!r}")
                index += 1
                continue
            resyncing = False
            if header.url.startswith("filedesc:"):
                block = reader.read(min(header.length, MAX_HEADER))
                reader.skip(header.length - len(block))
                lines = block.split(b"\n")
                if len(lines) > 2 and lines[2].startswith(b"URL"):
                    nfields = max(5, len(lines[2].split()))
                index += 1
                continue
            row = self._record(reader, header, index, offset)
            if stream.damage is not None and row.reason == "truncated_record":
                stream.damage.claimed = True
                row.fail(stream.damage.reason, stream.damage.detail)
            yield row
            index += 1

    def _record(self, reader: _LineReader, header: ArcHeader, index: int, offset: int) -> Row:
        cfg: ArcConfig = self.config  # type: ignore[assignment]
        extra: dict[str, Any] = {URL: header.url, RECORD_ID: None, DATE: _arc_date(header.date), OFFSET: offset}
        row = Row(index, extra)
        length = header.length or 0
        scheme = header.url.split(":", 1)[0].lower()
        head = reader.read(min(length, MAX_HEADER))
        got = len(head)

        def finish(reason: str | None = None, detail: str = "") -> Row:
            skipped = reader.skip(length - got)
            if got + skipped < length:
                row.fail("truncated_record", f"the file ends {length - got - skipped} bytes before the end of the "
                         f"record at offset {offset}")
            elif reason:
                row.fail(reason, detail)
            return row

        transfer = encoding = None
        if scheme in ("http", "https"):
            parsed = parse_http_head(head)
            if isinstance(parsed, str):
                return finish("bad_http_headers", parsed)
            extra[HTTP_STATUS] = parsed.status
            mime, charset = parse_content_type(parsed.content_type or header.mime)
            transfer, encoding, head_len = parsed.transfer_encoding, parsed.content_encoding, parsed.length
        else:
            mime, charset, head_len = header.mime, None, 0
        extra[CONTENT_TYPE], extra[CHARSET] = mime, charset
        if mime not in self._allowed:
            return finish("unsupported_content_type", mime or "(none)")
        body_len = length - head_len
        if body_len > cfg.max_body_bytes and not encoding and not transfer:
            return finish("too_large", f"body of {body_len} bytes is over max_body_bytes={cfg.max_body_bytes}")
        rest = reader.read(length - got) if length > got else b""
        got += len(rest)
        if got < length:
            return finish()
        try:
            body = decode_body(head[head_len:] + rest, transfer, encoding, cfg.max_body_bytes)
        except BodyError as exc:
            return finish(exc.reason, exc.detail)
        if len(body) < 256 and not body.strip(_WHITESPACE):
            return finish("empty_text", "the body is empty or only whitespace")
        extra[CONTENT] = body
        return row
