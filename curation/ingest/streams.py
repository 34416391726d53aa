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
from typing import Any, BinaryIO, Iterator, Literal

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


def iter_lines(filesystem: Any, path: str, compression: Compression = "auto") -> Iterator[tuple[int, bytes]]:
    """``(line_number, raw_line)`` for every line, ``\\n`` included where present; blank lines too,
    so that line numbers stay true to the file. Raises :class:`UnreadableInput` (once, at the line
    that could not be read) when the file cannot be opened or its stream breaks."""
    record = 0
    try:
        stream = open_binary(filesystem, path, compression)
    except READ_ERRORS as exc:
        raise UnreadableInput(0, exc) from exc
    with stream:
        lines = iter(stream)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except READ_ERRORS as exc:
                raise UnreadableInput(record, exc) from exc
            yield record, line
            record += 1


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

    # Feed small compressed chunks: one call's output is bounded by chunk size × compression ratio.
    FEED_SIZE = 64 << 10

    def __init__(self, raw: Any):
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame: Any = None  # the decompressobj of the frame being read
        self._out = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            if self._done:
                return 0
            chunk = self._raw.read(self.FEED_SIZE)
            if not chunk:
                self._done = True
                if self._frame is not None and not self._frame.eof:
                    raise EOFError("zstd stream ended in the middle of a frame (truncated file)")
                return 0
            self._out = memoryview(self._decompress(chunk))
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
