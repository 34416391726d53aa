"""The Lightning callback that makes a pretraining run observable and resumable.

Once per optimizer step: the global mean loss, learning rate, gradient norm, tokens/s and MFU go to
``metrics/train.csv`` and TensorBoard (rank 0). Every ``eval_every`` steps: loss and perplexity on
the val shards, summed exactly over all workers. Every ``checkpoint_every`` steps (and at the
last step): a checkpoint reported through ``ray.train.report``, which Ray Train persists as
``checkpoints/step-NNNNNN/`` and prunes to ``keep``. On (re)start: optimizer, scheduler and RNG
state come back from the checkpoint the worker resumes from.
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
import shutil
import tempfile
import time
from typing import Any

import lightning.pytorch as pl
import torch

from curation.faults import fault_point
from training.checkpoint import TOKENIZER_FILE, WEIGHTS_FILE, save_model
from training.metrics import MetricsCsv, mfu, perplexity
from training.model import Transformer
from training.resume import (OPTIMIZER_FILE, capture_rng, load_tensors, restore_rng, rng_file, step_dir_name,
                             write_state)

log = logging.getLogger("gristmill.pretrain")


class PretrainProgress(pl.Callback):
    def __init__(self, plan: Any, rank: int, world: int, start_step: int, resume_dir: str | None,
                 resume_state: dict[str, Any] | None, val_batches: Any, csv: MetricsCsv | None,
                 peak_flops: float | None) -> None:
        self.plan, self.rank, self.world = plan, rank, world
        self.start_step, self.resume_dir, self.resume_state = start_step, resume_dir, resume_state
        self.val_source = val_batches
        self.val_cache: list[dict[str, torch.Tensor]] | None = None
        self.csv = csv
        self.peak = peak_flops
        self.seen_global_step = 0
        self.last_time = 0.0
        self.step_tokens = plan.global_rows * plan.seq_len

    # ------------------------------------------------------------------ resume

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.resume_dir is not None and self.resume_state is not None:
            optimizer_state = load_tensors(posixpath.join(self.resume_dir, OPTIMIZER_FILE))
            trainer.strategy.load_optimizer_state_dict({"optimizer_states": [optimizer_state]})
            trainer.lr_scheduler_configs[0].scheduler.load_state_dict(self.resume_state["scheduler"])
            restore_rng(load_tensors(posixpath.join(self.resume_dir, rng_file(self.rank))))
        self.last_time = time.perf_counter()

    # ------------------------------------------------------------------ every step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.seen_global_step:
            return  # inside a gradient-accumulation window
        self.seen_global_step = trainer.global_step
        step = self.start_step + trainer.global_step
        now = time.perf_counter()
        elapsed, self.last_time = now - self.last_time, now
        local = torch.stack(pl_module.micro_losses).mean()
        pl_module.micro_losses.clear()
        loss = float(trainer.strategy.reduce(local, reduce_op="mean"))
        tokens_per_s = self.step_tokens / elapsed if elapsed > 0 else 0.0
        row: dict[str, Any] = {
            "step": step, "tokens": step * self.step_tokens, "loss": loss, "lr": pl_module.last_lr,
            "grad_norm": pl_module.last_grad_norm, "tokens_per_s": tokens_per_s,
            "mfu": mfu(self.plan.flops_per_token, tokens_per_s, self.peak, self.world),
            # Unix seconds: start-up cost (fit() to the first step) and stalls read straight off the CSV.
            "wall_time": round(time.time(), 3),
        }
        paused = False  # evaluation and checkpoint time is not training throughput
        if self.plan.eval_every and (step % self.plan.eval_every == 0 or step == self.plan.max_steps):
            paused = True
            val_loss = self._evaluate(trainer, pl_module)
            if val_loss is not None:
                row.update(val_loss=val_loss, val_ppl=perplexity(val_loss))
        extra_metrics = getattr(pl_module, "step_metrics", None)  # fine-tuning modules: more CSV columns
        if extra_metrics is not None:
            row.update(extra_metrics(trainer.strategy, self.val_source is not None and "val_loss" in row))
        if self.rank == 0:
            self.csv.add(row)
            if step % self.plan.log_every == 0 or step == self.plan.max_steps or "val_loss" in row:
                # TensorBoard every log_every steps (Lightning's own habit); the CSV has every step.
                if trainer.logger is not None:
                    trainer.logger.log_metrics({k: v for k, v in row.items() if k != "step" and v is not None}, step=step)
            if step % self.plan.log_every == 0 or step == self.plan.max_steps:
                # Ray Train routes worker logging to the driver's console (a print would show twice).
                log.info(f"step {step}/{self.plan.max_steps} loss {loss:.4f}"
                         + (f" val_loss {row['val_loss']:.4f}" if "val_loss" in row else "")
                         + f" lr {row['lr']:.3g} grad_norm {row['grad_norm']:.3g} tokens/s {tokens_per_s:,.0f}")
        fault_point("train.step")  # in a Ray Train worker: kills the driver, then itself
        if step % self.plan.checkpoint_every == 0 or step == self.plan.max_steps:
            paused = True
            self._checkpoint(trainer, pl_module, step, row)
            fault_point("train.checkpoint")  # right after a checkpoint was reported
        if paused:
            self.last_time = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rank == 0:
            self.csv.flush()

    # ------------------------------------------------------------------ eval

    def _evaluate(self, trainer: pl.Trainer, pl_module: Any) -> float | None:
        if self.val_source is None:
            return None
        if self.val_cache is None:  # the val rows are few and fixed: read once, keep on this worker
            self.val_cache = list(self.val_source)
        device = pl_module.device
        total = torch.zeros(2, dtype=torch.float64, device=device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            for batch in self.val_cache:
                if batch["input_ids"].shape[0] == 0:
                    continue
                loss_sum, count = pl_module.eval_loss_sum({k: v.to(device) for k, v in batch.items()})
                total += torch.tensor([float(loss_sum), count], dtype=torch.float64, device=device)
        pl_module.train(was_training)
        total = trainer.strategy.reduce(total, reduce_op="sum")
        return float(total[0] / total[1]) if total[1] > 0 else None

    # ------------------------------------------------------------------ checkpoint

    def _checkpoint(self, trainer: pl.Trainer, pl_module: Any, step: int, row: dict[str, Any]) -> None:
        import ray.train

        optimizer = trainer.optimizers[0]
        optimizer_state = trainer.strategy.optimizer_state(optimizer)  # a collective under FSDP
        fsdp = self.plan.strategy == "fsdp"
        full_state = trainer.strategy.lightning_module_state_dict() if fsdp else None
        tmp = tempfile.mkdtemp(prefix=f"gristmill-{step_dir_name(step)}-r{self.rank}-")
        try:
            if self.rank == 0:
                model = pl_module.model
                if fsdp:  # gathered full weights → a plain module for the safetensors writer
                    model = Transformer(pl_module.model_config)
                    model.load_state_dict({k.removeprefix("model."): v for k, v in full_state.items()})
                extra = {"step": step, "tokens": row["tokens"], "shards": self.plan.shards_location}
                if hasattr(pl_module, "save_weights") and not fsdp:  # LoRA adapters, reward heads
                    pl_module.save_weights(tmp, extra)
                else:
                    save_model(tmp, model, pl_module.model_config, extra=extra)
                torch.save(optimizer_state, os.path.join(tmp, OPTIMIZER_FILE))
                if self.plan.tokenizer_location:
                    _copy_tokenizer(self.plan.tokenizer_location, os.path.join(tmp, TOKENIZER_FILE))
                scheduler = trainer.lr_scheduler_configs[0].scheduler
                write_state(tmp, {
                    "step": step, "tokens": row["tokens"], "rows_consumed": step * self.plan.global_rows,
                    "world_size": self.world, "micro_batch": self.plan.micro_batch,
                    "accumulate": self.plan.accumulate, "global_rows": self.plan.global_rows,
                    "seq_len": self.plan.seq_len, "seed": self.plan.seed, "max_steps": self.plan.max_steps,
                    "scheduler": _jsonable(scheduler.state_dict()), "loss": row["loss"],
                    "weights_file": getattr(pl_module, "weights_file", WEIGHTS_FILE),
                })
                self.csv.flush()  # the CSV always reaches at least the newest checkpoint
            torch.save(capture_rng(), os.path.join(tmp, rng_file(self.rank)))
            metrics = {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=step_dir_name(step))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _copy_tokenizer(location: str, target: str) -> None:
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(location) if "://" in location else (pafs.LocalFileSystem(), location)
    with fs.open_input_stream(path) as src, open(target, "wb") as dst:
        dst.write(src.read())


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value
