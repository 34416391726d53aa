"""The report's scan reads a folder file by file and holds a bounded amount; the Parquet a run writes
has row groups of bounded size, whatever block Ray Data handed the writer."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.report.scan import ScoreRange, folder_schema, scan_folder
from pipelines.rundir import MAX_ROW_GROUP_BYTES, row_group_rows, write_parquet_atomic
from tests.memory_ceiling import run_bounded


def test_run_parquet_row_groups_are_capped(tmp_path):
    text = "w" * (1 << 20)
    table = pa.table({"doc_id": pa.array(range(100), pa.int64()), "text": [text] * 100})
    path = str(tmp_path / "part.parquet")
    write_parquet_atomic(pafs.LocalFileSystem(), path, table)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 100 and meta.num_row_groups > 1
    assert all(meta.row_group(g).total_byte_size <= MAX_ROW_GROUP_BYTES + (1 << 20) for g in range(meta.num_row_groups))
    assert pq.read_table(path).equals(table)
    small = pa.table({"doc_id": [1, 2, 3]})
    assert row_group_rows(small) == 3 and row_group_rows(small.slice(0, 0)) == 1
    one_huge = pa.table({"text": ["x" * (MAX_ROW_GROUP_BYTES + 1)]})
    assert row_group_rows(one_huge) == 1


def test_files_with_other_columns_scan_as_one_folder(tmp_path):
    """A column one file lacks, or has as all-null (Parquet type ``null``), is null in that file's rows."""
    a = pa.table({"doc_id": pa.array([1, 2], pa.int64()), "text": ["one", "two"], "url": ["http://a.org/x", None],
                  "gopher.words": pa.array([10, 20], pa.int32())})
    b = pa.table({"doc_id": pa.array([3], pa.int64()), "text": ["three"], "url": pa.nulls(1, pa.null()),
                  "langid.lang": ["en"]})
    files = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    pq.write_table(a, files[0])
    pq.write_table(b, files[1])
    fs = pafs.LocalFileSystem()
    assert set(folder_schema(fs, files).names) == {"doc_id", "text", "url", "gopher.words", "langid.lang"}
    stats = scan_folder(fs, files, {"gopher.words": ScoreRange(0, 30, integer=True)})
    assert (stats.rows, stats.chars, stats.with_url) == (3, 3 + 3 + 5, 1)
    assert stats.langs == {"(none)": 2, "en": 1} and stats.domains == {"a.org": 1}
    words = stats.scores["gopher.words"]
    assert (words.n, words.nulls, words.total) == (2, 1, 30.0)
    assert sorted(r["doc_id"] for r in stats.sample) == [1, 2, 3]


def _scan_rows(path: str) -> int:
    return scan_folder(pafs.LocalFileSystem(), [path], {}).rows


def _write_block(path: str, rows: int) -> None:
    """``rows`` rows of ~30 KB as ONE table through the run's writer, as a stage writes a big block."""
    text = pa.array(["lorem ipsum dolor sit amet " * 1100] * rows)
    write_parquet_atomic(pafs.LocalFileSystem(), path, pa.table({"doc_id": pa.array(range(rows), pa.int64()),
                                                                 "text": text}))


def test_scan_memory_does_not_grow_with_the_file(tmp_path):
    """A file six times larger (one 360 MB block written at once) is scanned in about the memory of
    the small one: row groups are capped at write and the scan holds one batch of one row group."""
    small, large = str(tmp_path / "small.parquet"), str(tmp_path / "large.parquet")
    _write_block(small, 2_000)
    _write_block(large, 12_000)
    assert pq.ParquetFile(large).metadata.num_row_groups >= 10
    rows, peak_small = run_bounded(_scan_rows, small, ceiling_mib=1_000)
    assert rows == 2_000
    rows, peak_large = run_bounded(_scan_rows, large, ceiling_mib=1_000)
    assert rows == 12_000
    assert peak_large < peak_small + 48, (peak_small, peak_large)
