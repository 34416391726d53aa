"""The fine-tuning LightningModules. Each is a :class:`~training.lightning_module.PretrainModule` (same
AdamW groups, schedule, clipping, gradient-norm bookkeeping) with a different objective and start
weights, so the pretraining launcher and its progress callback (checkpoints, resume, metrics CSV,
evaluation) run them unchanged. The hooks that callback calls when a module has them:

* ``weights_file``: the file that marks a checkpoint's weights complete (default model.safetensors);
* ``save_weights(directory, extra)`` / ``restore_weights(directory)``: checkpoints that are not a
  plain model (LoRA adapters, a reward model's head);
* ``step_metrics(strategy, evaluated)``: extra columns for ``metrics/train.csv`` (DPO rewards,
  margins, accuracies), reduced over the workers.

``build_module(plan, model_config)`` is the launcher's ``module_factory``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training.checkpoint import CONFIG_FILE, load_model, save_model
from training.finetune import lora as lora_lib
from training.finetune.losses import (bradley_terry_loss, dpo_loss, last_masked_index, masked_lm_loss,
                                      sequence_logprob)
from training.lightning_module import OptimConfig, PretrainModule, ScheduleConfig
from training.model import ModelConfig

REWARD_WEIGHTS = "reward_model.safetensors"
METHODS = ("sft", "lora", "reward", "dpo", "distill")


def load_base_weights(model: nn.Module, base: str) -> None:
    """Copy a checkpoint's weights into ``model`` (same config; strict)."""
    restored, _ = load_model(base)
    model.load_state_dict(restored.state_dict())


