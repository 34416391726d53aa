"""WARC / WET / ARC readers: every shipped archive read end to end and counted against warcio, bodies
compared with warcio's, every edge case's quarantine reason, and damaged copies of real files."""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from pydantic import ValidationError
from warcio.archiveiterator import ArchiveIterator

import curation.ingest.warc as warc
from curation.ingest.base import BatchBuilder, registered_readers

REPO = Path(__file__).resolve().parent.parent
WARC_DATA = REPO / "data" / "warc"
EDGE = WARC_DATA / "edge-cases"
FS = pafs.LocalFileSystem()
READERS = {"warc": warc.WarcReader, "wet": warc.WetReader, "arc": warc.ArcReader}
COLUMNS = {"warc": warc.WARC_COLUMNS, "wet": warc.WET_COLUMNS, "arc": warc.WARC_COLUMNS}


def read(fmt: str, path: Path | str, file_index: int = 0, **config) -> pa.Table:
    """Run a reader over one file and check what every reader promises about its batches."""
    cls = READERS[fmt]
    reader = cls(cls.Config.model_validate({"format": fmt, "paths": ["unused"], **config}))
    tables = list(reader.read_file(str(path), file_index, FS))
    schema = BatchBuilder(str(path), file_index, COLUMNS[fmt]).schema()
    assert all(t.num_rows for t in tables), "a reader must never yield an empty table"
    assert all(t.schema == schema for t in tables)
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    assert table.column("source").to_pylist() == [str(path)] * table.num_rows
    records = table.column("record").to_pylist()
    assert table.column("doc_id").to_pylist() == [file_index << 32 | r for r in records]
    assert records == sorted(set(records)), "records are unique and in file order"
    good = [r["reason"] is None for r in table.select(["reason"]).to_pylist()]
    if fmt == "wet":
        assert [t is not None for t in table.column("text").to_pylist()] == good
    else:
        assert table.column("text").null_count == table.num_rows
        assert [c is not None for c in table.column("content").to_pylist()] == good
    return table


def rows(table: pa.Table, *columns: str) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns)))


def warcio_records(path: Path, decompress: bool = False) -> list[tuple[int, str, object]]:
    """(position among all records, type, record) by warcio: the independent count. ``decompress``
    first inflates the whole file (warcio refuses gzip files whose members are not records)."""
    data = path.read_bytes()
    if decompress:
        data = gzip.decompress(data)
    out = []
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        for i, rec in enumerate(ArchiveIterator(io.BytesIO(data), arc2warc=True)):
            out.append((i, rec.rec_type, rec.content_stream().read()))
    return out


def arc_walk(path: Path) -> list[bytes]:
    """The records of an ARC file by a minimal walk (header line, then its length in bytes): warcio
    stops after the first record of ARC files whose records are not newline-separated."""
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        start, eol = pos, data.index(b"\n", pos)
        pos = eol + 1 + int(data[pos:eol].split(b" ")[-1])
        while data[pos:pos + 1] == b"\n":
            pos += 1
        out.append(data[start:pos])
    return out


# (file, format, warcio must inflate first, {record: reason} of quarantined rows)
SHIPPED = [
    ("sample-0000.warc.gz", "warc", False, {}),
    ("sample-0001.warc.gz", "warc", False, {}),
    ("whirlwind.warc.gz", "warc", False, {}),
    ("whirlwind.warc.wat.gz", "warc", False, {}),  # metadata records only: no rows
    ("whirlwind.warc.wet.gz", "wet", False, {}),
    ("IAH-urls-wget.warc", "warc", False, {8: "empty_text", 14: "empty_text", 20: "unsupported_content_type",
                                           24: "unsupported_content_type", 28: "unsupported_content_type",
                                           32: "unsupported_content_type"}),
    ("edge-cases/example.warc", "warc", False, {}),  # revisit and request records give no row
    ("edge-cases/example.warc.gz", "warc", False, {}),
    ("edge-cases/example-digest.warc", "warc", False, {}),  # requests only
    ("edge-cases/example-iana.org-chunked.warc", "warc", False, {}),
    ("edge-cases/example-resource.warc.gz", "warc", False, {}),
    ("edge-cases/example-space-in-target-uri.warc.gz", "warc", False, {1: "unsupported_content_type"}),
    ("edge-cases/example-wget-bad-target-uri.warc.gz", "warc", False, {}),
    ("edge-cases/post-test.warc.gz", "warc", False, {0: "unsupported_content_type", 2: "unsupported_content_type",
                                                     4: "unsupported_content_type"}),
    # A record's Content-Length is 2 bytes short: its payload's last bytes follow the record.
    ("edge-cases/example-trunc.warc", "warc", False, {2: "corrupt_record"}),
    # gzip members that are not records (one stream for the whole file, or cut mid-record):
    # warcio refuses them; they are valid gzip and read in full.
    ("edge-cases/example-bad.warc.gz.bad", "warc", True, {}),
    ("edge-cases/example-bad-non-chunked.warc.gz", "warc", True, {}),
    ("edge-cases/example-wrong-chunks.warc.gz", "warc", True, {}),
    ("edge-cases/example.arc", "arc", False, {}),
    ("edge-cases/example.arc.gz", "arc", False, {}),
    # The header's length is 12 bytes more than the file holds.
    ("edge-cases/example-space-in-url.arc", "arc", False, {1: "truncated_record"}),
]


