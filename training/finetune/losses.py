"""Fine-tuning objectives as pure functions of logits (testable on hand-made numbers).

* SFT: next-token cross-entropy over the masked (assistant) targets only, mean per target token
  (TRL's ``completion_only_loss`` / ``assistant_only_loss``).
* Reward model: Bradley-Terry (1952) pairwise loss ``-log σ(r_chosen - r_rejected)``, as in
  InstructGPT (Ouyang et al. 2022, eq. 1) and TRL's ``RewardTrainer``.
* DPO: Rafailov et al. 2023, eq. 7: ``-log σ(β[(log π_c - log π_ref,c) - (log π_r - log π_ref,r)])``
  with sequence log-probabilities summed over the response tokens; the implicit rewards
  ``β(log π - log π_ref)`` are the metrics TRL reports (rewards/chosen, rejected, margins, accuracies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(token t+1 | ≤ t) for every position: ``logits`` [B, T, V] over positions 0..T-1 of rows
    ``input_ids`` [B, ≥T+1]. Computed in fp32."""
    targets = input_ids[:, 1:logits.size(1) + 1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def masked_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor,
                   reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the targets whose ``loss_mask`` (aligned with ``input_ids``) is 1.

    ``reduction="sum"`` returns the summed loss (for exact means over several batches); "mean"
    divides by the number of masked targets (and returns 0, with a gradient, when there is none)."""
    t = logits.size(1)
    targets = input_ids[:, 1:t + 1]
    weights = loss_mask[:, 1:t + 1].to(torch.float32)
    per_token = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1).long(),
                                reduction="none").view_as(weights)
    total = (per_token * weights).sum()
    if reduction == "sum":
        return total
    return total / weights.sum().clamp(min=1.0)


def sequence_logprob(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's masked targets: [B]."""
    t = logits.size(1)
    return (token_logprobs(logits, input_ids) * loss_mask[:, 1:t + 1].to(torch.float32)).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """Per-pair DPO sigmoid loss and implicit rewards from sequence log-probs (all [B]).

    ``label_smoothing`` ε is the conservative DPO of Mitchell 2023 (TRL's ``label_smoothing``):
    ``-(1-ε) log σ(βh) - ε log σ(-βh)``; 0 is plain DPO."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    logits = chosen_reward - rejected_reward
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return {"loss": losses, "chosen_reward": chosen_reward.detach(), "rejected_reward": rejected_reward.detach(),
            "margin": logits.detach(), "accuracy": (logits > 0).float().detach()}


def bradley_terry_loss(chosen_score: torch.Tensor, rejected_score: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair reward-model loss and metrics (accuracy: the chosen scores higher; margin: the gap)."""
    diff = chosen_score.float() - rejected_score.float()
    return {"loss": -F.logsigmoid(diff), "margin": diff.detach(), "accuracy": (diff > 0).float().detach(),
            "chosen_score": chosen_score.detach().float(), "rejected_score": rejected_score.detach().float()}


def last_masked_index(loss_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last masked position (the end of the response): the reward model's
    score is read there, as TRL reads it at the last non-padding token."""
    positions = torch.arange(loss_mask.size(1), device=loss_mask.device).expand_as(loss_mask)
    return torch.where(loss_mask.bool(), positions, torch.zeros_like(positions)).max(dim=1).values
