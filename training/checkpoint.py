"""Model weights on disk: ``model.safetensors`` + ``model_config.json`` in one directory.

Safetensors rather than pickles, so loading a checkpoint can never run code (the issue asks for
checkpoints that load with ``torch.load(weights_only=True)`` or safetensors). A tied output
projection is stored once (``lm_head.weight`` is dropped when it is the token embedding) and re-tied
on load by the model's constructor.

Training checkpoints (``<run>/checkpoints/step-NNNNNN/``) hold these two files plus optimizer,
scheduler, RNG and data-position state written by the trainer; everything here reads only the two.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from training.model import ModelConfig, Transformer
from training.remote import localize

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FORMAT = "gristmill-model/1"


def _weights_to_save(model: Transformer) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)  # the same storage as tok_emb.weight
    # safetensors needs contiguous tensors that own their storage.
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_model(
    directory: str | os.PathLike,
    model: Transformer,
    config: ModelConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``model_config.json`` into ``directory`` (created if needed).

    ``extra`` (JSON-serialisable: step, tokens seen, tokenizer path …) is stored next to the config
    under ``"extra"``. Each file is written under a temporary name and renamed, so a killed process
    never leaves a half-written file under the final name.
    """
    config = model.config if config is None else config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_tmp = directory / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
    save_file(_weights_to_save(model), str(weights_tmp), metadata={"format": "pt"})
    os.replace(weights_tmp, directory / WEIGHTS_FILE)
    meta = {"format": CONFIG_FORMAT, "config": config.to_dict(), "extra": extra or {}}
    _atomic_write_bytes(directory / CONFIG_FILE, (json.dumps(meta, indent=2) + "\n").encode())
    return directory


def read_model_config(directory: str | os.PathLike) -> tuple[ModelConfig, dict[str, Any]]:
    """The :class:`ModelConfig` and ``extra`` dict stored in a checkpoint directory (or, for a
    ``transformers`` export directory, the config :mod:`training.hf_import` maps it to; no ``extra``)."""
    from training.hf_import import is_hf_export, load_hf_export

    directory = localize(directory)  # a checkpoint in an object store: its local copy
    if is_hf_export(directory):
        return load_hf_export(directory)[1], {}
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a model checkpoint directory holds {WEIGHTS_FILE} and {CONFIG_FILE}"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != CONFIG_FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}, expected {CONFIG_FORMAT!r}")
    return ModelConfig.from_dict(meta["config"]), meta.get("extra", {})


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Transformer, ModelConfig]:
    """Build the model from ``model_config.json`` and load ``model.safetensors`` into it (strictly).

    Returned in eval mode on ``device``. A ``transformers`` GPT-2 / Llama directory (``config.json``,
    e.g. written by ``gristmill export``) is loaded through :func:`training.hf_import.load_hf_export`.
    """
    from training.hf_import import is_hf_export, load_hf_export

    directory = localize(directory)  # a checkpoint in an object store: its local copy
    if is_hf_export(directory):
        return load_hf_export(directory, device=device)
    directory = Path(directory)
    config, _ = read_model_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found")
    state = load_file(str(weights_path), device=str(device))
    with torch.device(device):
        model = Transformer(config)
    if config.tie_embeddings:
        state.setdefault("lm_head.weight", state["tok_emb.weight"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Non-persistent buffers (RoPE tables) are rebuilt from the config, not stored.
    if missing or unexpected:
        raise ValueError(
            f"{weights_path} does not match its config: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight  # load_state_dict copied; keep them one tensor
    model.eval()
    return model, config


def find_tokenizer(checkpoint_dir: str | os.PathLike) -> Path:
    """The ``tokenizer.json`` that belongs to a checkpoint.

    Looked for in the checkpoint directory itself, then at ``../../tokenizer/tokenizer.json`` (the run
    directory layout: ``<run>/checkpoints/step-NNNNNN/`` next to ``<run>/tokenizer/``).
    """
    checkpoint_dir = Path(localize(checkpoint_dir))
    candidates = [
        checkpoint_dir / TOKENIZER_FILE,
        checkpoint_dir.parent.parent / "tokenizer" / TOKENIZER_FILE,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no tokenizer for checkpoint {checkpoint_dir}: looked for "
        + ", ".join(str(c) for c in candidates)
    )
