"""Learning-rate schedules as multipliers of the peak rate, one per optimizer step.

* ``cosine``: linear warmup, then cosine decay to ``min_lr_ratio`` × peak at the last step
  (GPT-3 / Chinchilla; nanoGPT decays to 10% of the peak, which is our default).
* ``wsd``: warmup-stable-decay: linear warmup, a constant plateau, then a linear decay to
  ``min_lr_ratio`` over the last ``decay_fraction`` of the steps (MiniCPM, Hu et al. 2024;
  Hägele et al. 2024 find a 20% cooldown matches cosine, hence the default 0.2).

A pure function of the step, so a resumed run gets the same rate from the restored step count.
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, total_steps: int, kind: str, warmup_steps: int, min_lr_ratio: float,
                  decay_fraction: float = 0.2) -> float:
    """Multiplier for the update made at optimizer step ``step`` (0-based) of ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "wsd":
        decay_steps = max(1, round(decay_fraction * total_steps))
        decay_start = total_steps - decay_steps
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start + 1) / decay_steps)
        return 1.0 - (1.0 - min_lr_ratio) * progress
    raise ValueError(f"unknown schedule {kind!r}")