@pytest.mark.parametrize("name,fmt,inflate,quarantined", SHIPPED, ids=[s[0] for s in SHIPPED])
def test_shipped_files_against_warcio(name, fmt, inflate, quarantined):
    path = WARC_DATA / name
    table = read(fmt, path, file_index=5)
    kinds = ("conversion",) if fmt == "wet" else ("response", "resource")
    expected = [(i, body) for i, kind, body in warcio_records(path, inflate) if kind in kinds]
    # document rows + quarantined rows = warcio's count of document records, at the same positions
    assert table.column("record").to_pylist() == [i for i, _ in expected]
    assert {r: reason for r, reason in rows(table, "record", "reason") if reason} == quarantined
    body_col = "text" if fmt == "wet" else "content"
    for (record, body), (reason, mine) in zip(expected, rows(table, "reason", body_col)):
        if reason is None and not (inflate and name.endswith("wrong-chunks.warc.gz")):
            assert (mine.encode() if fmt == "wet" else mine) == body, record


def test_columns_and_values():
    table = read("warc", WARC_DATA / "sample-0000.warc.gz", file_index=2)
    assert table.schema.names == ["doc_id", "text", "source", "record", "reason", "reason_detail", "url",
                                  "warc_record_id", "warc_date", "content_type", "http_status", "charset",
                                  "warc_offset", "content"]
    assert table.schema.field("http_status").type == pa.int32()
    assert table.schema.field("warc_offset").type == pa.int64()
    assert table.schema.field("content").type == pa.binary()
    first = table.slice(0, 1).to_pylist()[0]
    assert first["doc_id"] == 2 << 32 | 2 and first["record"] == 2
    assert first["url"] == "https://www.semanticscholar.org/research/research-team"  # <> removed
    assert first["warc_record_id"].startswith("<urn:uuid:") and first["warc_date"].startswith("2024-")
    assert (first["content_type"], first["charset"], first["http_status"], first["warc_offset"]) == \
        ("text/html", "utf-8", 200, 865)
    assert first["content"].lstrip().lower().startswith(b"<!doctype html")
    # resource records: the WARC Content-Type, no HTTP status
    resources = [r for r in table.to_pylist() if r["url"].startswith("metadata://")]
    assert [(r["content_type"], r["http_status"]) for r in resources] == [("text/plain", None)] * 2


def test_offsets_are_seekable_record_starts():
    path = WARC_DATA / "sample-0001.warc.gz"
    data = path.read_bytes()
    for offset, url in rows(read("warc", path), "warc_offset", "url"):
        member = zlib.decompressobj(31).decompress(data[offset:], 4096)
        assert member.startswith(b"WARC/1.") and url.encode() in member


def test_chunked_and_gzip_encoded_bodies_are_decoded():
    [(body,)] = rows(read("warc", EDGE / "example-iana.org-chunked.warc"), "content")
    assert body.startswith(b"<!doctype html>") and body.rstrip().endswith(b"</html>")
    [(body,)] = rows(read("warc", EDGE / "example.warc.gz"), "content")  # Content-Encoding: gzip
    assert body.startswith(b"<!doctype html>") and len(body) == 1270


