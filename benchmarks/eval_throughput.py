"""Evaluation throughput: ARC-Easy items/s, batched vs batch 1, and vs lm-eval's own HF model.

    python -m benchmarks.eval_throughput [--items 500] [--batch-size 32] [--threads 1]

The `tiny` preset (Llama blocks, 2.9M parameters, random weights, context 256) with a byte-level BPE
of 8,192 tokens trained on the shipped Shakespeare + Moby-Dick text; ARC-Easy 0-shot from
``data/eval/arc_easy.jsonl`` (the first ``--items`` items, 4 choices each; ``--items 2376`` is the
whole file). fp32 on CPU, ``--threads`` torch threads on every side.

* ``ours_batched`` / ``ours_batch1``: ``eval.multiple_choice.evaluate_multiple_choice`` at
  ``--batch-size`` and at 1 (task loading and tokenisation included);
* ``lm_eval_hf``: the peer, ``lm_eval.simple_evaluate`` with lm-eval's ``HFLM`` on our HF export of
  the same weights (``training.export.export_hf``), the same items through a local YAML task, at
  ``--batch-size``. lm-eval adds no prefix token to non-empty contexts where we add EOS (see
  eval/loglikelihood.py), so accuracies may differ by a few items; both are printed.

Prints JSON: items per wall-clock second and per CPU second each way, the ratios, and the accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import DATA, machine
from curation.tokenize.train import TokenizerTrainConfig, train_bpe
from eval.checkpoints import load_eval_model
from eval.multiple_choice import evaluate_multiple_choice
from eval.tasks import load_task, task_definition
from training.checkpoint import save_model
from training.model import ModelConfig, Transformer

TASK_YAML = """task: bench_arc_easy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {file}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def _texts():
    yield (DATA / "text" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    for path in sorted((DATA / "text" / "moby-dick").glob("chapter_*.txt")):
        yield path.read_text(encoding="utf-8")


def build_checkpoint(folder: Path) -> Path:
    tokenizer = train_bpe(_texts(), TokenizerTrainConfig(vocab_size=8192))
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=8192))
    checkpoint = save_model(folder / "ckpt", model)
    tokenizer.save(str(checkpoint / "tokenizer.json"))
    return checkpoint


def lm_eval_peer(checkpoint: Path, folder: Path, items: int, batch_size: int) -> dict | None:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        return None
    from training.export import export_hf

    hf_dir = export_hf(checkpoint, folder / "hf")
    subset = folder / "arc.jsonl"
    with open(DATA / "eval" / "arc_easy.jsonl", encoding="utf-8") as src:
        subset.write_text("".join(next(src) for _ in range(items)))
    tasks = folder / "tasks"
    tasks.mkdir()
    (tasks / "arc.yaml").write_text(TASK_YAML.format(file=subset))
    lm = HFLM(pretrained=str(hf_dir), device="cpu", batch_size=batch_size, dtype="float32")
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    start, cpu_start = time.perf_counter(), time.process_time()
    out = lm_eval.simple_evaluate(model=lm, tasks=["bench_arc_easy"], task_manager=manager, bootstrap_iters=0,
                                  log_samples=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    result = out["results"]["bench_arc_easy"]
    return {**_rates(items, seconds, cpu), "acc": result["acc,none"], "acc_norm": result["acc_norm,none"]}


def _rates(items: int, seconds: float, cpu: float) -> dict:
    """Wall-clock and CPU-time rates: on a box shared with other work the wall clock is stretched by
    other processes, the process's own CPU time much less so."""
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "items_per_s": round(items / seconds, 1),
            "items_per_cpu_s": round(items / cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500, help="first N ARC-Easy items (2376 = all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (every side)")
    parser.add_argument("--no-peer", action="store_true", help="skip lm-eval's HFLM")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = build_checkpoint(folder)
        em = load_eval_model(checkpoint)
        runs = {}
        for label, batch in (("ours_batched", args.batch_size), ("ours_batch1", 1)):
            start, cpu_start = time.perf_counter(), time.process_time()
            task = load_task(task_definition("arc_easy"), limit=args.items)
            result = evaluate_multiple_choice(em, task, batch_size=batch)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            runs[label] = {"batch_size": batch, **_rates(args.items, seconds, cpu), "acc": result["metrics"]["acc"],
                           "acc_norm": result["metrics"]["acc_norm"]}
        peer = None if args.no_peer else lm_eval_peer(checkpoint, folder, args.items, args.batch_size)
        if peer is not None:
            runs["lm_eval_hf"] = {"batch_size": args.batch_size, **peer}

    report = {"task": "arc_easy", "items": args.items, "requests": args.items * 4, "model": "tiny",
              "params": em.config.num_params(), "threads": args.threads, "runs": runs}
    for peer in ("ours_batch1", "lm_eval_hf"):
        if peer in runs:
            report[f"batched_over_{peer.removeprefix('ours_')}"] = {
                unit: round(runs["ours_batched"][unit] / runs[peer][unit], 2) for unit in ("items_per_s", "items_per_cpu_s")}
    report["machine"] = machine()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
