"""Knowledge distillation: a (smaller) student trained on a frozen teacher's logits, ``kind: finetune,
method: distill``.

The objective is Hinton et al. 2015 ("Distilling the Knowledge in a Neural Network", sec. 2), per
target token::

    loss = alpha · T² · KL(softmax(z_teacher / T) ‖ softmax(z_student / T)) + (1 - alpha) · CE(z_student, y)

The T² factor keeps the soft-target gradients the same size whatever the temperature (they scale as
1/T²), so ``alpha`` means the same thing at every T. The KL is the forward one (teacher first), as in
Hinton, DistilBERT (Sanh et al. 2019) and TRL's ``GKDTrainer`` with ``beta=0``; it is summed over the
vocabulary and averaged over the target tokens, like the cross-entropy. Targets equal to
``ignore_index`` (-100, the Hugging Face convention) count in neither term: prompt tokens of chat data,
padding.

The teacher lives inside each training worker, frozen and in eval mode, outside the module's
parameters (not trained, not in the optimizer, not in checkpoints), and runs under ``no_grad`` in
bf16 on a GPU (its logits only feed a softmax; full precision buys nothing there). Student step
checkpoints are ordinary model checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.checkpoint import load_model
from training.finetune.distill_checks import tokenizer_mismatch, vocab_mismatch  # noqa: F401 (re-exported)
from training.lightning_module import OptimConfig, PretrainModule, ScheduleConfig
from training.model import ModelConfig

IGNORE_INDEX = -100


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float, alpha: float, ignore_index: int = IGNORE_INDEX) -> dict[str, torch.Tensor]:
    """The distillation loss of one batch and its per-token terms.

    ``student_logits``/``teacher_logits`` [B, T, V] (any dtype; computed in fp32), ``targets`` [B, T]
    (the next token of each position, ``ignore_index`` where nothing is learned). Returns ``loss``
    (a scalar with gradient; 0 when no target counts) and, detached, per counted token: ``kl``
    (KL(teacher_T ‖ student_T), without the T² factor) and ``ce`` (the student's cross-entropy at
    temperature 1, the number perplexity is made of)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: the models must share the vocabulary")
    keep = targets != ignore_index
    student = student_logits.float()[keep]  # [N, V]: only counted positions take softmax memory
    teacher = teacher_logits.detach().float()[keep]
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    ce = F.cross_entropy(student, targets[keep].long(), reduction="none")
    count = max(int(keep.sum()), 1)
    loss = alpha * temperature ** 2 * kl.sum() / count + (1.0 - alpha) * ce.sum() / count
    return {"loss": loss, "kl": kl.detach(), "ce": ce.detach()}


def next_token_targets(batch: dict[str, torch.Tensor], width: int) -> torch.Tensor:
    """Targets for positions 0..width-1: the next token, or ``IGNORE_INDEX`` where ``loss_mask``
    (chat data: the assistant's tokens) is 0. Token shards have no mask: every target counts."""
    targets = batch["input_ids"][:, 1:width + 1].long()
    if "loss_mask" in batch:
        targets = targets.masked_fill(batch["loss_mask"][:, 1:width + 1] == 0, IGNORE_INDEX)
    return targets


# --------------------------------------------------------------------------------------------------
# the LightningModule (teacher and student must speak the same tokens: training/finetune/distill_checks.py)


class DistillModule(PretrainModule):
    """The student (a fresh model, or a checkpoint's weights when ``base`` is given) trained on the
    distillation loss. ``val_loss`` is the student's cross-entropy on the val rows (so ``val_ppl``
    compares with a pretraining run on the same shards); ``kl`` / ``ce`` (and ``val_kl`` /
    ``val_ce``) are token means in ``metrics/train.csv``."""

    METRICS = ("kl", "ce")

    def __init__(self, model_config: ModelConfig, optim: OptimConfig, schedule: ScheduleConfig, total_steps: int,
                 block_documents: bool, teacher: str, temperature: float, alpha: float, base: str | None = None,
                 compile_model: bool = False) -> None:
        from training.finetune.modules import _MetricSums, load_base_weights

        super().__init__(model_config, optim, schedule, total_steps, block_documents, compile_model)
        if base is not None:
            load_base_weights(self.model, base)
        teacher_model, teacher_config = load_model(teacher)
        problem = vocab_mismatch(teacher_config, model_config)
        if problem:
            raise ValueError(problem)
        teacher_model.requires_grad_(False)
        self._teacher = [teacher_model.eval()]  # a list: not registered as a submodule
        self.teacher_path, self.temperature, self.alpha = teacher, temperature, alpha
        self.train_sums, self.val_sums = _MetricSums(self.METRICS), _MetricSums(self.METRICS)

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher on the student's device: bf16 on a GPU, fp32 on a CPU (bf16 matmuls are
        slow there). Always in eval mode: Lightning's ``train()`` calls never reach it."""
        ref = self._teacher[0]
        if ref.tok_emb.weight.device != self.device:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
            self._teacher[0] = ref = ref.to(device=self.device, dtype=dtype).eval()
        return ref

    def _inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = batch["input_ids"][:, :-1]
        segments = batch["segment_ids"][:, :-1] if self.block_documents and "segment_ids" in batch else None
        return ids, segments

    def terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, segments = self._inputs(batch)
        student_logits = self(ids, segments)
        with torch.no_grad():  # the teacher's attention is blocked across documents as the student's is
            teacher_logits = self.teacher(ids, segments)
        return distillation_loss(student_logits, teacher_logits, next_token_targets(batch, ids.size(1)),
                                 self.temperature, self.alpha)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self.terms(batch)
        self.micro_losses.append(terms["loss"].detach())
        self.train_sums.add(terms)
        return terms["loss"]

    @torch.no_grad()
    def eval_loss_sum(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Summed student cross-entropy over the counted targets (val_loss / val_ppl: the student's)."""
        terms = self.terms(batch)
        self.val_sums.add(terms)
        return terms["ce"].sum(), int(terms["ce"].numel())

    def step_metrics(self, strategy: Any, evaluated: bool) -> dict[str, Any]:
        row: dict[str, Any] = self.train_sums.reduce(strategy, self.device)
        if evaluated:
            row.update(self.val_sums.reduce(strategy, self.device, prefix="val_"))
        return row


def build_distill_module(plan: Any, model_config: ModelConfig, optim: OptimConfig,
                         schedule: ScheduleConfig) -> DistillModule:
    task = plan.task
    return DistillModule(model_config, optim, schedule, plan.max_steps, plan.block_documents, task["teacher"],
                         float(task["temperature"]), float(task["alpha"]), task.get("base"), plan.compile)