class _MetricSums:
    """Per-pair metrics summed over the micro-batches of one optimizer step (or one evaluation),
    then reduced over the workers: exact means whatever the split of pairs across ranks."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.sums: torch.Tensor | None = None

    def add(self, values: dict[str, torch.Tensor]) -> None:
        row = torch.stack([values[n].detach().float().sum() for n in self.names]
                          + [torch.tensor(float(values[self.names[0]].numel()), device=values[self.names[0]].device)])
        self.sums = row if self.sums is None else self.sums + row

    def reduce(self, strategy: Any, device: torch.device, prefix: str = "") -> dict[str, float]:
        sums = self.sums if self.sums is not None else torch.zeros(len(self.names) + 1, device=device)
        self.sums = None
        total = strategy.reduce(sums.double().to(device), reduce_op="sum")
        count = float(total[-1])
        if count == 0:
            return {}
        return {prefix + n: float(total[i]) / count for i, n in enumerate(self.names)}


class PairwiseModule(PretrainModule):
    """What the reward model and DPO share: rows of (chosen, rejected) pairs, a per-pair loss from
    ``pair_terms(batch)`` (a dict with ``loss`` and the ``METRICS``), and those metrics summed per step
    and per evaluation (train and ``val_`` columns of ``metrics/train.csv``). Pairs are never packed:
    no attention blocking."""

    METRICS: tuple[str, ...] = ()

    def __init__(self, model_config: ModelConfig, optim: OptimConfig, schedule: ScheduleConfig, total_steps: int,
                 base: str, compile_model: bool = False) -> None:
        super().__init__(model_config, optim, schedule, total_steps, False, compile_model)
        load_base_weights(self.model, base)
        self.train_sums, self.val_sums = _MetricSums(self.METRICS), _MetricSums(self.METRICS)

    def pair_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self.pair_terms(batch)
        loss = terms["loss"].mean()
        self.micro_losses.append(loss.detach())
        self.train_sums.add(terms)
        return loss

    @torch.no_grad()
    def eval_loss_sum(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        terms = self.pair_terms(batch)
        self.val_sums.add(terms)
        return terms["loss"].sum(), int(terms["loss"].numel())

    def step_metrics(self, strategy: Any, evaluated: bool) -> dict[str, Any]:
        row: dict[str, Any] = self.train_sums.reduce(strategy, self.device)
        if evaluated:  # val_loss is a pair loss, not a token loss: no perplexity
            row.update(self.val_sums.reduce(strategy, self.device, prefix="val_"), val_ppl=None)
        return row


class SFTModule(PretrainModule):
    """Supervised fine-tuning: next-token loss on the assistant's tokens only (``loss_mask``), packed
    conversations blocked from each other by ``segment_ids``. Full fine-tuning, or LoRA when a
    :class:`~training.finetune.lora.LoRAConfig` is given (only the adapters train)."""

    def __init__(self, model_config: ModelConfig, optim: OptimConfig, schedule: ScheduleConfig, total_steps: int,
                 block_documents: bool, base: str, lora: lora_lib.LoRAConfig | None = None,
                 compile_model: bool = False) -> None:
        super().__init__(model_config, optim, schedule, total_steps, block_documents, compile_model)
        load_base_weights(self.model, base)
        self.base = base
        self.lora = lora
        if lora is not None:
            lora_lib.apply_lora(self.model, lora)
            self.weights_file = lora_lib.ADAPTER_FILE
        self.assistant_tokens = 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = masked_lm_loss(self.batch_logits(batch), batch["input_ids"], batch["loss_mask"])
        self.micro_losses.append(loss.detach())
        self.assistant_tokens += int(batch["loss_mask"][:, 1:].sum())
        return loss

    @torch.no_grad()
    def eval_loss_sum(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Summed loss and count of the assistant targets (val_loss is the assistant-token loss)."""
        loss = masked_lm_loss(self.batch_logits(batch), batch["input_ids"], batch["loss_mask"], reduction="sum")
        return loss, int(batch["loss_mask"][:, 1:].sum())

    def step_metrics(self, strategy: Any, evaluated: bool) -> dict[str, Any]:
        count = strategy.reduce(torch.tensor(float(self.assistant_tokens), device=self.device), reduce_op="sum")
        self.assistant_tokens = 0
        return {"assistant_tokens": int(count)}

    # LoRA checkpoints: the adapter only (the base is the `from` checkpoint, never rewritten).
    def save_weights(self, directory: str, extra: dict[str, Any]) -> None:
        if self.lora is None:
            save_model(directory, self.model, self.model_config, extra=extra)
            return
        lora_lib.save_adapter(directory, self.model, self.lora, self.base, extra)
        (Path(directory) / CONFIG_FILE).write_text(json.dumps(
            {"format": "gristmill-model/1", "config": self.model_config.to_dict(),
             "extra": {**extra, "adapter_of": self.base}}, indent=2) + "\n")

    def restore_weights(self, directory: str) -> None:
        if self.lora is None:
            load_base_weights(self.model, directory)
        else:
            lora_lib.load_adapter(self.model, directory)


