"""The scale benchmark's corpus generator (benchmarks/scale_corpus.py) at ~300 records: valid WARC as
the project's own reader sees it, deterministic for a seed, planted duplicates as planted, and
resumable file by file. No Ray."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

import curation.ingest.warc as warc
from benchmarks import scale_corpus as sc

DOCS, FILES = 300, 3
FS = pafs.LocalFileSystem()


def read_warc(path: Path, file_index: int) -> pa.Table:
    reader = warc.WarcReader(warc.WarcReader.Config.model_validate({"format": "warc", "paths": ["unused"]}))
    return pa.concat_tables(reader.read_file(str(path), file_index, FS))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scale") / "300"
    result = sc.generate(DOCS, FILES, seed=0, jobs=1, folder=folder, log=lambda m: None)
    assert result["written"] == [0, 1, 2]
    return folder


def test_every_record_is_a_document_read_back_by_the_warc_reader(corpus):
    stamp = json.loads((corpus / "_complete.json").read_text())
    assert stamp["records"] == DOCS and sum(stamp["counts"].values()) == DOCS
    assert stamp["warc_bytes"] == sum((corpus / sc.file_name(i)).stat().st_size for i in range(FILES))
    assert stamp["params"]["docs"] == DOCS and stamp["params"]["files"] == FILES
    assert {"article", "exact_dup", "near_dup"} <= {k for k, n in stamp["counts"].items() if n}
    total = 0
    for i in range(FILES):
        path = corpus / sc.file_name(i)
        planted = sc.read_planted(corpus, i)
        table = read_warc(path, i)
        assert table.column("reason").null_count == table.num_rows, "nothing quarantined"
        assert table.num_rows == planted["records"] == len(planted["kinds"])
        # the warcinfo record is record 0; responses are 1..n, as sc.locate() maps them
        assert table.column("record").to_pylist() == list(range(1, planted["records"] + 1))
        assert set(table.column("content_type").to_pylist()) == {"text/html"}
        assert set(table.column("charset").to_pylist()) == {"utf-8"}
        assert set(table.column("http_status").to_pylist()) == {200}
        first, count = sc.file_bounds(DOCS, FILES, i)
        assert (first, count) == (planted["first"], planted["records"])
        assert all(sc.locate(DOCS, FILES, first + j) == (i, j + 1) for j in range(count))
        ids = table.column("warc_record_id").to_pylist()
        assert len(set(ids)) == len(ids)
        total += table.num_rows
        # one gzip member per record (as Common Crawl): the file is warcinfo + n members
        data = path.read_bytes()
        members, pos = 0, 0
        while pos < len(data):
            d = zlib.decompressobj(31)
            d.decompress(data[pos:])
            pos = len(data) - len(d.unused_data)
            members += 1
        assert members == count + 1
        assert gzip.decompress(data).startswith(b"WARC/1.0\r\nWARC-Type: warcinfo\r\n")
    assert total == DOCS


def test_planted_duplicates_are_copies_of_their_originals(corpus):
    bodies, src = {}, sc.sources()
    for i in range(FILES):
        table = read_warc(corpus / sc.file_name(i), i)
        for record, content, url in zip(*(table.column(c).to_pylist() for c in ("record", "content", "url"))):
            bodies[(i, record)] = (content, url)
    dups = [d for i in range(FILES) for d in sc.read_planted(corpus, i)["duplicates"]]
    kinds = {d["g"]: sc.kind_of(0, d["g"]) for d in dups}
    exact = [d for d in dups if kinds[d["g"]] == "exact_dup"]
    near = [d for d in dups if kinds[d["g"]] == "near_dup"]
    assert exact and near
    for d in dups:
        assert sc.kind_of(0, d["original"]) == "article" and d["original"] < d["g"]
        copy, original = sc.make_doc(0, d["g"], src), sc.make_doc(0, d["original"], src)
        file, record = sc.locate(DOCS, FILES, d["g"])
        body, url = bodies[(file, record)]
        obody, ourl = bodies[(d["original_file"], d["original_record"])]
        assert url != ourl
        if d in exact:
            assert body == obody, "an exact duplicate has its original's body"
            assert copy.main_text() == original.main_text()
        else:
            assert body != obody and copy.main_text() != original.main_text()
            assert 0.5 < d["jaccard"] < 1 and 0.01 <= d["edit_rate"] <= 0.03
            assert d["jaccard"] == round(sc.word_jaccard(original.main_text(), copy.main_text()), 4)


def test_deterministic_for_a_seed(corpus, tmp_path):
    again = tmp_path / "again"
    sc.generate(DOCS, FILES, seed=0, jobs=1, folder=again, log=lambda m: None)
    for i in range(FILES):
        assert (again / sc.file_name(i)).read_bytes() == (corpus / sc.file_name(i)).read_bytes()
        assert sc.read_planted(again, i) == sc.read_planted(corpus, i)
    other = tmp_path / "other"
    sc.generate(DOCS, FILES, seed=1, jobs=1, folder=other, log=lambda m: None)
    assert (other / sc.file_name(0)).read_bytes() != (corpus / sc.file_name(0)).read_bytes()


def test_a_rerun_writes_only_missing_files_with_the_same_bytes(corpus):
    before = {i: (corpus / sc.file_name(i)).read_bytes() for i in range(FILES)}
    mtimes = {i: (corpus / sc.file_name(i)).stat().st_mtime_ns for i in range(FILES)}
    assert sc.generate(DOCS, FILES, seed=0, jobs=1, folder=corpus, log=lambda m: None)["written"] == []
    (corpus / sc.file_name(1)).unlink()
    (corpus / (sc.file_name(2) + ".tmp")).write_bytes(b"half a file from a killed run")
    result = sc.generate(DOCS, FILES, seed=0, jobs=1, folder=corpus, log=lambda m: None)
    assert result["written"] == [1]
    assert not list(corpus.glob("*.tmp"))
    assert {i: (corpus / sc.file_name(i)).read_bytes() for i in range(FILES)} == before
    assert (corpus / sc.file_name(0)).stat().st_mtime_ns == mtimes[0]
    assert json.loads((corpus / "_complete.json").read_text())["records"] == DOCS