def test_wet_reader():
    [row] = read("wet", WARC_DATA / "whirlwind.warc.wet.gz").to_pylist()
    assert row["record"] == 1 and row["content_type"] == "text/plain"
    assert row["url"] == "https://an.wikipedia.org/wiki/Escopete" and "Escopete" in row["text"]


def test_arc_reader():
    path = WARC_DATA / "IAH-20080430204825-00000-blackbook-truncated.arc"
    table = read("arc", path)
    assert table.num_rows == len(arc_walk(path)) - 1  # every record but the filedesc header
    assert {r: reason for r, reason in rows(table, "record", "reason") if reason} == {
        1: "unsupported_content_type", 5: "unsupported_content_type", 6: "unsupported_content_type",
        7: "unsupported_content_type", 8: "unsupported_content_type"}
    good = [r for r in table.to_pylist() if r["reason"] is None]
    assert [r["url"] for r in good] == ["http://www.archive.org/robots.txt", "http://www.archive.org/",
                                        "http://www.archive.org/index.php"]
    assert good[0]["warc_date"] == "2008-04-30T20:48:25Z" and good[0]["warc_record_id"] is None
    assert good[2]["http_status"] == 200 and good[2]["content"].lstrip().startswith(b"<")
    assert good[1]["warc_offset"] == 2376
    [(url, body)] = rows(read("arc", EDGE / "example.arc.gz"), "url", "content")
    assert url == "http://example.com/" and body.startswith(b"<!doctype html>")