class RewardModule(PairwiseModule):
    """A reward model: the base transformer with its output projection replaced by a scalar head
    (HF's ``...ForSequenceClassification`` with one label; TRL's RewardTrainer), scored at the last
    response token, trained with the Bradley-Terry loss on chosen vs rejected."""

    METRICS = ("accuracy", "margin", "chosen_score", "rejected_score")

    def __init__(self, model_config: ModelConfig, optim: OptimConfig, schedule: ScheduleConfig, total_steps: int,
                 base: str, compile_model: bool = False) -> None:
        super().__init__(model_config, optim, schedule, total_steps, base, compile_model)
        head = nn.Linear(model_config.d_model, 1, bias=False)
        nn.init.normal_(head.weight, std=1.0 / (model_config.d_model + 1) ** 0.5)  # HF's score-head init range
        self.model.lm_head = head  # unties a tied embedding: the head is the only new parameter
        self.weights_file = REWARD_WEIGHTS

    def scores(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        width = ids.size(1) - 1  # preference rows hold at most seq_len real tokens
        values = self(ids[:, :width]).squeeze(-1).float()
        return values.gather(1, last_masked_index(mask[:, :width]).unsqueeze(1)).squeeze(1)

    def pair_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = torch.cat([batch["input_ids"], batch["rejected_ids"]])
        mask = torch.cat([batch["loss_mask"], batch["rejected_loss_mask"]])
        scores = self.scores(ids, mask)
        n = batch["input_ids"].size(0)
        return bradley_terry_loss(scores[:n], scores[n:])

    def save_weights(self, directory: str, extra: dict[str, Any]) -> None:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        save_file(state, str(Path(directory) / REWARD_WEIGHTS), metadata={"format": "pt"})
        (Path(directory) / CONFIG_FILE).write_text(json.dumps(
            {"format": "gristmill-model/1", "config": self.model_config.to_dict(),
             "extra": {**extra, "head": "reward"}}, indent=2) + "\n")

    def restore_weights(self, directory: str) -> None:
        self.model.load_state_dict(load_file(str(Path(directory) / REWARD_WEIGHTS)))


def load_reward_model(directory: str) -> nn.Module:
    """A trained reward model (for scoring): the transformer with its scalar head, in eval mode."""
    from training.checkpoint import read_model_config
    from training.model import Transformer

    config, _ = read_model_config(directory)
    model = Transformer(config)
    model.lm_head = nn.Linear(config.d_model, 1, bias=False)
    model.load_state_dict(load_file(str(Path(directory) / REWARD_WEIGHTS)))
    return model.eval()


class DPOModule(PairwiseModule):
    """Direct Preference Optimization: the policy starts from the base checkpoint and a frozen copy
    of it is the reference. The reference is kept out of the module's parameters (not trained, not
    in the optimizer, not in checkpoints: it is always the `from` checkpoint)."""

    METRICS = ("accuracy", "margin", "chosen_reward", "rejected_reward")

    def __init__(self, model_config: ModelConfig, optim: OptimConfig, schedule: ScheduleConfig, total_steps: int,
                 base: str, beta: float, label_smoothing: float = 0.0, compile_model: bool = False) -> None:
        super().__init__(model_config, optim, schedule, total_steps, base, compile_model)
        reference, _ = load_model(base)
        reference.requires_grad_(False)
        self._reference = [reference.eval()]  # a list: not registered as a submodule
        self.beta, self.label_smoothing = beta, label_smoothing

    @property
    def reference(self) -> nn.Module:
        ref = self._reference[0]
        if ref.tok_emb.weight.device != self.device:
            self._reference[0] = ref = ref.to(self.device)
        return ref

    def logprobs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed response log-probs of chosen and rejected, one forward over both."""
        ids = torch.cat([batch["input_ids"], batch["rejected_ids"]])
        mask = torch.cat([batch["loss_mask"], batch["rejected_loss_mask"]])
        width = ids.size(1) - 1
        logits = model(ids[:, :width])
        logp = sequence_logprob(logits, ids, mask)
        n = batch["input_ids"].size(0)
        return logp[:n], logp[n:]

    def pair_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        policy_c, policy_r = self.logprobs(self, batch)
        with torch.no_grad():
            ref_c, ref_r = self.logprobs(self.reference, batch)
        return dpo_loss(policy_c, policy_r, ref_c, ref_r, self.beta, self.label_smoothing)


def build_module(plan: Any, model_config: ModelConfig) -> PretrainModule:
    """The launcher's ``module_factory``: the module for ``plan.task["method"]``."""
    task = plan.task or {}
    method = task.get("method")
    optim, schedule = OptimConfig(**plan.optim), ScheduleConfig(**plan.schedule)
    if method == "distill":  # training/finetune/distill.py; a fresh student has no base
        from training.finetune.distill import build_distill_module

        return build_distill_module(plan, model_config, optim, schedule)
    base = task["base"]
    if method in ("sft", "lora"):
        lora = lora_lib.LoRAConfig.from_dict(task["lora"]) if method == "lora" else None
        return SFTModule(model_config, optim, schedule, plan.max_steps, plan.block_documents, base, lora, plan.compile)
    if method == "reward":
        return RewardModule(model_config, optim, schedule, plan.max_steps, base, plan.compile)
    if method == "dpo":
        return DPOModule(model_config, optim, schedule, plan.max_steps, base, float(task["beta"]),
                         float(task.get("label_smoothing", 0.0)), plan.compile)
    raise ValueError(f"unknown fine-tuning method {method!r}; expected one of {METHODS}")
