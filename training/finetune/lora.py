"""LoRA (Hu et al. 2021): frozen base weights plus a trainable low-rank update ``(α/r)·B·A``.

:class:`LoRALinear` *is* an ``nn.Linear`` (same ``weight``/``bias`` names, so a base checkpoint loads
into it unchanged) with two extra matrices: ``lora_A`` [r, in] drawn like a Linear's weight
(Kaiming-uniform, as the paper's reference code and PEFT do) and ``lora_B`` [out, r] zero, so the
adapted model starts exactly at the base model. Dropout applies to the adapter's input only (PEFT).

Targets are module-name suffixes: ``attn.qkv`` (our fused query/key/value projection), ``attn.proj``,
``mlp.fc`` (GPT-2), ``mlp.gate`` / ``mlp.up`` (Llama), ``mlp.proj``. The default adapts all of them:
QLoRA (Dettmers et al. 2023, sec. 4) found adapters on every linear layer are needed to match full
fine-tuning; the paper's own choice was the attention projections.

Checkpoints hold the adapter only (``adapter.safetensors`` + ``adapter_config.json``, the weights of
``lora_*`` parameters); :func:`merge_lora` folds them into the base weights and returns a plain
:class:`~training.model.Transformer` that generation and export treat like any other.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training.model import Transformer

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ATTENTION_TARGETS = ("attn.qkv", "attn.proj")
MLP_TARGETS = ("mlp.fc", "mlp.gate", "mlp.up", "mlp.proj")
ALL_TARGETS = ATTENTION_TARGETS + MLP_TARGETS


@dataclass(frozen=True)
class LoRAConfig:
    """Defaults: r=8, α=16, dropout 0.05 (PEFT / QLoRA's common choice: scaling α/r = 2)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = field(default_factory=lambda: ALL_TARGETS)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoRAConfig":
        return cls(**{**data, "target_modules": tuple(data.get("target_modules", ALL_TARGETS))})


class LoRALinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool, rank: int, alpha: float, dropout: float,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.rank, self.scaling = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @classmethod
    def wrap(cls, linear: nn.Linear, config: LoRAConfig) -> "LoRALinear":
        w = linear.weight
        lora = cls(linear.in_features, linear.out_features, linear.bias is not None, config.rank, config.alpha,
                   config.dropout, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lora.weight.copy_(w)
            if linear.bias is not None:
                lora.bias.copy_(linear.bias)
        for attr in ("is_residual_projection",):
            if hasattr(linear, attr):
                setattr(lora, attr, getattr(linear, attr))
        return lora

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = super().forward(x)
        return base + (self.lora_dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling


def target_names(model: Transformer, targets: tuple[str, ...]) -> list[str]:
    """Names of the Linear modules whose name ends with one of ``targets`` (as ``.target``)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)]


def apply_lora(model: Transformer, config: LoRAConfig) -> list[str]:
    """Replace the target Linears by LoRALinears in place; freeze everything but the adapters.
    Returns the adapted module names. Raises if a target matches nothing (a typo must not silently
    train nothing)."""
    names = target_names(model, config.target_modules)
    known = [t for t in ALL_TARGETS if target_names(model, (t,))]
    # gpt2 has mlp.fc where llama has mlp.gate/up: a target of the other architecture is skipped,
    # but a name no architecture has, or a list that matches nothing, is an error.
    unknown = [t for t in config.target_modules if t not in ALL_TARGETS and not target_names(model, (t,))]
    if unknown or not names:
        raise ValueError(f"LoRA targets {unknown or list(config.target_modules)} match no linear layer of this "
                         f"{model.config.arch} model; known: {', '.join(known)}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear.wrap(getattr(parent, child), config))
    for pname, param in model.named_parameters():
        param.requires_grad = "lora_" in pname
    return names


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items() if "lora_" in k}


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_adapter(directory: str | os.PathLike, model: nn.Module, config: LoRAConfig, base: str,
                 extra: dict[str, Any] | None = None) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(model), str(directory / ADAPTER_FILE), metadata={"format": "pt"})
    meta = {"format": "gristmill-lora/1", "lora": {**asdict(config), "target_modules": list(config.target_modules)},
            "base": base, "extra": extra or {}}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def read_adapter_config(directory: str | os.PathLike) -> tuple[LoRAConfig, str]:
    meta = json.loads((Path(directory) / ADAPTER_CONFIG).read_text())
    return LoRAConfig.from_dict(meta["lora"]), meta["base"]


def load_adapter(model: nn.Module, directory: str | os.PathLike) -> None:
    """Load ``adapter.safetensors`` into a model that already has the adapters (strict on lora keys)."""
    state = load_file(str(Path(directory) / ADAPTER_FILE))
    expected = {k for k in model.state_dict() if "lora_" in k}
    if set(state) != expected:
        raise ValueError(f"{directory}: adapter keys do not match the model's adapters "
                         f"(missing {sorted(expected - set(state))[:4]}, unexpected {sorted(set(state) - expected)[:4]})")
    model.load_state_dict(state, strict=False)


@torch.no_grad()
def merge_lora(model: Transformer) -> Transformer:
    """A plain Transformer whose weights are base + (α/r)·B·A for every adapted layer."""
    merged = Transformer(model.config).to(next(model.parameters()).device)
    state = {k: v for k, v in model.state_dict().items() if "lora_" not in k}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{name}.weight"] = module.weight + module.delta_weight().to(module.weight.dtype)
    merged.load_state_dict(state)
    if model.config.tie_embeddings:
        merged.lm_head.weight = merged.tok_emb.weight
    return merged.eval()


def is_adapter_checkpoint(directory: str | os.PathLike) -> bool:
    return (Path(directory) / ADAPTER_CONFIG).is_file() and (Path(directory) / ADAPTER_FILE).is_file()


def load_merged(adapter_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Transformer:
    """An adapter checkpoint's base model (the ``base`` recorded in ``adapter_config.json``) with the
    adapter merged in: what ``gristmill generate`` runs when pointed at a LoRA step checkpoint."""
    from training.checkpoint import load_model

    config, base = read_adapter_config(adapter_dir)
    model, _ = load_model(base, device=device)
    apply_lora(model, config)
    load_adapter(model, adapter_dir)
    return merge_lora(model)


def write_merged(adapter_dir: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Merge an adapter checkpoint into its base and save it as an ordinary checkpoint (with the
    adapter checkpoint's tokenizer, when it has one)."""
    import shutil

    from training.checkpoint import TOKENIZER_FILE, save_model

    merged = load_merged(adapter_dir)
    _, base = read_adapter_config(adapter_dir)
    save_model(target, merged, merged.config, extra={"merged_from": str(adapter_dir), "base": base})
    tokenizer = Path(adapter_dir) / TOKENIZER_FILE
    if tokenizer.is_file():
        shutil.copyfile(tokenizer, Path(target) / TOKENIZER_FILE)
    return Path(target)
