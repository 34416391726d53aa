"""Distillation vs the same student without a teacher: validation perplexity on bundled text.

1. Token shards from the shipped Tiny Shakespeare (``data/text/tinyshakespeare``, all 1.1M characters
   by default): a 1,024-token byte-level BPE and rows of 65 tokens with EOS after every paragraph, written to the shards
   contract by ``tests/pretrain_shards.py`` (val: the last rows).
2. A teacher: the ``tiny`` preset (llama, 4 layers, d=128) pretrained for ``--teacher-steps`` steps
   with :class:`training.lightning_module.PretrainModule`.
3. One student (llama, 1 layer, d=64, 4 heads), trained ``--student-steps`` steps twice from the same
   initial weights on the same rows in the same order, with
   :class:`training.finetune.distill.DistillModule`: ``alpha=0.5, T=2`` (distilled) and ``alpha=0``
   (cross-entropy only: the teacher's forward still runs, so the only difference is the loss).

Every model is trained with a plain Lightning ``Trainer`` (one CPU thread, cosine schedule with
warmup, AdamW, clipping: the modules' own ``configure_optimizers``), the same modules the Ray Train
path runs (``gristmill run`` adds Ray's strategy and data feeding, covered by tests/test_distill.py).
Validation perplexity is exp(mean next-token NLL) over every val row, attention blocked across
documents. Seeds are fixed; one run.

    .venv/bin/python -m benchmarks.distill [--teacher-steps 400 --student-steps 400 --max-chars 1200000]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, machine

SEQ_LEN = 64
VOCAB = 1024
MICRO = 16
SEED = 1234


def _rows(folder: Path, split: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from training.shards import to_model_inputs

    files = sorted((folder / "shards").glob(f"{split}-*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return {k: torch.from_numpy(v).long() for k, v in to_model_inputs(table, True).items()}


def _batches(rows: dict, steps: int, seed: int) -> list[dict]:
    """``steps`` micro-batches drawn epoch by epoch in a seeded order (the same for both students)."""
    import torch

    n = rows["input_ids"].shape[0]
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(steps * MICRO // n + 1)])
    return [{k: v[order[i * MICRO:(i + 1) * MICRO]] for k, v in rows.items()} for i in range(steps)]


def _fit(module, batches: list[dict]) -> float:
    import lightning.pytorch as pl
    import torch

    trainer = pl.Trainer(max_steps=len(batches), max_epochs=-1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False))
    return time.perf_counter() - start


def _val(module, rows: dict) -> dict:
    """Val loss / perplexity of the (student) model over every val row: the eval_loss_sum the
    launcher's evaluation calls."""
    import torch

    module.eval()
    total, count, kl = 0.0, 0, []
    with torch.no_grad():
        n = rows["input_ids"].shape[0]
        for i in range(0, n, MICRO):
            batch = {k: v[i:i + MICRO] for k, v in rows.items()}
            loss, c = module.eval_loss_sum(batch)
            total, count = total + float(loss), count + c
            if hasattr(module, "terms"):
                kl.append(module.terms(batch)["kl"])
    out = {"val_loss": round(total / count, 4), "val_ppl": round(math.exp(total / count), 2), "val_tokens": count}
    if kl:
        out["val_kl_to_teacher_T"] = round(float(torch.cat(kl).mean()), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--student-steps", type=int, default=400)
    parser.add_argument("--max-chars", type=int, default=1_200_000, help="Tiny Shakespeare characters used (default: "
                        "all 1.1M; with less the teacher overfits and ends weaker than the small student)")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))
    from tests.pretrain_shards import write_shards
    from training.checkpoint import save_model
    from training.finetune.distill import DistillModule
    from training.lightning_module import OptimConfig, PretrainModule, ScheduleConfig
    from training.model import ModelConfig

    work = Path(tempfile.mkdtemp(prefix="gristmill-distill-"))
    manifest = write_shards(work, seq_len=SEQ_LEN, vocab_size=VOCAB, max_chars=args.max_chars, train_files=2,
                            val_rows=96)
    train, val = _rows(work, "train"), _rows(work, "val")
    vocab = manifest["tokenizer"]["vocab_size"]
    report: dict = {"machine": machine(), "data": {
        "source": "data/text/tinyshakespeare/input.txt", "chars": args.max_chars, "vocab": vocab,
        "seq_len": SEQ_LEN, "train_rows": int(train["input_ids"].shape[0]), "val_rows": int(val["input_ids"].shape[0])},
        "settings": {"micro_batch": MICRO, "teacher_steps": args.teacher_steps, "student_steps": args.student_steps,
                     "temperature": args.temperature, "alpha": args.alpha, "seed": SEED}}

    def schedule(steps: int) -> ScheduleConfig:
        return ScheduleConfig(kind="cosine", warmup_steps=max(1, steps // 50), min_lr_ratio=0.1)

    teacher_config = ModelConfig.preset("tiny", vocab_size=vocab, max_seq_len=SEQ_LEN)
    torch.manual_seed(SEED)
    teacher = PretrainModule(teacher_config, OptimConfig(lr=3e-3, weight_decay=0.1), schedule(args.teacher_steps),
                             args.teacher_steps, True)
    seconds = _fit(teacher, _batches(train, args.teacher_steps, SEED))
    report["teacher"] = {"params": teacher_config.num_params(), "train_seconds": round(seconds, 1), **_val(teacher, val)}
    teacher_dir = work / "teacher"
    save_model(teacher_dir, teacher.model, teacher_config)
    print(json.dumps({"teacher": report["teacher"]}), flush=True)

    student_config = ModelConfig(arch="llama", vocab_size=vocab, max_seq_len=SEQ_LEN, n_layer=1, n_head=4, d_model=64)
    student_batches = _batches(train, args.student_steps, SEED + 1)
    for label, alpha in (("distilled", args.alpha), ("no_teacher", 0.0)):
        torch.manual_seed(SEED + 2)  # the same initial student weights for both
        student = DistillModule(student_config, OptimConfig(lr=3e-3, weight_decay=0.1), schedule(args.student_steps),
                                args.student_steps, True, str(teacher_dir), args.temperature, alpha)
        seconds = _fit(student, student_batches)
        report[label] = {"params": student_config.num_params(), "alpha": alpha, "train_seconds": round(seconds, 1),
                         **_val(student, val)}
        print(json.dumps({label: report[label]}), flush=True)
    d, b = report["distilled"]["val_ppl"], report["no_teacher"]["val_ppl"]
    report["ratio_val_ppl_distilled_over_no_teacher"] = round(d / b, 4)
    report["distillation_helps"] = d < b
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
