"""Input readers for jsonl, parquet and text files: every quarantine reason, compression, real data."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import zstandard
from pydantic import ValidationError

import curation.ingest.base as base
import curation.ingest.files as files
from curation.ingest.base import get_reader

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
FS = pafs.LocalFileSystem()


def read(fmt: str, path: Path | str, file_index: int = 0, **config) -> pa.Table:
    """Run a reader over one file and check what every reader promises about its batches."""
    cls = get_reader(fmt)
    reader = cls(cls.Config.model_validate({"format": fmt, "paths": ["unused"], **config}))
    tables = list(reader.read_file(str(path), file_index, FS))
    assert all(t.num_rows for t in tables), "a reader must never yield an empty table"
    schema = base.BatchBuilder(str(path), file_index, _extras(reader.config)).flush().schema
    assert all(t.schema == schema for t in tables)
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    assert table.column("source").to_pylist() == [str(path)] * table.num_rows
    assert table.column("doc_id").to_pylist() == [file_index << 32 | r for r in table.column("record").to_pylist()]
    return table


def _extras(config) -> tuple[str, ...]:
    return config.extra_columns() if hasattr(config, "extra_columns") else ()


def rows(table: pa.Table, *columns: str) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns)))


def reasons(table: pa.Table) -> dict[int, str | None]:
    return dict(rows(table, "record", "reason"))


# ------------------------------------------------------------------------------------------ jsonl


BAD_LINES = [
    b'{"text": "good one", "url": "http://a.example/", "id": 7}',  # 0 kept
    b"",  # 1 blank: no row
    b"   \t",  # 2 whitespace only: no row
    b'{"text": "caf\xe9"}',  # 3 latin-1 byte
    b'{"text": "unterminated',  # 4
    b"[1, 2]",  # 5
    b'{"url": "http://b.example/"}',  # 6 text absent
    b'{"text": null}',  # 7
    b'{"text": 42}',  # 8
    b'{"text": " \\n\\t "}',  # 9
    b'{"text": "escaped \\u0000 nul"}',  # 10 kept, holds U+0000
    b'{"text": "raw \x00 nul"}',  # 11 kept: a raw control char in a string is unambiguous
    b'{"text": "lone \\ud800 surrogate"}',  # 12 not valid Unicode
    b'{"text": "pair \\ud83d\\ude00"}',  # 13 kept: a valid surrogate pair is one emoji
    b"[" * 100_000 + b"]" * 100_000,  # 14 too deep for the parser
    b'{"text": "last line, no newline", "url": 5}',  # 15 kept, url not a string → null
]


def test_jsonl_every_bad_line_kind(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(BAD_LINES))
    table = read("jsonl", path, file_index=2)
    assert reasons(table) == {
        0: None, 3: "invalid_utf8", 4: "invalid_json", 5: "not_an_object", 6: "missing_field",
        7: "missing_field", 8: "wrong_type", 9: "empty_text", 10: None, 11: None, 12: "invalid_utf8",
        13: None, 14: "invalid_json", 15: None,
    }
    assert table.column("doc_id").to_pylist()[:2] == [2 << 32 | 0, 2 << 32 | 3]
    kept = {r: t for r, t, reason in rows(table, "record", "text", "reason") if reason is None}
    assert kept == {0: "good one", 10: "escaped \x00 nul", 11: "raw \x00 nul", 13: "pair \U0001f600",
                    15: "last line, no newline"}
    details = dict(rows(table, "record", "reason_detail"))
    assert details[5] == "line holds a JSON array, not an object"
    assert details[6] == "field 'text' is absent" and details[7] == "field 'text' is null"
    assert details[8] == "field 'text' is a JSON number, not a string"
    assert "surrogate" in details[12] and "0xe9" in details[3]
    # Quarantined rows hold no text; the url is carried wherever the object could be read.
    assert all(t is None for t, reason in rows(table, "text", "reason") if reason)
    urls = dict(rows(table, "record", "url"))
    assert urls[0] == "http://a.example/" and urls[6] == "http://b.example/" and urls[15] is None


def test_jsonl_fields_dotted_ids_and_kept_fields(tmp_path):
    path = tmp_path / "meta.jsonl"
    docs = [
        {"meta": {"body": "nested text", "link": "http://n.example/"}, "id": 7, "tags": ["a", "é"], "lang": "en"},
        {"meta.body": "a literal dotted key", "id": "doc-2", "tags": None},
        {"meta": {"body": ""}, "id": {"shard": 1}},
    ]
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    table = read("jsonl", path, text_field="meta.body", url_field="meta.link", id_field="id",
                 keep_fields=["tags", "lang"])
    assert table.column_names[6:] == ["url", "source_id", "tags", "lang"]
    assert rows(table, "text", "url", "source_id", "tags", "lang", "reason") == [
        ("nested text", "http://n.example/", "7", '["a","é"]', "en", None),
        ("a literal dotted key", None, "doc-2", None, None, None),
        (None, None, '{"shard":1}', None, None, "empty_text"),
    ]
    no_url = read("jsonl", path, text_field="meta.body", url_field=None)
    assert "url" not in no_url.column_names


def test_jsonl_bom_crlf_and_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "BATCH_ROWS", 3)
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(b'{"text": "doc %d"}\r\n' % i for i in range(7)))
    cls = get_reader("jsonl")
    tables = list(cls(cls.Config(format="jsonl", paths=["x"])).read_file(str(path), 0, FS))
    assert [t.num_rows for t in tables] == [3, 3, 1]
    table = pa.concat_tables(tables)
    assert table.column("text").to_pylist() == [f"doc {i}" for i in range(7)]
    assert table.column("reason").null_count == 7


def _lines(n: int) -> bytes:
    return b"".join(json.dumps({"text": f"document {i} " + "filler " * 20}).encode() + b"\n" for i in range(n))


def test_jsonl_gzip_multi_member_and_truncated(tmp_path):
    whole = tmp_path / "two-members.jsonl.gz"
    whole.write_bytes(gzip.compress(_lines(3)) + gzip.compress(_lines(2)))
    assert read("jsonl", whole).num_rows == 5

    blob = gzip.compress(_lines(2000))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    table = read("jsonl", cut, file_index=1)
    good = table.filter(pa.compute.is_null(table.column("reason")))
    broken = table.filter(pa.compute.is_valid(table.column("reason")))
    # Every line that is complete in the surviving bytes is kept, none more.
    complete = zlib.decompressobj(wbits=31).decompress(blob[: len(blob) // 2]).count(b"\n")
    assert 0 < good.num_rows == complete < 2000
    assert good.column("record").to_pylist() == list(range(complete))
    assert rows(broken, "record", "reason") == [(good.num_rows, "unreadable_file")]
    assert broken.column("reason_detail")[0].as_py().startswith("EOFError")
    assert broken.column("doc_id")[0].as_py() == 1 << 32 | good.num_rows


def test_jsonl_zstd_frames_truncation_and_garbage(tmp_path):
    zc = zstandard.ZstdCompressor()
    for suffix in (".jsonl.zst", ".jsonl.zstd"):
        path = tmp_path / f"two-frames{suffix}"
        path.write_bytes(zc.compress(_lines(4)) + zc.compress(_lines(3)))
        table = read("jsonl", path)
        assert table.num_rows == 7 and table.column("reason").null_count == 7
        assert table.column("text")[4].as_py().startswith("document 0 ")  # second frame starts over

    blob = zc.compress(_lines(3000))
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(blob[: len(blob) // 2])
    table = read("jsonl", cut)
    complete = zstandard.ZstdDecompressor().decompressobj().decompress(blob[: len(blob) // 2]).count(b"\n")
    assert 0 < complete < 3000
    assert table.num_rows == complete + 1 and table.column("reason").null_count == complete
    last = table.slice(complete)
    assert rows(last, "record", "reason") == [(complete, "unreadable_file")]
    assert "truncated" in last.column("reason_detail")[0].as_py()

    garbage = tmp_path / "garbage.jsonl.zst"
    garbage.write_bytes(b"this is not zstd at all\n" * 10)
    assert rows(read("jsonl", garbage), "record", "reason") == [(0, "unreadable_file")]


def test_jsonl_compression_override_and_missing_file(tmp_path):
    path = tmp_path / "no-extension"
    path.write_bytes(gzip.compress(_lines(2)))
    assert read("jsonl", path, compression="gzip").num_rows == 2
    # Read as plain, the gzip bytes are not UTF-8: quarantined line by line, never a crash.
    assert set(read("jsonl", path, compression="none").column("reason").to_pylist()) <= {"invalid_utf8", "invalid_json"}

    missing = read("jsonl", tmp_path / "missing.jsonl")
    assert rows(missing, "record", "reason") == [(0, "unreadable_file")]
    assert "FileNotFoundError" in missing.column("reason_detail")[0].as_py()


def test_jsonl_config_is_strict():
    cls = get_reader("jsonl").Config
    with pytest.raises(ValidationError, match="text_feild"):
        cls.model_validate({"format": "jsonl", "paths": ["x"], "text_feild": "body"})
    with pytest.raises(ValidationError, match="reserved column names"):
        cls.model_validate({"format": "jsonl", "paths": ["x"], "keep_fields": ["doc_id"]})
    with pytest.raises(ValidationError, match="twice"):
        cls.model_validate({"format": "jsonl", "paths": ["x"], "keep_fields": ["a", "a"]})
    with pytest.raises(ValidationError):
        cls.model_validate({"format": "parquet", "paths": ["x"]})


def test_jsonl_real_ccnet_file():
    path = DATA / "warc" / "cc_en_head-0091.jsonl"
    lines = path.read_bytes().split(b"\n")
    non_blank = sum(1 for line in lines if line.strip())
    first = json.loads(lines[0])

    table = read("jsonl", path, file_index=5)
    assert table.num_rows == non_blank and table.column("reason").null_count == non_blank
    assert table.column("text")[0].as_py() == first["text"]
    assert table.column("url").null_count == non_blank  # CCNet has no top-level `url`

    table = read("jsonl", path, url_field="id", id_field="id", keep_fields=["metadata.source_domain"])
    assert table.column("url")[0].as_py() == first["id"] == table.column("source_id")[0].as_py()
    assert table.column("metadata.source_domain")[0].as_py() == first["metadata"]["source_domain"]
    assert read("jsonl", path, url_field="metadata.url").column("url")[0].as_py() == first["metadata"]["url"]


# ---------------------------------------------------------------------------------------- parquet


def test_parquet_rows_nulls_blanks_and_fields(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({
        "text": ["first doc", None, "  \t\n", "", "fifth doc", "sixth doc"],
        "url": ["http://1/", "http://2/", None, "http://4/", "http://5/", "http://6/"],
        "id": [10, 11, 12, 13, 14, None],
        "tags": [["x"], [], None, ["y", "z"], ["é"], ["w"]],
        "ignored": list(range(6)),
    }), path, row_group_size=4)
    table = read("parquet", path, file_index=3, id_field="id", keep_fields=["tags", "absent"])
    assert rows(table, "record", "text", "reason") == [
        (0, "first doc", None), (1, None, "missing_field"), (2, None, "empty_text"), (3, None, "empty_text"),
        (4, "fifth doc", None), (5, "sixth doc", None)]
    assert table.column("url").to_pylist() == ["http://1/", "http://2/", None, "http://4/", "http://5/", "http://6/"]
    assert table.column("source_id").to_pylist() == ["10", "11", "12", "13", "14", None]
    assert table.column("tags").to_pylist() == ['["x"]', "[]", None, '["y","z"]', '["é"]', '["w"]']
    assert table.column("absent").null_count == 6
    assert table.column("reason_detail").to_pylist()[1] == "column 'text' is null"


def test_parquet_text_column_missing_or_not_string(tmp_path):
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"body": ["a", "b"]}), missing)
    table = read("parquet", missing, file_index=1)
    assert rows(table, "doc_id", "record", "reason") == [(1 << 32, 0, "missing_column")]
    assert "body" in table.column("reason_detail")[0].as_py()
    assert read("parquet", missing, text_field="body").num_rows == 2

    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), numbers)
    assert rows(read("parquet", numbers), "record", "reason") == [(0, "wrong_type")]


def test_parquet_string_variants_and_odd_url(tmp_path):
    path = tmp_path / "large.parquet"
    pq.write_table(pa.table({"text": pa.array(["a doc", "b doc"], pa.large_string()), "url": [1, 2]}), path)
    table = read("parquet", path)
    assert table.column("text").to_pylist() == ["a doc", "b doc"]
    assert table.column("url").null_count == 2  # a non-string url column gives no url

    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    assert read("parquet", empty).num_rows == 0


def test_parquet_not_parquet_and_corrupt_row_group(tmp_path):
    fake = tmp_path / "fake.parquet"
    fake.write_text('{"text": "I am JSON"}\n')
    table = read("parquet", fake)
    assert rows(table, "record", "reason") == [(0, "unreadable_file")]

    path = tmp_path / "corrupt.parquet"
    pq.write_table(pa.table({"text": [f"document {i}" for i in range(30)]}), path, row_group_size=10)
    column = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + column.total_compressed_size] = b"\xab" * column.total_compressed_size
    path.write_bytes(bytes(data))
    table = read("parquet", path)
    assert table.num_rows == 11
    assert table.column("text").to_pylist()[:10] == [f"document {i}" for i in range(10)]
    assert rows(table.slice(10), "record", "reason") == [(10, "unreadable_file")]


def test_parquet_batches_are_cut_by_rows_and_bytes(tmp_path, monkeypatch):
    path = tmp_path / "many.parquet"
    pq.write_table(pa.table({"text": ["x" * 100] * 10}), path)
    monkeypatch.setattr(files, "BATCH_ROWS", 4)
    cls = get_reader("parquet")
    reader = cls(cls.Config(format="parquet", paths=["x"]))
    assert [t.num_rows for t in reader.read_file(str(path), 0, FS)] == [4, 4, 2]
    monkeypatch.setattr(files, "BATCH_ROWS", 10)
    monkeypatch.setattr(files, "BATCH_BYTES", 450)
    tables = list(reader.read_file(str(path), 0, FS))
    assert [t.num_rows for t in tables] == [4, 4, 2]
    assert pa.concat_tables(tables).column("record").to_pylist() == list(range(10))


# ------------------------------------------------------------------------------------------- text


def test_text_file_mode(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes(b"\xef\xbb\xbfOne whole document.\nSecond line.\n")
    assert rows(read("text", good, file_index=4), "doc_id", "text", "reason") == [
        (4 << 32, "One whole document.\nSecond line.\n", None)]

    cases = {"empty.txt": b"", "blank.txt": b" \n\t\n", "bad.txt": b"caf\xe9 au lait"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert read("text", tmp_path / "empty.txt").column("reason").to_pylist() == ["empty_text"]
    assert read("text", tmp_path / "blank.txt").column("reason").to_pylist() == ["empty_text"]
    assert read("text", tmp_path / "bad.txt").column("reason").to_pylist() == ["invalid_utf8"]
    assert read("text", tmp_path / "bad.txt", errors="replace").column("text").to_pylist() == ["caf\ufffd au lait"]
    assert read("text", tmp_path / "bad.txt", encoding="latin-1").column("text").to_pylist() == ["café au lait"]
    assert read("text", tmp_path / "bad.txt", encoding="ascii").column("reason").to_pylist() == ["invalid_encoding"]

    too_large = read("text", good, max_bytes=10)
    assert rows(too_large, "record", "reason") == [(0, "too_large")]

    packed = tmp_path / "packed.txt.gz"
    packed.write_bytes(gzip.compress("Grüße aus dem Archiv.".encode()))
    assert read("text", packed).column("text").to_pylist() == ["Grüße aus dem Archiv."]
    broken = tmp_path / "broken.txt.zst"
    broken.write_bytes(zstandard.ZstdCompressor().compress(b"x" * 100_000)[:20])
    assert read("text", broken).column("reason").to_pylist() == ["unreadable_file"]


def test_text_line_mode(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes(b"first line\r\n\n   \nfourth \xff line\nfifth line\n\nseventh, no newline")
    table = read("text", path, file_index=1, mode="line")
    assert rows(table, "record", "text", "reason") == [
        (0, "first line", None), (3, None, "invalid_utf8"), (4, "fifth line", None), (6, "seventh, no newline", None)]

    cut = tmp_path / "cut.txt.gz"
    blob = gzip.compress(b"".join(b"line number %d with some words\n" % i for i in range(5000)))
    cut.write_bytes(blob[: len(blob) // 2])
    table = read("text", cut, mode="line")
    assert table.column("reason").to_pylist()[-1] == "unreadable_file"
    assert table.column("record").to_pylist() == list(range(table.num_rows))


def test_text_config_checks():
    cls = get_reader("text").Config
    with pytest.raises(ValidationError, match="cannot split utf-16"):
        cls.model_validate({"format": "text", "paths": ["x"], "mode": "line", "encoding": "utf-16"})
    with pytest.raises(ValidationError, match="unknown text encoding"):
        cls.model_validate({"format": "text", "paths": ["x"], "encoding": "klingon"})
    with pytest.raises(ValidationError):
        cls.model_validate({"format": "text", "paths": ["x"], "mode": "paragraph"})
    assert cls.model_validate({"format": "text", "paths": ["x"], "encoding": "UTF8"}).encoding == "utf-8"


def test_text_real_files():
    path = DATA / "text" / "sotu" / "1790_george_washington_n.txt"
    content = path.read_text(encoding="utf-8")
    assert read("text", path).column("text").to_pylist() == [content.removeprefix("\ufeff")]
    table = read("text", path, file_index=9, mode="line")
    lines = path.read_bytes().split(b"\n")
    non_blank = [i for i, line in enumerate(lines) if line.strip()]
    assert table.column("record").to_pylist() == non_blank
    assert table.column("reason").null_count == len(non_blank)
