"""Derive the shipped instruction and preference pairs from the shipped eval items.

    .venv/bin/python data/instruct/derive.py      # rewrites data/instruct/*.jsonl (deterministic)

Sources: ``data/eval/arc_easy.jsonl`` (ARC-Easy test) and ``data/eval/piqa.jsonl`` (PIQA validation),
items ``{query, choices, gold}`` (see data/SOURCES.md). Each item becomes
* an instruction pair ``{prompt: question, response: gold answer}`` and
* a preference pair ``{prompt: question, chosen: gold answer, rejected: one wrong choice}``
(the wrong choice picked by hash, so reruns give the same files).

Decontamination: these are evaluation items, so they are split by a hash of the question into a
fixed **train** partition (xxh64(query) % 10 < 6, about 60%) and a **heldout** partition (the rest).
Only ``*.train.jsonl`` may be trained on; an evaluation of a model fine-tuned on them must use the
held-out items only: ``{arc_easy,piqa}.heldout-eval.jsonl`` are the eval files' held-out items in
their original ``{query, choices, gold}`` form, for an eval task's ``file:`` (specs/eval-finetune.yaml).
Every row carries ``source`` and ``item`` (the line number in the eval file) for that filtering.
"""

from __future__ import annotations

import json
from pathlib import Path

import xxhash

HERE = Path(__file__).resolve().parent
EVAL = HERE.parent / "eval"
SOURCES = ("arc_easy", "piqa")
TRAIN_BUCKETS = 6  # of 10


def in_train_partition(query: str) -> bool:
    """True for eval items whose question may be trained on (the fixed train partition)."""
    return xxhash.xxh64_intdigest(query.encode("utf-8")) % 10 < TRAIN_BUCKETS


def question(query: str) -> str:
    text = query.strip()
    return text[len("Question:"):].strip() if text.startswith("Question:") else text


def derive() -> dict[str, int]:
    rows: dict[str, list[dict]] = {f"{kind}.{part}": [] for kind in ("sft", "pref") for part in ("train", "heldout")}
    eval_heldout: dict[str, list[str]] = {source: [] for source in SOURCES}
    for source in SOURCES:
        for item, line in enumerate((EVAL / f"{source}.jsonl").read_text(encoding="utf-8").splitlines()):
            record = json.loads(line)
            if not in_train_partition(record["query"]):
                eval_heldout[source].append(line)  # the eval item unchanged: an eval task `file:`
            choices, gold = record["choices"], int(record["gold"])
            prompt, answer = question(record["query"]), choices[gold].strip()
            part = "train" if in_train_partition(record["query"]) else "heldout"
            meta = {"source": source, "item": item}
            rows[f"sft.{part}"].append({"prompt": prompt, "response": answer, **meta})
            wrong = [c.strip() for i, c in enumerate(choices) if i != gold and c.strip() and c.strip() != answer]
            if wrong:
                pick = xxhash.xxh64_intdigest(f"rejected:{record['query']}".encode("utf-8")) % len(wrong)
                rows[f"pref.{part}"].append({"prompt": prompt, "chosen": answer, "rejected": wrong[pick], **meta})
    counts = {}
    for name, items in rows.items():
        kind, part = name.split(".")
        path = HERE / f"{kind}-arc_easy-piqa.{part}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), encoding="utf-8")
        counts[path.name] = len(items)
    for source, lines in eval_heldout.items():
        path = HERE / f"{source}.heldout-eval.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        counts[path.name] = len(lines)
    return counts


if __name__ == "__main__":
    for name, n in derive().items():
        print(f"{name}: {n} rows")
