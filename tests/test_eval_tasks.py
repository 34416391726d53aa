"""Task files, prompts, k-shot draws, and the multiple-choice / cloze metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from curation.tokenize.train import for_documents
from eval.checkpoints import EvalModel, load_eval_model
from eval.cloze import evaluate_cloze
from eval.config import BenchmarkTaskConfig
from eval.multiple_choice import evaluate_multiple_choice, predictions
from eval.runner import run_benchmark
from eval.tasks import (REGISTRY, ClozeItem, MultipleChoiceItem, TaskFileError, context_for, fewshot_indices,
                        item_requests, load_task, read_items, task_definition)
from eval_support import cached_checkpoint, controlled_model, single_thread, tiny_tokenizer


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_shipped_files_load_with_their_counts():
    counts = {"arc_easy": 2376, "piqa": 1838, "lambada_openai": 5153}
    for name, count in counts.items():
        task = load_task(task_definition(name))
        assert len(task.pool) == count
    arc = load_task(task_definition("arc_easy"), limit=3)
    assert len(arc.items) == 3 and isinstance(arc.items[0], MultipleChoiceItem)
    context, continuation = item_requests(arc)[0][0]
    assert context == arc.items[0].query + "\nAnswer:" and continuation == " " + arc.items[0].choices[0]
    lambada = load_task(task_definition("lambada_openai"), limit=2)
    assert item_requests(lambada)[0] == [(lambada.items[0].context, " " + lambada.items[0].continuation)]
    assert set(REGISTRY) == set(counts)


def test_hellaswag_format(tmp_path):
    rows = [
        {"ctx": "A man is sitting on a roof. he", "activity_label": "Roof shingle removal",
         "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                     "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "label": 3},
        {"ctx": "How to clean a pan [title] Soak it.", "endings": ["Scrub it [step] gently.", "Burn it."], "label": "0"},
    ]
    definition = task_definition("my_hellaswag", file=_write(tmp_path / "hs.jsonl", rows), format="hellaswag")
    task = load_task(definition)
    first, second = task.items
    assert first.query == "Roof shingle removal: A man is sitting on a roof. he" and first.gold == 3
    assert second.query == "How to clean a pan. Soak it." and second.choices == ("Scrub it gently.", "Burn it.")
    assert second.gold == 0
    assert item_requests(task)[0][3] == (first.query, " starts pulling up roofing on a roof.")


@pytest.mark.parametrize("row, message", [
    ({"query": "q", "choices": ["a", "b"], "gold": 2}, "gold index 2 outside"),
    ({"query": "q", "choices": ["a"], "gold": 0}, "at least two"),
    ({"query": "q", "gold": 0}, "missing field 'choices'"),
    ({"query": "q", "choices": ["a", "b"], "gold": "1"}, "wrong type"),
])
def test_bad_items_name_file_and_line(tmp_path, row, message):
    path = _write(tmp_path / "bad.jsonl", [{"query": "ok", "choices": ["a", "b"], "gold": 0}, row])
    with pytest.raises(TaskFileError, match=f"bad.jsonl:2: .*{message}"):
        read_items(path, "multiple_choice")
    (tmp_path / "broken.jsonl").write_text('{"context": "a", "continuation": "b"}\n{nope\n')
    with pytest.raises(TaskFileError, match="broken.jsonl:2: not JSON"):
        read_items(tmp_path / "broken.jsonl", "cloze")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        task_definition("nope")


def test_fewshot_is_deterministic_and_excludes_the_item():
    for index in range(20):
        picked = fewshot_indices(20, index, 5, seed=7)
        assert index not in picked and len(set(picked)) == 5 and all(0 <= i < 20 for i in picked)
        assert picked == fewshot_indices(20, index, 5, seed=7)
    assert fewshot_indices(20, 3, 5, seed=7) != fewshot_indices(20, 3, 5, seed=8)
    with pytest.raises(ValueError, match="at least 4 items"):
        fewshot_indices(3, 0, 3)
    # Same examples for an item whatever the limit; rendered as solved examples.
    full, limited = load_task(task_definition("arc_easy")), load_task(task_definition("arc_easy"), limit=5)
    assert context_for(full, 2, 3) == context_for(limited, 2, 3)
    blocks = context_for(limited, 2, 3).split("\n\n")
    shots = [full.pool[i] for i in fewshot_indices(len(full.pool), 2, 3)]
    assert blocks[:3] == [f"{s.query}\nAnswer: {s.choices[s.gold]}" for s in shots]
    assert blocks[3] == f"{full.pool[2].query}\nAnswer:"


def test_acc_and_acc_norm_differ_on_the_choice_lengths():
    # Summed log-likelihood favours the short choice; per character the long one is likelier.
    lls = np.array([-10.0, -12.0])
    chosen = predictions(lls, ("ab", "abcdefgh"))
    assert chosen == {"acc": 0, "acc_norm": 1, "acc_bytes": 1}
    # Characters vs bytes (lm-eval's acc_norm vs acc_bytes): "ééé" is 3 characters but 6 bytes.
    chosen = predictions(np.array([-6.0, -4.5]), ("ééé", "abc"))
    assert chosen["acc_norm"] == 1 and chosen["acc_bytes"] == 0


def test_acc_vs_acc_norm_through_the_model(tmp_path):
    """A uniform model: every token costs log V, so acc picks the choice with the fewest tokens and
    acc_norm the one with the fewest tokens per character."""
    tokenizer = for_documents(tiny_tokenizer())
    em = EvalModel(controlled_model(tokenizer.get_vocab_size()), tokenizer, None, "<memory>")  # type: ignore[arg-type]
    em.config = em.model.config
    short, long = "Xq", "the the the the the the"
    n_short = len(tokenizer.encode(" " + short, add_special_tokens=False).ids)
    n_long = len(tokenizer.encode(" " + long, add_special_tokens=False).ids)
    assert n_short < n_long and n_short / len(short) > n_long / len(long)  # the premise, checked
    rows = [{"query": "Question: which?", "choices": [short, long], "gold": 1},
            {"query": "Question: and now?", "choices": [long, short], "gold": 1}]
    task = load_task(task_definition("constructed", file=_write(tmp_path / "mc.jsonl", rows), format="multiple_choice"))
    result = evaluate_multiple_choice(em, task, batch_size=4)
    assert result["metrics"]["acc"] == 0.5 and result["metrics"]["acc_norm"] == 0.5
    # Item 1 (gold = long): acc wrong, acc_norm right. Item 2 (gold = short): the reverse.
    log_v = math.log(tokenizer.get_vocab_size())
    expected = {"acc": [0.0, 1.0], "acc_norm": [1.0, 0.0]}
    from eval.loglikelihood import score_pairs
    from eval.multiple_choice import score_items

    scores = score_pairs(em, [p for pairs in item_requests(task) for p in pairs])
    assert scores[0].logprob == pytest.approx(-n_short * log_v, abs=1e-4)
    assert scores[1].logprob == pytest.approx(-n_long * log_v, abs=1e-4)
    correct = score_items(task, scores)
    assert correct["acc"].tolist() == expected["acc"] and correct["acc_norm"].tolist() == expected["acc_norm"]


def test_cloze_accuracy_and_perplexity(tmp_path):
    """A model that always predicts one token: a target made of that token is greedy, others not;
    perplexity is exp(-mean item log-likelihood), the per-token version exp(-Σ log p / Σ tokens)."""
    tokenizer = for_documents(tiny_tokenizer())
    word = " the"
    token = tokenizer.encode(word, add_special_tokens=False).ids
    assert len(token) == 1
    logits = torch.zeros(tokenizer.get_vocab_size())
    logits[token[0]] = 5.0
    model = controlled_model(tokenizer.get_vocab_size(), logits)
    em = EvalModel(model, tokenizer, model.config, "<memory>")
    rows = [{"context": "and so", "continuation": "the"}, {"context": "and so", "continuation": "thethe"},
            {"context": "so", "continuation": "king"}]
    task = load_task(task_definition("cl", file=_write(tmp_path / "c.jsonl", rows), format="cloze"))
    result = evaluate_cloze(em, task)
    counts = [len(tokenizer.encode(" " + r["continuation"], add_special_tokens=False).ids) for r in rows]
    z = math.exp(5.0) + tokenizer.get_vocab_size() - 1
    lp_hit, lp_miss = 5.0 - math.log(z), -math.log(z)
    king = counts[2] * lp_miss
    thethe = lp_hit + (counts[1] - 1) * lp_miss  # " the" then the rest of "the"
    per_item = [lp_hit, thethe, king]
    assert result["metrics"]["acc"] == pytest.approx(1 / 3)
    assert result["metrics"]["perplexity"] == pytest.approx(math.exp(-sum(per_item) / 3), rel=1e-4)
    assert result["metrics"]["token_perplexity"] == pytest.approx(math.exp(-sum(per_item) / sum(counts)), rel=1e-4)
    assert result["items"] == 3 and result["target_tokens"] == sum(counts)


def test_runner_on_shipped_tasks_with_fewshot():
    em = load_eval_model(cached_checkpoint("llama"))
    for name in ("arc_easy", "lambada_openai"):
        result = run_benchmark(em, BenchmarkTaskConfig(name=name, limit=6, num_fewshot=1), batch_size=8)
        assert result["items"] == 6 and 0.0 <= result["metrics"]["acc"] <= 1.0
        assert set(result["metrics"]) >= {"acc", "acc_stderr"}
    assert run_benchmark(em, BenchmarkTaskConfig(name="arc_easy", limit=6), 8)["requests"] == 24


def test_results_document_is_strict_json_and_flattens():
    from eval.results import dumps, metric_rows, results_document

    doc = results_document("r", "2026-11-27T00:00:00Z", [
        {"label": "a/step-000010", "tasks": {"arc_easy": {"kind": "multiple_choice", "items": 1,
                                                           "metrics": {"acc": 1.0, "acc_stderr": float("nan")}}}},
        {"label": "b", "tasks": {"ppl": {"kind": "perplexity", "metrics": {"perplexity": 12.5}}}},
    ])
    assert json.loads(dumps(doc))["checkpoints"][0]["tasks"]["arc_easy"]["metrics"]["acc_stderr"] is None
    assert metric_rows(doc) == [
        {"checkpoint": "a/step-000010", "task": "arc_easy", "metric": "acc", "value": 1.0},
        {"checkpoint": "a/step-000010", "task": "arc_easy", "metric": "acc_stderr", "value": None},
        {"checkpoint": "b", "task": "ppl", "metric": "perplexity", "value": 12.5}]
