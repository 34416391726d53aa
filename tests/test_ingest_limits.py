"""Readers hold at most a configured amount per record, whatever the input holds.

Every input here is small on disk and huge when read (compressed streams of repeated members or
frames: 1 GiB lines here, a 2 GiB one through a whole `gristmill run` in tests/reliability), and every
read runs in a fresh process under a memory ceiling (tests/memory_ceiling.py) that kills it as soon
as it passes: a regression fails in seconds instead of swapping the machine.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from tests.memory_ceiling import run_bounded

MIB = 1 << 20
from curation.ingest.base import DEFAULT_MAX_RECORD_BYTES as DEFAULT_CAP  # noqa: E402
# A fresh interpreter with pyarrow and the readers imported is ~110 MiB here; the readers may add
# their record cap (16 MiB by default) a few times over, never the size of the oversized record.
CEILING_MIB = 600


def read_summary(fmt: str, path: str, config: dict) -> list[tuple]:
    """(record, reason, detail, text length) per row, read by the real reader (runs in the child)."""
    import pyarrow.fs as pafs

    from curation.ingest.base import get_reader

    cls = get_reader(fmt)
    reader = cls(cls.Config.model_validate({"format": fmt, "paths": ["unused"], **config}))
    rows = []
    for table in reader.read_file(path, 0, pafs.LocalFileSystem()):
        texts = table.column("text")
        lengths = [None if t is None else len(t) for t in texts.to_pylist()]
        rows += zip(table.column("record").to_pylist(), table.column("reason").to_pylist(),
                    table.column("reason_detail").to_pylist(), lengths)
    return rows


def _repeat_gzip(path: Path, head: bytes, fill_mib: int, tail: bytes) -> None:
    """head + fill_mib MiB of 'a' + tail as one gzip stream of members (a reader sees one file);
    the 1 MiB member is compressed once and written fill_mib times, so the file stays ~1 KB per MiB."""
    member = gzip.compress(b"a" * MIB, compresslevel=9)
    with path.open("wb") as f:
        f.write(gzip.compress(head))
        for _ in range(fill_mib):
            f.write(member)
        f.write(gzip.compress(tail))


def _repeat_zstd(path: Path, head: bytes, fill_mib: int, tail: bytes) -> None:
    cctx = zstandard.ZstdCompressor(level=19)
    frame = cctx.compress(b"a" * MIB)  # ~50 bytes: one 1 MiB frame, written fill_mib times
    with path.open("wb") as f:
        f.write(cctx.compress(head))
        for _ in range(fill_mib):
            f.write(frame)
        f.write(cctx.compress(tail))


def test_a_1_gib_jsonl_line_in_a_small_gzip_file_is_quarantined_and_the_rest_read(tmp_path):
    path = tmp_path / "bomb.jsonl.gz"
    _repeat_gzip(path, b'{"text": "before"}\n{"text": "', 1024, b'"}\n{"text": "after"}\n')
    assert path.stat().st_size < 4 * MIB
    rows, peak = run_bounded(read_summary, "jsonl", str(path), {}, ceiling_mib=CEILING_MIB)
    assert rows[0] == (0, None, None, len("before"))
    record, reason, detail, length = rows[1]
    size = 1024 * MIB + len('{"text": "') + len('"}')
    assert (record, reason, length) == (1, "too_large", None)
    assert detail == f"line of {size:,} bytes is over max_bytes={DEFAULT_CAP:,}"
    assert rows[2] == (2, None, None, len("after")) and len(rows) == 3
    assert peak < CEILING_MIB


def test_a_1_gib_text_line_in_a_small_zstd_file_is_quarantined_and_the_rest_read(tmp_path):
    path = tmp_path / "bomb.txt.zst"
    _repeat_zstd(path, b"first line\n", 1024, b"\nlast line\n")
    assert path.stat().st_size < MIB
    rows, peak = run_bounded(read_summary, "text", str(path), {"mode": "line"}, ceiling_mib=CEILING_MIB)
    assert [(r, reason) for r, reason, _, _ in rows] == [(0, None), (1, "too_large"), (2, None)]
    assert rows[1][2] == f"line of {1024 * MIB:,} bytes is over max_bytes={DEFAULT_CAP:,}"


def test_a_text_file_larger_than_memory_is_quarantined_without_being_read(tmp_path):
    path = tmp_path / "huge.txt.zst"
    _repeat_zstd(path, b"", 32 * 1024, b"")  # 32 GiB decompressed, more than this machine's memory
    rows, _ = run_bounded(read_summary, "text", str(path), {}, ceiling_mib=CEILING_MIB, timeout_s=60)
    assert rows == [(0, "too_large", f"file holds more than max_bytes={DEFAULT_CAP} bytes (not read further)", None)]


def test_the_cap_is_configurable_and_lines_at_the_cap_are_kept(tmp_path):
    path = tmp_path / "lines.jsonl"
    at_cap = json.dumps({"text": "x" * 100})
    lines = [at_cap, json.dumps({"text": "y" * 101}), at_cap + "\r", "", json.dumps({"text": "z"})]
    path.write_text("\n".join(lines) + "\n")
    cap = len(at_cap)
    rows = read_summary("jsonl", str(path), {"max_bytes": cap})
    assert [(r, reason) for r, reason, _, _ in rows] == [(0, None), (1, "too_large"), (2, None), (4, None)]
    assert rows[1][2] == f"line of {cap + 1:,} bytes is over max_bytes={cap:,}"
    # the same cap in line mode: a line without its final newline is measured the same way
    text = tmp_path / "lines.txt"
    text.write_bytes(b"a" * 10 + b"\n" + b"b" * 11)
    rows = read_summary("text", str(text), {"mode": "line", "max_bytes": 10})
    assert [(r, reason, d) for r, reason, d, _ in rows] == [(0, None, None),
                                                           (1, "too_large", "line of 11 bytes is over max_bytes=10")]


def _huge_strings(rows: int, size: int) -> pa.Table:
    return pa.table({"text": pa.array([f"{i:04d}" + "a" * (size - 4) for i in range(rows)], pa.string())})


def test_a_parquet_page_of_huge_strings_is_refused_without_being_decoded(tmp_path):
    path = tmp_path / "one-huge-page.parquet"
    # Arrow's writer checks its page size every 1,024 values: these 24 rows are one 384 MiB page.
    pq.write_table(_huge_strings(24, 16 * MIB), path, use_dictionary=False, compression="zstd")
    assert path.stat().st_size < MIB
    rows, _ = run_bounded(read_summary, "parquet", str(path), {}, ceiling_mib=CEILING_MIB)
    detail = ("row group 0: a page of 402,653,286 bytes in column 'text' is over max_page_bytes=268,435,456; "
              "its rows are not read")
    assert rows == [(i, "too_large", detail, None) for i in range(24)]


def test_a_parquet_row_group_of_huge_strings_is_read_a_few_rows_at_a_time(tmp_path):
    path = tmp_path / "big-rows.parquet"
    # 384 MiB of text in one row group, one 16 MiB value per page
    pq.write_table(_huge_strings(24, 16 * MIB), path, use_dictionary=False, compression="zstd",
                   write_batch_size=1, data_page_size=MIB)
    rows, _ = run_bounded(read_summary, "parquet", str(path), {}, ceiling_mib=400)
    assert [(r, reason, n) for r, reason, _, n in rows] == [(i, None, 16 * MIB) for i in range(24)]


def test_parquet_values_over_the_cap_are_quarantined_with_their_size(tmp_path):
    path = tmp_path / "mixed.parquet"
    pq.write_table(pa.table({"text": ["short", "x" * 5000, None, "  "]}), path)
    rows = read_summary("parquet", str(path), {"max_bytes": 1000})
    assert rows == [(0, None, None, 5), (1, "too_large", "value of 5,000 bytes is over max_bytes=1,000", None),
                    (2, "missing_field", "column 'text' is null", None),
                    (3, "empty_text", "column 'text' is empty or only whitespace", None)]


def test_page_headers_are_read_for_every_page_kind(tmp_path):
    """Dictionary pages, v1 and v2 data pages, compressed or not: the walk covers the whole column
    chunk, page sizes add up to Arrow's total, and values add up to the rows."""
    import pyarrow.fs as pafs

    from curation.ingest.parquet_pages import column_chunk_pages

    table = pa.table({"text": [("word%d " % (i % 50)) * (1 + i % 300) for i in range(5000)],
                      "label": [str(i % 3) for i in range(5000)]})
    for version, compression in (("1.0", "snappy"), ("2.0", "zstd"), ("1.0", "none")):
        path = tmp_path / f"pages-{version}-{compression}.parquet"
        pq.write_table(table, path, row_group_size=2000, data_page_version=version, compression=compression,
                       data_page_size=64 << 10, use_dictionary=["label"], write_batch_size=100)
        with pafs.LocalFileSystem().open_input_file(str(path)) as source:
            meta = pq.ParquetFile(source).metadata
            for g in range(meta.num_row_groups):
                for c in range(meta.num_columns):
                    chunk = meta.row_group(g).column(c)
                    pages = list(column_chunk_pages(source, chunk))
                    assert sum(p.compressed_size for p in pages) < chunk.total_compressed_size
                    assert sum(p.uncompressed_size for p in pages) < chunk.total_uncompressed_size
                    assert sum(p.num_values or 0 for p in pages) == chunk.num_values
                    if c == 0:
                        assert len(pages) > 3  # plain text: several data pages
                    else:
                        assert pages[0].num_values is None  # the label's dictionary page


