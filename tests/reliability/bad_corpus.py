"""A corpus of broken inputs, generated on the spot: each file is one *kind* of damage a crawl, a dump
or a hand-made dataset really shows, with the quarantine / rejection reasons the run must give it.

``write_corpus(root)`` writes ``root/{warc,jsonl,parquet,text}/…`` and returns one :class:`Case` per
kind: the file name and the set of reasons its rows must end with (``None`` = a kept row). A case
whose file yields no rows at all (a file with no records) expects an empty set and is checked
through the manifest's input listing instead."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\nstream\n" + bytes(range(256)) * 8
PROSE = ("The whale surfaced near the ship and the crew watched it for a long time before the captain "
         "gave the order to lower the boats into the grey water of the morning. ")
HTML = ("<html><head><title>t</title></head><body><article><p>" + PROSE * 4 + "</p></article></body></html>").encode()
BIG_DOC_MB = 12  # under the readers' 16 MiB record cap: read whole
OVER_CAP_MB = 20  # over it: quarantined as too_large, never held


@dataclass
class Case:
    kind: str
    fmt: str
    name: str
    reasons: set = field(default_factory=set)  # reasons its rows must show (None: a kept row)


def warc_record(block: bytes, *, rtype: str = "response", url: str = "http://example.com/",
                content_type: str = "application/http; msgtype=response", length: int | None = None,
                version: bytes = b"WARC/1.0") -> bytes:
    head = (f"\r\nWARC-Type: {rtype}\r\nWARC-Target-URI: {url}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
            f"WARC-Record-ID: <urn:uuid:{zlib.crc32(block + url.encode()):08x}-0000-0000-0000-000000000000>\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(block) if length is None else length}\r\n\r\n")
    return version + head.encode() + block + b"\r\n\r\n"


def http(body: bytes, content_type: str = "text/html; charset=utf-8") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\r\n".encode() + body


def gz_members(*records: bytes) -> bytes:
    return b"".join(gzip.compress(r) for r in records)


def good_page(i: int) -> bytes:
    return warc_record(http(HTML.replace(b"whale", f"whale {i}".encode())), url=f"http://example.com/{i}")


def write_corpus(root: Path) -> list[Case]:
    cases: list[Case] = []

    def add(kind: str, fmt: str, name: str, data: bytes, reasons: set) -> None:
        folder = root / fmt
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        cases.append(Case(kind, fmt, name, reasons))

    # ------------------------------------------------------------------ web archives (format: warc)
    cut = gz_members(good_page(1), good_page(2))
    add("truncated gzip (cut download)", "warc", "truncated.warc.gz", cut[: len(cut) - 40],
        {None, "truncated_record"})
    add("malformed WARC header (bad version line) between good records", "warc", "bad-header.warc",
        good_page(3) + warc_record(http(HTML), version=b"WARX/9.9") + good_page(10), {None, "corrupt_record"})
    add("not a WARC file at all", "warc", "not-warc.warc", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + HTML,
        {"unreadable_file"})
    add("record length too short", "warc", "short-length.warc",
        warc_record(http(HTML), length=40) + good_page(4), {None, "corrupt_record"})
    add("record cut inside its body", "warc", "cut-body.warc", good_page(5) + good_page(6)[:300],
        {None, "truncated_record"})
    add("corrupt gzip member", "warc", "flipped.warc.gz",
        gz_members(good_page(7)) + bytes(b ^ 0x5A if 20 < i < 60 else b for i, b in enumerate(gzip.compress(good_page(8))))
        + gz_members(good_page(9)), {None, "corrupt_record"})
    add("binary PNG labelled text/html", "warc", "png-as-html.warc", warc_record(http(PNG), url="http://example.com/png"),
        {"extract_error"})
    add("PDF bytes labelled text/html", "warc", "pdf-as-html.warc", warc_record(http(PDF), url="http://example.com/pdf"),
        {"extract_error"})
    add("deeply nested HTML", "warc", "nested.warc",
        warc_record(http(b"<div>" * 20000 + PROSE.encode() + b"</div>" * 20000), url="http://example.com/nest"),
        {None, "extract_error", "extract_empty", "extract_timeout"})
    add("invalid UTF-8 in an HTML body", "warc", "bad-utf8.warc",
        warc_record(http(HTML.replace(b"whale", b"wh\xff\xfeale"), "text/html; charset=utf-8"), url="http://example.com/u8"),
        {None})
    add("NUL bytes in an HTML body", "warc", "nul.warc",
        warc_record(http(HTML.replace(b"whale", b"wh\x00ale")), url="http://example.com/nul"), {None})
    add("body larger than max_body_bytes", "warc", "huge-body.warc",
        warc_record(http(b"<html><body>" + b"x " * (700 << 10) + b"</body></html>"), url="http://example.com/huge"),
        {"too_large"})
    add("unsupported content type", "warc", "image.warc",
        warc_record(http(PNG, "image/png"), url="http://example.com/img.png"), {"unsupported_content_type"})
    add("empty WARC file", "warc", "empty.warc", b"", set())
    add("zero-byte gzip file", "warc", "zero.warc.gz", b"", set())
    add("zstd-compressed WARC (not read)", "warc", "zstd.warc", b"\x28\xb5\x2f\xfd" + os.urandom(64),
        {"unreadable_file", "corrupt_record"})

    # ------------------------------------------------------------------ JSON lines (format: jsonl)
    def lines(*items: bytes) -> bytes:
        return b"\n".join(items) + b"\n"

    good = json.dumps({"text": PROSE}).encode()
    add("lines that are not JSON", "jsonl", "not-json.jsonl", lines(good, b"this is not json", b'{"text": "unterminated'),
        {None, "invalid_json"})
    add("a JSON array instead of JSON lines", "jsonl", "array.jsonl",
        json.dumps([{"text": PROSE}, {"text": PROSE}]).encode(), {"not_an_object"})
    add("a pretty-printed JSON array", "jsonl", "pretty-array.jsonl",
        json.dumps([{"text": PROSE}], indent=2).encode(), {"invalid_json"})
    add("text of the wrong type", "jsonl", "wrong-type.jsonl",
        lines(good, b'{"text": 42}', b'{"text": ["a", "b"]}', b'{"text": {"a": 1}}'), {None, "wrong_type"})
    add("missing or null text field", "jsonl", "missing.jsonl", lines(b'{"body": "x"}', b'{"text": null}', good),
        {None, "missing_field"})
    add("invalid UTF-8 bytes", "jsonl", "bad-utf8.jsonl", lines(good, b'{"text": "caf\xe9 \xff"}'),
        {None, "invalid_utf8"})
    add("a lone surrogate escape", "jsonl", "surrogate.jsonl", lines(b'{"text": "x \\ud800 y"}', good),
        {None, "invalid_utf8"})
    add("NUL bytes in text", "jsonl", "nul.jsonl",
        lines(json.dumps({"text": PROSE + "\u0000" + PROSE}).encode(), b'{"text": "' + PROSE.encode() + b'\x00"}'), {None})
    add("empty and blank text", "jsonl", "blank.jsonl", lines(b'{"text": ""}', b'{"text": " \\n\\t"}', good),
        {None, "empty_text"})
    add("JSON nested too deeply", "jsonl", "deep.jsonl", lines(b"[" * 200_000 + b"]" * 200_000, good),
        {None, "invalid_json"})
    add("truncated gzip JSON lines", "jsonl", "cut.jsonl.gz", gzip.compress(lines(good, good, good) * 50)[:-30],
        {None, "unreadable_file"})
    add("zero-byte gzip JSON lines", "jsonl", "zero.jsonl.gz", b"", set())
    add("empty JSON lines file", "jsonl", "empty.jsonl", b"", set())
    big = ("word " * ((BIG_DOC_MB << 20) // 5))[: BIG_DOC_MB << 20]
    add(f"a {BIG_DOC_MB} MB document", "jsonl", "big.jsonl", lines(json.dumps({"text": big}).encode(), good),
        {None, "too_many_chars"})
    over = ("word " * ((OVER_CAP_MB << 20) // 5))[: OVER_CAP_MB << 20]
    add(f"a {OVER_CAP_MB} MB document (over the record cap)", "jsonl", "over-cap.jsonl.gz",
        gzip.compress(lines(good, json.dumps({"text": over}).encode(), good), 1), {None, "too_large"})

    # ------------------------------------------------------------------ Parquet (format: parquet)
    def parquet(table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()

    add("Parquet without the text column", "parquet", "no-text.parquet",
        parquet(pa.table({"body": [PROSE, PROSE]})), {"missing_column"})
    add("Parquet text column of the wrong type", "parquet", "int-text.parquet",
        parquet(pa.table({"text": pa.array([1, 2, 3], pa.int64())})), {"wrong_type"})
    ok = parquet(pa.table({"text": [PROSE, None, "  "]}))
    add("Parquet nulls and blanks", "parquet", "nulls.parquet", ok, {None, "missing_field", "empty_text"})
    add("corrupt Parquet footer", "parquet", "bad-footer.parquet", ok[:-12] + b"\x00" * 8 + b"PAR1",
        {"unreadable_file"})
    add("not Parquet at all", "parquet", "not.parquet", b"name,text\nx,y\n", {"unreadable_file"})
    add("empty Parquet file (0 bytes)", "parquet", "empty.parquet", b"", {"unreadable_file"})

    # ------------------------------------------------------------------ plain text (format: text)
    add("invalid UTF-8 text file", "text", "latin1.txt", ("café " + PROSE).encode("latin-1"), {"invalid_utf8"})
    add("binary file named .txt", "text", "image.txt", PNG, {"invalid_utf8"})
    add("empty text file", "text", "empty.txt", b"", {"empty_text"})
    add("NUL bytes in a text file", "text", "nul.txt", (PROSE + "\x00" + PROSE).encode(), {None})
    return cases


def symlink_loop(folder: Path) -> Path:
    """A folder holding a symlink that points at itself (and one pointing at its parent)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "self.jsonl").symlink_to(folder / "self.jsonl")
    (folder / "up").symlink_to(folder)
    (folder / "real.jsonl").write_text(json.dumps({"text": PROSE}) + "\n")
    return folder
