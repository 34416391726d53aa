"""The `decontaminate` op: 13-gram overlap with the shipped eval tasks, normalisation, task
attribution, short items, custom files and fields, config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import xxhash
from pydantic import ValidationError

from curation.decontaminate import (EVAL_DIR, Decontaminate, DecontaminateConfig, item_text, ngram_hashes,
                                    normalize)
from curation.operator import get_op

# Words no eval item uses, so only the planted words can form a shared n-gram.
FILLER = "zorblat quimbo vextrin plonk gravune slemwick tarrobin fuzzletop".split()


def load(task: str) -> list[dict]:
    return [json.loads(line) for line in (EVAL_DIR / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]


def norm_words(text: str) -> list[str]:
    return normalize(pa.array([text])).to_pylist()[0].split()


def long_item(task: str, min_words: int = 20) -> tuple[dict, str]:
    for item in load(task):
        text = item_text(item, None, task)
        if len(norm_words(text)) >= min_words:
            return item, text
    raise AssertionError(task)


@pytest.fixture(scope="module")
def op():
    op = Decontaminate(DecontaminateConfig())
    op.setup()
    return op


def run(op, texts):
    decision = op.process(pa.table({"text": pa.array(texts, pa.string())}))
    assert decision.table.num_rows == len(texts)
    return decision


def embed(words: list[str]) -> str:
    return " ".join(FILLER + words + FILLER)


def test_arc_13gram_is_dropped_12gram_kept(op):
    item, text = long_item("arc_easy")
    words = text.split()  # original spelling and punctuation
    assert item["query"].startswith("Question: ")
    gram13, gram12 = words[2:15], words[2:14]
    decision = run(op, [embed(gram13), embed(gram12), " ".join(FILLER)])
    assert decision.reason.to_pylist() == ["eval_contamination", None, None]
    assert decision.keep.to_pylist() == [False, True, True]
    assert decision.table.column("decontaminate.task").to_pylist() == ["arc_easy", None, None]
    assert decision.table.column("decontaminate.matches").to_pylist() == [1, 0, 0]
    assert decision.detail.to_pylist()[0] == "1 13-gram(s) shared with arc_easy"


def test_case_and_punctuation_differences_still_match(op):
    _, text = long_item("arc_easy")
    words = norm_words(text)[:16]
    shouted = [w.upper() + ("," if i % 3 == 0 else "") for i, w in enumerate(words)]
    curly = " ".join(words).replace("s ", "s\u2019 ")  # a curly apostrophe is deleted like any punctuation
    decision = run(op, [embed(shouted), "\u201c" + curly + "\u201d!", embed(words).title()])
    assert decision.table.column("decontaminate.task").to_pylist() == ["arc_easy"] * 3
    assert decision.table.column("decontaminate.matches").to_pylist() == [4, 4, 4]  # 16 words: 4 windows


def test_answer_span_and_template_words(op):
    # The gold answer is part of the item: a 13-gram across the query's end and the answer matches,
    # while llm-foundry's "Question:" template word is not part of any n-gram.
    item, text = long_item("arc_easy")
    query = norm_words(item["query"])
    assert query[0] == "question"
    answer = norm_words(item["choices"][item["gold"]])
    across = query[-7:] + answer[:6]
    with_template = query[:13]  # "question" + the query's first 12 words
    decision = run(op, [embed(across), embed(with_template)])
    assert decision.table.column("decontaminate.matches").to_pylist()[0] >= 1
    assert decision.table.column("decontaminate.matches").to_pylist()[1] == 0


def test_piqa_and_lambada_are_attributed(op):
    _, piqa = long_item("piqa")
    lambada = load("lambada_openai")[0]
    # LAMBADA's last context words plus the continuation (the target word) form an n-gram.
    tail = norm_words(lambada["context"])[-12:] + norm_words(lambada["continuation"])
    decision = run(op, [embed(piqa.split()), embed(tail), None, ""])
    assert decision.table.column("decontaminate.task").to_pylist() == ["piqa", "lambada_openai", None, None]
    assert decision.table.column("decontaminate.matches").to_pylist()[1] == 1
    assert decision.keep.to_pylist() == [False, False, True, True]


def test_short_items_are_skipped(op):
    assert op.skipped_items["lambada_openai"] == 0
    assert 0 < op.skipped_items["arc_easy"] < op.ngrams.items["arc_easy"] // 4
    short = next(item_text(i, None, "arc") for i in load("arc_easy") if len(norm_words(item_text(i, None, "arc"))) < 13)
    assert run(op, [embed(short.split())]).keep is None  # the whole item is in the text, yet it is kept


def test_custom_files_fields_ngram_and_ties(tmp_path: Path):
    quiz = tmp_path / "quiz.jsonl"
    quiz.write_text("\n".join(json.dumps(x) for x in [
        {"question": "What colour is the midnight sky?", "answers": ["deep blue", "black"]},
        {"question": "Shared words here", "answers": ["x"]},
    ]) + "\n")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"question": "Shared words here", "answers": ["x", "and more"]}) + "\n")
    config = DecontaminateConfig(tasks=[], files=[str(quiz), str(other)], ngram=4, fields=["question", "answers"])
    op = Decontaminate(config)
    texts = ["They asked: what colour is the MIDNIGHT sky?",
             "the midnight sky deep-blue",  # deleting the hyphen makes one word, "deepblue"
             "the midnight sky deep blue black",
             "shared words here x",  # in both files: a tie goes to the task listed first
             "colour is the midnight"]
    decision = run(op, texts)
    assert decision.table.column("decontaminate.task").to_pylist() == ["quiz", None, "quiz", "quiz", "quiz"]
    assert decision.table.column("decontaminate.matches").to_pylist() == [3, 0, 3, 1, 1]
    assert op.ngrams.tasks == ["quiz", "other"]
    with pytest.raises(ValueError, match="other.jsonl:1: no field 'text'"):
        Decontaminate(DecontaminateConfig(tasks=[], files=[str(other)], fields=["text"])).setup()


def test_hashes_are_xxh3_of_joined_words_and_zero_rows(op):
    assert ngram_hashes(["a", "b", "c"], 2) == [xxhash.xxh3_64_intdigest(b"a b"), xxhash.xxh3_64_intdigest(b"b c")]
    assert ngram_hashes(["a"], 2) == []
    decision = run(op, [])
    assert decision.table.schema.field("decontaminate.matches").type == pa.int32()
    assert decision.table.schema.field("decontaminate.task").type == pa.string()
    assert decision.keep is None or len(decision.keep) == 0


def test_registered_and_config_validation(tmp_path: Path):
    import curation.decontaminate  # noqa: F401  (registers the op)

    assert get_op("decontaminate") is Decontaminate
    assert DecontaminateConfig().tasks == ["arc_easy", "piqa", "lambada_openai"]
    with pytest.raises(ValidationError, match="did you mean 'arc_easy'"):
        DecontaminateConfig(tasks=["arc-easy"])
    with pytest.raises(ValidationError, match="does not exist"):
        DecontaminateConfig(files=[str(tmp_path / "missing.jsonl")])
    with pytest.raises(ValidationError, match="no eval data"):
        DecontaminateConfig(tasks=[])
    dup = tmp_path / "piqa.jsonl"
    dup.write_text("{}\n")
    with pytest.raises(ValidationError, match="piqa given twice"):
        DecontaminateConfig(files=[str(dup)])
    with pytest.raises(ValidationError):
        DecontaminateConfig(ngram=0)
    with pytest.raises(ValidationError):
        DecontaminateConfig.model_validate({"n": 13})
    config = DecontaminateConfig(tasks=["piqa"], ngram=8)
    assert DecontaminateConfig.model_validate(config.model_dump(mode="json")) == config