def test_arc_gz_and_damage(tmp_path):
    plain = WARC_DATA / "IAH-20080430204825-00000-blackbook-truncated.arc"
    expected = rows(read("arc", plain), "record", "reason", "content")
    members = [gzip.compress(r) for r in arc_walk(plain)]
    offsets = [sum(len(m) for m in members[:i]) for i in range(len(members))]
    (tmp_path / "iah.arc.gz").write_bytes(b"".join(members))
    table = read("arc", tmp_path / "iah.arc.gz")
    assert rows(table, "record", "reason", "content") == expected
    assert table.column("warc_offset").to_pylist() == offsets[1:]
    # a corrupt member costs its record only
    broken = bytearray(members[3])
    broken[len(broken) // 2] ^= 0xFF
    (tmp_path / "flip.arc.gz").write_bytes(b"".join(members[:3]) + bytes(broken) + b"".join(members[4:]))
    got = rows(read("arc", tmp_path / "flip.arc.gz"), "record", "reason")
    assert got == [(r, "corrupt_record" if r == 3 else reason) for r, reason, _ in expected]
    # cut inside a header line, and inside a body
    data = plain.read_bytes()
    (tmp_path / "head.arc").write_bytes(data[:2376 + 30])
    assert rows(read("arc", tmp_path / "head.arc"), "record", "reason")[-1] == (3, "truncated_record")
    (tmp_path / "body.arc").write_bytes(data[:3124 + 5000])
    assert rows(read("arc", tmp_path / "body.arc"), "record", "reason")[-1] == (4, "truncated_record")


def test_bad_arc_records():
    table = read("arc", EDGE / "bad.arc")
    assert rows(table, "record", "reason", "warc_offset") == [
        (0, "corrupt_record", 0), (1, "corrupt_record", 134), (2, "bad_http_headers", 202), (3, "corrupt_record", 262)]
    assert "invalid length 'abc'" in table.column("reason_detail")[3].as_py()


# ---------------------------------------------------------------------------------- damaged copies


def members(path: Path) -> list[tuple[int, bytes]]:
    """(offset, compressed bytes) of each gzip member of a file."""
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        end = len(data) - len(d.unused_data)
        out.append((pos, data[pos:end]))
        pos = end
    return out


SAMPLE = WARC_DATA / "sample-0000.warc.gz"
SAMPLE_ROWS = 24


def test_corrupt_gzip_member_costs_one_record(tmp_path):
    parts = members(SAMPLE)
    offset, member = parts[4]  # the response record 4
    broken = bytearray(member)
    broken[len(broken) // 2] ^= 0xFF
    path = tmp_path / "flip.warc.gz"
    path.write_bytes(b"".join(m for _, m in parts[:4]) + bytes(broken) + b"".join(m for _, m in parts[5:]))
    table = read("warc", path)
    assert table.num_rows == SAMPLE_ROWS
    bad = [r for r in table.to_pylist() if r["reason"]]
    assert [(r["record"], r["reason"], r["warc_offset"]) for r in bad] == [(4, "corrupt_record", offset)]
    assert "corrupt gzip member" in bad[0]["reason_detail"] and bad[0]["content"] is None
    assert table.column("record").to_pylist()[-1] == 47  # the rest of the file was read


def test_garbage_between_members_is_skipped(tmp_path):
    parts = members(SAMPLE)
    path = tmp_path / "garbage.warc.gz"
    path.write_bytes(b"".join(m for _, m in parts[:4]) + b"not gzip at all" * 5 + b"".join(m for _, m in parts[4:]))
    table = read("warc", path)
    bad = [(r["record"], r["reason"], r["warc_offset"]) for r in table.to_pylist() if r["reason"]]
    assert bad == [(4, "corrupt_record", parts[4][0])]
    # every document is still there; the damaged stretch counts as one record
    assert table.num_rows == SAMPLE_ROWS + 1 and table.column("record").to_pylist()[-1] == 48


def test_truncated_gzip_file(tmp_path):
    parts = members(SAMPLE)
    path = tmp_path / "cut.warc.gz"
    cut_member = parts[6][1]
    path.write_bytes(b"".join(m for _, m in parts[:6]) + cut_member[:len(cut_member) // 2])
    table = read("warc", path)
    assert rows(table, "record", "reason") == [(2, None), (4, None), (6, "truncated_record")]
    assert "ends inside the gzip member" in table.column("reason_detail")[2].as_py()


def test_truncated_plain_warc(tmp_path):
    data = (WARC_DATA / "IAH-urls-wget.warc").read_bytes()
    (tmp_path / "body.warc").write_bytes(data[:20000])  # inside the body of record 10
    assert rows(read("warc", tmp_path / "body.warc"), "record", "reason")[-1] == (10, "truncated_record")
    (tmp_path / "head.warc").write_bytes(data[:7446 + 100])  # inside the WARC header of record 10
    table = read("warc", tmp_path / "head.warc")
    assert rows(table, "record", "reason", "warc_offset")[-1] == (10, "truncated_record", 7446)


def http_record(block: bytes, rtype: str = "response", url: str = "http://example.com/",
                content_type: str = "application/http; msgtype=response", extra: str = "") -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: {rtype}\r\nWARC-Target-URI: {url}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
            f"WARC-Record-ID: <urn:uuid:{abs(hash(block))}>\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {len(block)}\r\n\r\n")
    return head.encode() + block + b"\r\n\r\n"


def http(body: bytes, *headers: str, status: str = "HTTP/1.1 200 OK") -> bytes:
    return "\r\n".join([status, *headers]).encode() + b"\r\n\r\n" + body


HTML = b"<html><body>" + b"hello world " * 20 + b"</body></html>"


def test_http_edge_cases(tmp_path):
    records = [
        http(HTML, "Content-Type: text/html; charset=ISO-8859-1"),  # 0 good
        http(HTML, "Content-Type: text/html", status="HTTP/1.1 XYZ"),  # 1 bad status line
        b"<html>no http head</html>",  # 2
        http(b"5\r\nhello\r\nZZ\r\n", "Content-Type: text/html", "Transfer-Encoding: chunked"),  # 3
        http(b"\x1f\x8b\x08\0\0\0\0\0\0\x03" + b"\xff" * 8, "Content-Type: text/html",  # 4: bad deflate
             "Content-Encoding: gzip"),
        http(gzip.compress(HTML)[:-30], "Content-Type: text/html", "Content-Encoding: gzip"),  # 5
        http(b"", "Content-Type: text/html"),  # 6 empty body
        http(b"\x89PNG", "Content-Type: image/png"),  # 7
        http(HTML),  # 8 no Content-Type
        http(HTML, "Content-Type: text/html"),  # 9 WARC-Truncated
        http(b"c\r\n<html>hi</ht\r\n3\r\nml>\r\n0\r\n\r\n", "content-type: TEXT/HTML", "transfer-encoding: chunked"),
        http(zlib.compress(HTML), "Content-Type: text/html", "Content-Encoding: deflate"),  # 11
        http(HTML * 100, "Content-Type: text/html"),  # 12 over max_body_bytes
        http(HTML * 600, "Content-Type: text/html"),  # 13 far over it: the body is not even read
        http(HTML, "Content-Type: application/xhtml+xml; charset=utf-8"),  # 14
    ]
    path = tmp_path / "http.warc"
    path.write_bytes(b"".join(http_record(b, extra="WARC-Truncated: length\r\n" if i == 9 else "")
                              for i, b in enumerate(records)))
    table = read("warc", path, max_body_bytes=5000)
    got = {r["record"]: r for r in table.to_pylist()}
    assert {i: r["reason"] for i, r in got.items()} == {
        0: None, 1: "bad_http_headers", 2: "bad_http_headers", 3: "bad_content_encoding",
        4: "bad_content_encoding", 5: "truncated_record", 6: "empty_text", 7: "unsupported_content_type",
        8: "unsupported_content_type", 9: "truncated_record", 10: None, 11: None, 12: "too_large",
        13: "too_large", 14: None}
    assert (got[0]["charset"], got[0]["content"]) == ("iso-8859-1", HTML)
    assert got[7]["reason_detail"] == "image/png" and got[8]["reason_detail"] == "(none)"
    assert got[10]["content"] == b"<html>hi</html>" and got[10]["content_type"] == "text/html"
    assert got[11]["content"] == HTML and got[14]["content"] == HTML
    assert got[13]["content_type"] == "text/html" and "max_body_bytes=5000" in got[13]["reason_detail"]
    # config: more types, fewer record types
    assert read("warc", path, content_types=["image/png"]).column("reason").to_pylist()[7] is None
    assert read("warc", path, record_types=["resource"]).num_rows == 0


def test_wrong_content_length_in_plain_warc(tmp_path):
    data = (WARC_DATA / "IAH-urls-wget.warc").read_bytes()
    at = data.index(b"Content-Length: 258", 6139)  # record 8 claims 58 bytes fewer than it holds
    path = tmp_path / "short.warc"
    path.write_bytes(data[:at] + b"Content-Length: 200" + data[at + 19:])
    table = read("warc", path)
    reasons = dict(rows(table, "record", "reason"))
    assert reasons[8] == "corrupt_record" and "Content-Length" in table.column("reason_detail")[3].as_py()
    assert len(reasons) == 19 and reasons[10] is None  # the next records are read


def test_garbage_before_a_record_in_plain_warc(tmp_path):
    data = (WARC_DATA / "IAH-urls-wget.warc").read_bytes()
    path = tmp_path / "junk.warc"
    path.write_bytes(data[:4126] + b"junk line\r\n" * 3 + data[4126:])  # after the response record 4
    reasons = dict(rows(read("warc", path), "record", "reason"))
    assert reasons[4] == "corrupt_record" and reasons[6] is None and len(reasons) == 19


def test_wet_edge_cases(tmp_path):
    def conversion(text: bytes) -> bytes:
        return http_record(text, rtype="conversion", content_type="text/plain")
    path = tmp_path / "x.warc.wet.gz"
    path.write_bytes(b"".join(gzip.compress(conversion(t)) for t in [b"caf\xc3\xa9 ok", b"caf\xe9", b"  \n", b"fine"]))
    assert rows(read("wet", path), "record", "reason", "text") == [
        (0, None, "café ok"), (1, "invalid_utf8", None), (2, "empty_text", None), (3, None, "fine")]


def test_unreadable_files(tmp_path):
    assert rows(read("warc", tmp_path / "missing.warc.gz"), "record", "reason") == [(0, "unreadable_file")]
    (tmp_path / "empty.warc").write_bytes(b"")
    assert read("warc", tmp_path / "empty.warc").num_rows == 0
    table = read("warc", WARC_DATA / "cc_en_head-0091.jsonl")  # not a WARC
    assert rows(table, "record", "reason") == [(0, "unreadable_file")]
    assert "no WARC record found" in table.column("reason_detail")[0].as_py()
    (tmp_path / "junk.warc.gz").write_bytes(gzip.compress(b"just some text\n"))
    assert rows(read("warc", tmp_path / "junk.warc.gz"), "reason") == [("unreadable_file",)]


def test_config_validation():
    assert {"warc", "wet", "arc"} <= set(registered_readers())
    with pytest.raises(ValidationError, match="extra"):
        warc.WarcConfig.model_validate({"format": "warc", "paths": ["x"], "max_body": 3})
    with pytest.raises(ValidationError, match="mime type"):
        warc.WarcConfig.model_validate({"format": "warc", "paths": ["x"], "content_types": ["text/*"]})
    with pytest.raises(ValidationError):
        warc.WarcConfig.model_validate({"format": "warc", "paths": ["x"], "record_types": ["request"]})
    cfg = warc.ArcConfig.model_validate({"format": "arc", "paths": ["x"], "content_types": [" Text/HTML "]})
    assert cfg.content_types == ["text/html"]


def test_helpers():
    assert warc.parse_content_type('text/HTML; Charset="UTF-8"') == ("text/html", "utf-8")
    assert warc.parse_content_type(None) == (None, None)
    assert warc.dechunk(b"not chunked at all", 100) == b"not chunked at all"
    with pytest.raises(warc.BodyError, match="more than"):
        warc.dechunk(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 7)
    assert warc.parse_arc_header(b"http://a.example/x y 1.2.3.4 20080430204825 text/html 12\n", 5).url == \
        "http://a.example/x y"
    assert re.match(r"\d{4}-\d\d-\d\dT", warc._arc_date("20080430204825"))


def test_extra_blank_lines_between_records_are_fine(tmp_path):
    records = [http_record(http(HTML, "Content-Type: text/html")) for _ in range(3)]
    path = tmp_path / "blank.warc"
    path.write_bytes(records[0] + b"\r\n" * 5 + records[1] + b"\n" + records[2] + b"\r\n")
    assert rows(read("warc", path), "record", "reason") == [(0, None), (1, None), (2, None)]


# ------------------------------------------------------------------------- the fast path (gzip files)


@pytest.fixture
def counts():
    warc.fast_path_counts.clear()
    yield warc.fast_path_counts
    warc.fast_path_counts.clear()


def careful(fmt: str, path: Path, monkeypatch, **config) -> list[dict]:
    """The rows of the careful path alone (the fast path switched off)."""
    with monkeypatch.context() as m:
        m.setattr(warc, "FAST_PATH", False)
        return read(fmt, path, **config).to_pylist()


GZIP_FILES = [("sample-0000.warc.gz", "warc"), ("sample-0001.warc.gz", "warc"), ("whirlwind.warc.gz", "warc"),
              ("whirlwind.warc.wat.gz", "warc"), ("whirlwind.warc.wet.gz", "wet"),
              ("edge-cases/example.warc.gz", "warc"), ("edge-cases/post-test.warc.gz", "warc"),
              ("edge-cases/example-resource.warc.gz", "warc")]


@pytest.mark.parametrize("name,fmt", GZIP_FILES, ids=[n for n, _ in GZIP_FILES])
def test_record_aligned_gzip_files_take_the_fast_path(name, fmt, counts, monkeypatch):
    path = WARC_DATA / name
    fast = read(fmt, path, file_index=3).to_pylist()
    assert dict(counts) == {"fast": 1}
    with monkeypatch.context() as m:
        m.setattr(warc, "FAST_PATH", False)
        assert read(fmt, path, file_index=3).to_pylist() == fast


@pytest.mark.parametrize("name", ["example-bad.warc.gz.bad", "example-bad-non-chunked.warc.gz",
                                  "example-wrong-chunks.warc.gz"])
def test_gzip_files_not_aligned_on_records_are_read_the_careful_way(name, counts, monkeypatch):
    fast = read("warc", EDGE / name).to_pylist()
    assert counts["careful_at_start"] == 1 and not counts["fast"]
    assert fast == careful("warc", EDGE / name, monkeypatch)


def damaged_copies(parts: list[bytes]) -> dict[str, bytes]:
    """Damage around the middle of a file of gzip members, one record each (at a response record of
    the doubled sample file)."""
    i = len(parts) // 2 + 2
    raw = [gzip.decompress(p) for p in parts]
    before, after = b"".join(parts[:i]), b"".join(parts[i + 1:])
    flipped = bytearray(parts[i])
    flipped[len(flipped) // 2] ^= 0xFF
    at = raw[i].index(b"Content-Length: ") + 16
    eol = raw[i].index(b"\r\n", at)
    short = raw[i][:at] + str(int(raw[i][at:eol]) - 3).encode() + raw[i][eol:]
    cut = raw[i].index(b"\r\n\r\n") + 100  # a member that ends inside the record's block
    return {
        "corrupt_member": before + bytes(flipped) + after,
        "garbage_between_members": before + b"not gzip" * 4 + parts[i] + after,
        "short_content_length": before + gzip.compress(short) + after,
        "junk_after_a_record": before + gzip.compress(raw[i] + b"junk\r\n") + after,
        # 4 bytes of junk instead of CRLF CRLF, then a member of the same size: only FastWARC's strict
        # mode (no resynchronising) stops there
        "junk_separator_then_same_size_member": before + gzip.compress(raw[i][:-4] + b"XXXX") + parts[i] + after,
        "two_records_in_one_member": before + gzip.compress(raw[i] + raw[i + 1]) + b"".join(parts[i + 2:]),
        "record_across_two_members": before + gzip.compress(raw[i][:cut]) + gzip.compress(raw[i][cut:]) + after,
        "empty_member_between_records": before + gzip.compress(b"") + parts[i] + after,
        "lone_lf_in_a_header": before + gzip.compress(raw[i][:10] + b"X-A: b\nWARC-Type: resource\r\n" + raw[i][10:])
        + after,
        "cut_in_the_last_member": b"".join(parts[:-1]) + parts[-1][:len(parts[-1]) // 2],
        "junk_after_the_last_record": b"".join(parts[:-1]) + gzip.compress(raw[-1] + b"zz"),
        "padding_after_the_last_member": b"".join(parts) + b"\0\0\r\n",
    }


DAMAGE = ["corrupt_member", "garbage_between_members", "short_content_length", "junk_after_a_record",
          "junk_separator_then_same_size_member",
          "two_records_in_one_member", "record_across_two_members", "empty_member_between_records",
          "lone_lf_in_a_header", "cut_in_the_last_member", "junk_after_the_last_record",
          "padding_after_the_last_member"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damage_hands_over_to_the_careful_path_with_the_same_rows(damage, tmp_path, counts, monkeypatch):
    """Rows emitted before the damage are kept, the careful path takes over at the last record the
    fast path had not emitted yet, and the rows are exactly those of the careful path alone."""
    copies = damaged_copies([m for _, m in members(SAMPLE)] * 2)
    assert sorted(copies) == sorted(DAMAGE)
    path = tmp_path / f"{damage}.warc.gz"
    path.write_bytes(copies[damage])
    fast = read("warc", path).to_pylist()
    assert dict(counts) == {"careful": 1}  # not at the start: rows were emitted before the damage
    assert fast == careful("warc", path, monkeypatch)


def test_hand_over_after_a_record_too_big_to_keep(tmp_path, counts, monkeypatch):
    """Past TAP_KEEP compressed bytes the careful path reads the file again up to the record."""
    path = tmp_path / "flip.warc.gz"
    path.write_bytes(damaged_copies([m for _, m in members(SAMPLE)] * 2)["corrupt_member"])
    monkeypatch.setattr(warc, "TAP_KEEP", 1)
    fast = read("warc", path).to_pylist()
    assert counts["careful"] == 1
    assert fast == careful("warc", path, monkeypatch)
    assert [r["reason"] for r in fast].count("corrupt_record") == 1 and len(fast) == 2 * SAMPLE_ROWS


def test_fast_path_on_a_large_well_formed_file(tmp_path, counts, monkeypatch):
    """Several reads of the file and pieces kept across them; offsets stay exact."""
    data = b"".join((WARC_DATA / n).read_bytes() for n in ("sample-0000.warc.gz", "sample-0001.warc.gz")) * 4
    path = tmp_path / "big.warc.gz"
    path.write_bytes(data)
    table = read("warc", path)
    assert dict(counts) == {"fast": 1}
    assert table.to_pylist() == careful("warc", path, monkeypatch)
    for offset, url in rows(table, "warc_offset", "url")[::7]:
        assert url.encode() in zlib.decompressobj(31).decompress(data[offset:], 4096)
