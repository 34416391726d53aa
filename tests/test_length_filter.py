"""The `length_filter` op: length columns, bounds, reason order, config checks."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from pydantic import ValidationError

from curation.ingest.base import get_reader
from curation.length_filter import LengthFilterConfig, count_words
from curation.operator import get_op

DATA = Path(__file__).resolve().parent.parent / "data"


def run(texts: list[str | None], **config):
    op = get_op("length_filter")(LengthFilterConfig(**config))
    decision = op.process(pa.table({"text": pa.array(texts, pa.string())}))
    assert decision.table.num_rows == len(texts)
    return decision


def test_lengths_are_code_points_and_unicode_words():
    decision = run(["héllo wörld", "one\u00a0two\u3000three\tfour\nfive", "", None, "  spaced   out  "])
    assert decision.table.column("length.chars").to_pylist() == [11, 23, 0, 0, 16]
    assert decision.table.column("length.words").to_pylist() == [2, 5, 0, 0, 2]
    assert decision.table.schema.field("length.chars").type == pa.int64()
    assert decision.table.schema.field("length.words").type == pa.int64()
    assert decision.keep is None  # no bounds: annotate only


def test_bounds_are_inclusive_and_first_failing_rule_wins():
    texts = ["a b", "abcdefghij", "abcdefghijk", "a b c d e f", "x " * 5, "w"]
    decision = run(texts, min_chars=2, max_chars=10, min_words=2, max_words=5)
    assert decision.reason.to_pylist() == [
        None,  # 3 chars, 2 words: both bounds met exactly or inside
        "too_few_words",  # 10 chars is the max itself (kept), 1 word is too few
        "too_many_chars",
        "too_many_chars",  # 11 chars and 6 words: the char rule comes first
        None,  # "x x x x x " = 10 chars, 5 words
        "too_few_chars",  # also too few words; chars are checked first
    ]
    assert decision.keep.to_pylist() == [r is None for r in decision.reason.to_pylist()]
    assert run(texts, max_words=5).reason.to_pylist() == [None, None, None, "too_many_words", None, None]


def test_zero_rows():
    decision = run([], min_words=1)
    assert decision.table.num_rows == 0 and len(decision.keep) == 0
    assert decision.table.schema.field("length.words").type == pa.int64()


def test_config_validation():
    with pytest.raises(ValidationError, match=r"min_chars \(10\) is greater than max_chars \(5\)"):
        LengthFilterConfig(min_chars=10, max_chars=5)
    with pytest.raises(ValidationError, match=r"min_words \(3\) is greater than max_words \(2\)"):
        LengthFilterConfig.model_validate({"min_words": 3, "max_words": 2})
    with pytest.raises(ValidationError):
        LengthFilterConfig(min_words=-1)
    with pytest.raises(ValidationError):
        LengthFilterConfig.model_validate({"min_tokens": 3})
    assert LengthFilterConfig(min_chars=5, max_chars=5).max_chars == 5


def test_count_words_matches_str_split():
    samples = ["", " ", "a", " a  b ", "x\x1cy\x85z\u2028w", "tab\tsep", "no-break\u00a0space"]
    assert count_words(pa.array(samples)).to_pylist() == [len(s.split()) for s in samples]


def test_real_documents_through_normalize_and_length_filter():
    cls = get_reader("jsonl")
    reader = cls(cls.Config(format="jsonl", paths=["x"]))
    [batch] = reader.read_file(str(DATA / "warc" / "cc_en_head-0174.jsonl"), 0, pafs.LocalFileSystem())
    normalized = get_op("normalize")(get_op("normalize").Config()).process(batch).table
    decision = run(normalized.column("text").to_pylist(), min_words=50)
    words = decision.table.column("length.words").to_pylist()
    assert words == [len(t.split()) for t in normalized.column("text").to_pylist()]
    assert decision.keep.to_pylist() == [w >= 50 for w in words]
