"""The tokenize / train_tokenizer sinks run in-process on the test session's Ray: a separate
train_tokenizer step, reuse by path, identical shards from two runs, and a clear error on no data."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from curation.operator import SinkContext
from curation.tokenize.op import TokenizeConfig, TokenizeOp, TrainTokenizerOp, TrainTokenizerStepConfig
from tests.conftest import DATA
from tests.test_tokenize_e2e import check_shards


def make_run(root: Path, files: int = 3, per_file: int = 12) -> tuple[Path, int]:
    """A run directory whose data/ holds kept documents (Moby-Dick chapters) in a few Parquet files."""
    chapters = sorted((DATA / "text" / "moby-dick").glob("chapter_*.txt"))[: files * per_file]
    data = root / "data"
    data.mkdir(parents=True)
    for f in range(files):
        texts = [p.read_text(encoding="utf-8") for p in chapters[f * per_file:(f + 1) * per_file]]
        pq.write_table(pa.table({"doc_id": pa.array([f << 32 | i for i in range(len(texts))], pa.int64()),
                                 "text": texts}), data / f"part-u{f:06d}-a-x.parquet")
    return root, len(chapters)


def context(run: Path, documents: int, upstream: list[str] | None = None) -> SinkContext:
    return SinkContext(run_location=str(run), run_root=str(run), filesystem=pafs.LocalFileSystem(), input_dir="data",
                       work_dir="work/tok", documents=documents, num_cpus=2, local=True, compression="zstd",
                       upstream=upstream or [], note=lambda message: None)


CONFIG = {"seq_len": 64, "val_fraction": 0.2, "shard_target_mb": 0.05, "seed": 3}


def test_train_tokenizer_step_then_tokenize(ray_session, tmp_path):
    run, n = make_run(tmp_path / "a")
    trained = TrainTokenizerOp(TrainTokenizerStepConfig(vocab_size=500, sample_docs=10, val_fraction=0.2)).run(context(run, n))
    assert trained["tokenizer"]["sample_documents"] == 10 and trained["tokenizer"]["vocab_size"] == 500
    counts = TokenizeOp(TokenizeConfig(**CONFIG)).run(context(run, n, upstream=["train_tokenizer"]))
    m = check_shards(run)
    assert m["tokenizer"]["sha256"] == trained["tokenizer"]["sha256"]  # the step's tokenizer, untouched
    assert counts["in"] == n and m["seed"] == 3 and m["splits"]["val"]["rows"] > 0
    assert len(m["splits"]["train"]["files"]) > 1
    assert not (run / "work").exists() or not any((run / "work").iterdir())  # scratch removed

    # a second run dir reusing that tokenizer by path gives byte-for-byte the same shard contents
    other, _ = make_run(tmp_path / "b")
    TokenizeOp(TokenizeConfig(tokenizer=str(run / "tokenizer" / "tokenizer.json"), **CONFIG)).run(context(other, n))
    m2 = check_shards(other)
    assert m2 == m
    for split in ("train", "val"):
        for rel in m["splits"][split]["files"]:
            assert pq.read_table(run / rel).equals(pq.read_table(other / rel)), rel


def test_no_documents_is_a_clear_error(ray_session, tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match="no kept documents"):
        TokenizeOp(TokenizeConfig(**CONFIG)).run(context(tmp_path, 0))


def test_unusable_tokenizer_path_is_a_clear_error(ray_session, tmp_path):
    run, n = make_run(tmp_path / "a", files=1, per_file=2)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a usable tokenizer.json"):
        TokenizeOp(TokenizeConfig(tokenizer=str(bad), **CONFIG)).run(context(run, n))
    with pytest.raises(ValueError, match="cannot read"):
        TokenizeOp(TokenizeConfig(tokenizer=str(tmp_path / "missing.json"), **CONFIG)).run(context(run, n))
