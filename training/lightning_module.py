"""The pretraining LightningModule: next-token loss, AdamW with weight-decay groups, the LR schedule,
and the gradient norm of every optimizer step.

Parallelism (DDP / FSDP), precision and accumulation are the Lightning Trainer's job, set from the
outside by the launcher; this module only knows the model and the objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from training.model import ModelConfig, Transformer
from training.schedule import lr_multiplier


@dataclass(frozen=True)
class OptimConfig:
    """AdamW defaults of GPT-3 / nanoGPT: betas (0.9, 0.95), weight decay 0.1, clip at 1.0."""

    lr: float = 6e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "cosine"  # cosine | wsd | constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of position t predicting token t+1 (``logits`` cover positions 0..T-1 of a row of
    T+1 tokens). Computed in fp32 whatever the autocast dtype, as every reference trainer does."""
    targets = input_ids[:, 1:]
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)


class PretrainModule(pl.LightningModule):
    def __init__(self, model_config: ModelConfig, optim: OptimConfig, schedule: ScheduleConfig,
                 total_steps: int, block_documents: bool, compile_model: bool = False) -> None:
        super().__init__()
        self.model_config = model_config
        self.model = Transformer(model_config)
        self.optim = optim
        self.schedule = schedule
        self.total_steps = total_steps
        self.block_documents = block_documents
        self.compile_model = compile_model
        self._forward = self.model
        # Per optimizer step, read by the progress callback.
        self.micro_losses: list[torch.Tensor] = []
        self.last_grad_norm: float | None = None
        self.last_lr: float | None = None

    def configure_model(self) -> None:
        # Compile after the strategy has moved the model to its device; the compiled wrapper shares
        # the parameters, so checkpoints keep the plain names.
        if self.compile_model and self._forward is self.model:
            self._forward = torch.compile(self.model)

    def forward(self, input_ids: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self._forward(input_ids, segment_ids)

    def batch_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"]
        segments = batch["segment_ids"][:, :-1] if self.block_documents and "segment_ids" in batch else None
        return self(ids[:, :-1], segments)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = next_token_loss(self.batch_logits(batch), batch["input_ids"])
        self.micro_losses.append(loss.detach())
        return loss

    @torch.no_grad()
    def eval_loss_sum(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Summed token loss and token count of a validation batch (summed, so ranks with different
        row counts combine into the exact mean)."""
        logits = self.batch_logits(batch)
        loss = next_token_loss(logits, batch["input_ids"], reduction="sum")
        return loss, int(batch["input_ids"][:, 1:].numel())

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        # Weight decay on matrices (linear weights, embeddings) only; never on norms or biases
        # (GPT-2 / nanoGPT / litgpt all split the groups this way).
        decay, no_decay = [], []
        for _, param in self.model.named_parameters():
            if param.requires_grad:
                (decay if param.dim() >= 2 else no_decay).append(param)
        groups = [{"params": decay, "weight_decay": self.optim.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        fused = torch.cuda.is_available() and next(self.model.parameters()).is_cuda
        optimizer = torch.optim.AdamW(groups, lr=self.optim.lr, betas=tuple(self.optim.betas), eps=self.optim.eps,
                                      fused=fused or None)
        s = self.schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
            lr_multiplier, total_steps=self.total_steps, kind=s.kind, warmup_steps=s.warmup_steps,
            min_lr_ratio=s.min_lr_ratio, decay_fraction=s.decay_fraction))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.last_lr = float(optimizer.param_groups[0]["lr"])

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        """Clip to ``grad_clip`` and keep the global norm before clipping (what every trainer logs).
        Under DDP the gradients are already averaged here; FSDP's wrapper computes the norm across
        shards."""
        max_norm = self.optim.grad_clip if self.optim.grad_clip else float("inf")
        wrapped = self.trainer.model
        if hasattr(wrapped, "clip_grad_norm_"):  # FSDP
            norm = wrapped.clip_grad_norm_(max_norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.last_grad_norm = float(norm)