def test_a_corrupt_page_header_makes_the_file_unreadable_not_a_hang(tmp_path):
    path = tmp_path / "corrupt.parquet"
    pq.write_table(_huge_strings(3, MIB), path, use_dictionary=False, compression="zstd")
    raw = bytearray(path.read_bytes())
    raw[4:36] = b"\xff" * 32  # the first page header (data starts at offset 4)
    path.write_bytes(bytes(raw))
    rows = read_summary("parquet", str(path), {"max_page_bytes": MIB})
    assert len(rows) == 1 and rows[0][:2] == (0, "unreadable_file") and "CorruptPageHeader" in rows[0][2]


def _gzip_member_of(parts: list[bytes], repeat_middle: int) -> bytes:
    """One gzip member of parts[0] + parts[1] * repeat_middle + parts[2], compressed as it streams."""
    import zlib

    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = [c.compress(parts[0])]
    out += [c.compress(parts[1]) for _ in range(repeat_middle)]
    out += [c.compress(parts[2]), c.flush()]
    return b"".join(out)


def test_a_1_gib_warc_body_is_quarantined_and_the_next_record_read(tmp_path):
    from tests.test_ingest_warc import HTML, http, http_record

    body_mib = 1024
    head = http(b"", "Content-Type: text/html")
    size = len(head) + body_mib * MIB
    warc_head = http_record(b"").split(b"Content-Length: 0")[0] + f"Content-Length: {size}\r\n\r\n".encode()
    big = _gzip_member_of([warc_head + head, b"a" * MIB, b"\r\n\r\n"], body_mib)
    small = gzip.compress(http_record(http(HTML, "Content-Type: text/html"), url="http://example.com/next"))
    path = tmp_path / "big-body.warc.gz"
    path.write_bytes(big + small)
    assert path.stat().st_size < 8 * MIB
    rows, _ = run_bounded(read_summary, "warc", str(path), {}, ceiling_mib=CEILING_MIB)
    assert [(r, reason) for r, reason, _, _ in rows] == [(0, "too_large"), (1, None)]
    assert rows[0][2] == f"body of {body_mib * MIB} bytes is over max_body_bytes={10 * MIB}"
