"""Opening input files as byte streams, decompressing on the fly, and reading them line by line.

Readers never hold a whole file in memory: a file is a ``pyarrow.fs`` input stream (so S3 and GCS
work like local disk) wrapped in a Python decompressor and a buffered reader.

Anything that goes wrong while opening or reading a file (missing file, corrupt gzip, a zstd frame
cut short, an I/O error) surfaces as :class:`UnreadableInput`, which carries the position where the
file broke so that the reader can quarantine the rest of it as one ``unreadable_file`` row.
"""

from __future__ import annotations

import gzip
import io
import posixpath
import zlib
from typing import Any, BinaryIO, Iterator, Literal, NamedTuple

import pyarrow as pa
import zstandard

Compression = Literal["auto", "none", "gzip", "zstd"]

# 1 MiB reads: few round trips to object stores, little memory per open file.
READ_SIZE = 1 << 20

# What a broken file raises somewhere between the filesystem and the decompressor. Kept narrow on
# purpose: a bug in a reader (TypeError, KeyError, ...) must still fail loudly.
READ_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError, pa.ArrowException)


class UnreadableInput(Exception):
    """A file could not be opened, or broke while being read at ``record``."""

    def __init__(self, record: int, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.record = record
        self.detail = str(self)


def detect_compression(path: str, compression: Compression) -> Literal["none", "gzip", "zstd"]:
    """``auto`` looks at the file extension only (``.gz``/``.gzip``, ``.zst``/``.zstd``)."""
    if compression != "auto":
        return compression
    ext = posixpath.splitext(path)[1].lower()
    if ext in (".gz", ".gzip"):
        return "gzip"
    if ext in (".zst", ".zstd"):
        return "zstd"
    return "none"


def open_binary(filesystem: Any, path: str, compression: Compression = "auto") -> BinaryIO:
    """A buffered, decompressed byte stream over ``path``. The caller closes it."""
    kind = detect_compression(path, compression)
    # compression=None: Arrow must hand over the raw bytes; decompressing is our job, so that a
    # truncated stream is reported the same way for every filesystem.
    raw = filesystem.open_input_stream(path, compression=None)
    if kind == "gzip":
        # GzipFile is already a buffered reader. Wrapping it in another BufferedReader would lose up
        # to a whole buffer of good lines when the stream breaks: BufferedReader fills its buffer
        # with one readinto, and GzipFile's readinto discards what it had if the stream ends early.
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        return io.BufferedReader(ZstdReader(raw), READ_SIZE)
    return io.BufferedReader(raw, READ_SIZE)  # type: ignore[arg-type]


class OversizedLine(NamedTuple):
    """A line longer than the reader's cap, streamed past without being held: only its size is kept."""

    size: int  # bytes, line ending excluded


def iter_lines(filesystem: Any, path: str, compression: Compression = "auto",
               max_line_bytes: int | None = None) -> Iterator[tuple[int, bytes | OversizedLine]]:
    """``(line_number, raw_line)`` for every line, ``\\n`` included where present; blank lines too,
    so that line numbers stay true to the file. A line of more than ``max_line_bytes`` bytes (line
    ending excluded) comes as an :class:`OversizedLine` instead: it is read through in READ_SIZE
    pieces and never held whole, so one line of several GiB costs no more memory than the cap.
    Raises :class:`UnreadableInput` (once, at the line that could not be read) when the file cannot
    be opened or its stream breaks."""
    record = 0
    # Room for the cap, the "\r\n" a line may end with, and one byte more to see that it is over.
    limit = -1 if max_line_bytes is None else max_line_bytes + 3
    try:
        stream = open_binary(filesystem, path, compression)
    except READ_ERRORS as exc:
        raise UnreadableInput(0, exc) from exc
    with stream:
        while True:
            try:
                line = stream.readline(limit)
                if not line:
                    return
                if max_line_bytes is not None and len(line.rstrip(b"\r\n")) > max_line_bytes:
                    yield record, OversizedLine(_skip_line(stream, line))
                    record += 1
                    continue
            except READ_ERRORS as exc:
                raise UnreadableInput(record, exc) from exc
            yield record, line
            record += 1


def _skip_line(stream: BinaryIO, start: bytes) -> int:
    """Read the rest of the line that begins with ``start``; its length without the line ending."""
    size, tail = len(start), start
    while not tail.endswith(b"\n"):
        tail = stream.readline(READ_SIZE)
        if not tail:
            break
        size += len(tail)
    return size - (len(tail) - len(tail.rstrip(b"\r\n")) if tail.endswith(b"\n") else 0)


def read_at_most(filesystem: Any, path: str, limit: int, compression: Compression = "auto") -> bytes:
    """Up to ``limit`` decompressed bytes of a file (ask for one more than you accept to detect
    oversized files). Raises :class:`UnreadableInput` at record 0."""
    try:
        with open_binary(filesystem, path, compression) as stream:
            chunks, left = [], limit
            while left > 0:
                chunk = stream.read(min(left, READ_SIZE))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
    except READ_ERRORS as exc:
        raise UnreadableInput(0, exc) from exc


class ZstdReader(io.RawIOBase):
    """A zstd decompressing raw stream that notices truncation.

    ``zstandard``'s own ``stream_reader`` ends quietly when the input stops in the middle of a frame,
    which would turn a cut-off download into a silently shorter file. Here every frame must reach its
    end; concatenated frames (as written by ``zstd`` on appended files) are read one after another.
    """

    # Feed small compressed chunks: one call's output is everything that chunk decodes to, and a
    # crafted stream decodes a 128 KiB block from 4 bytes (RLE blocks, or many tiny frames). 1 KiB in
    # bounds one call at ~32 MiB out whatever the file holds; on real text (ratio 3-5) it decodes as
    # fast as 64 KiB chunks (measured: 1 KiB vs 64 KiB feeds within noise on 28 MB of text).
    FEED_SIZE = 1 << 10

    def __init__(self, raw: Any):
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame: Any = None  # the decompressobj of the frame being read
        self._pending = memoryview(b"")  # compressed bytes read from the file, not yet fed
        self._out = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            if not self._pending:
                # The file is read in READ_SIZE pieces (few round trips to an object store) and fed
                # to the decompressor FEED_SIZE at a time.
                chunk = b"" if self._done else self._raw.read(READ_SIZE)
                if not chunk:
                    self._done = True
                    if self._frame is not None and not self._frame.eof:
                        raise EOFError("zstd stream ended in the middle of a frame (truncated file)")
                    return 0
                self._pending = memoryview(chunk)
            piece, self._pending = self._pending[:self.FEED_SIZE], self._pending[self.FEED_SIZE:]
            self._out = memoryview(self._decompress(bytes(piece)))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        parts = []
        while data:
            if self._frame is None or self._frame.eof:
                self._frame = self._dctx.decompressobj()
            parts.append(self._frame.decompress(data))
            # Bytes past the end of a frame belong to the next frame.
            data = self._frame.unused_data if self._frame.eof else b""
        return b"".join(parts)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()
