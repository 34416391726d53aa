"""Load a Hugging Face ``transformers`` model directory (GPT-2 or Llama) as our :class:`Transformer`.

The exact inverse of :mod:`training.export`: ``config.json`` field names of ``transformers``'
``GPT2Config`` / ``LlamaConfig`` back to :class:`ModelConfig`, parameter names back to ours, GPT-2's
``Conv1D`` weights (stored ``[in, out]``) transposed back, Llama's ``q_proj`` / ``k_proj`` /
``v_proj`` fused back into our ``qkv`` (queries, keys, values rows; GQA through
``num_key_value_heads``). No ``transformers`` import: only ``config.json`` and ``model.safetensors``
are read. Anything our model cannot compute identically (another ``model_type``, RoPE scaling, other
activations, sharded weights, Llama attention and MLP biases that differ) is refused with a
``ValueError`` naming the field, never approximated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from training.model import ModelConfig, Transformer

HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"
MODEL_TYPES = ("gpt2", "llama")
# Both are the tanh-approximate GELU our GPT-2 MLP computes (transformers' ACT2FN).
GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")


def is_hf_export(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds ``config.json`` with a ``model_type`` and ``model.safetensors``
    (a ``transformers`` model directory, e.g. one ``gristmill export --format hf`` wrote), and not our
    own ``model_config.json`` (a Gristmill checkpoint takes precedence)."""
    directory = Path(directory)
    config = directory / HF_CONFIG_FILE
    if not config.is_file() or (directory / "model_config.json").is_file():
        return False
    if not (directory / HF_WEIGHTS_FILE).is_file() and not (directory / "model.safetensors.index.json").is_file():
        return False
    try:
        return "model_type" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def _refuse(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message}; Gristmill can only load the GPT-2 and Llama layouts "
                      "that `gristmill export --format hf` writes")


def _gpt2_config(hf: dict[str, Any], path: Path, bias: bool) -> ModelConfig:
    activation = hf.get("activation_function", "gelu_new")
    if activation not in GPT2_ACTIVATIONS:
        raise _refuse(path, f"activation_function {activation!r} is not the tanh GELU of our GPT-2 MLP")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        raise _refuse(path, "only 1/sqrt(head_dim) attention scaling is supported "
                      "(scale_attn_weights: true, scale_attn_by_inverse_layer_idx: false)")
    if hf.get("add_cross_attention", False):
        raise _refuse(path, "add_cross_attention is not supported")
    d_model = hf.get("n_embd", 768)  # GPT2Config defaults
    return ModelConfig(
        arch="gpt2", vocab_size=hf.get("vocab_size", 50257), max_seq_len=hf.get("n_positions", 1024),
        n_layer=hf.get("n_layer", 12), n_head=hf.get("n_head", 12), d_model=d_model,
        d_ff=hf.get("n_inner") or 4 * d_model, tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        dropout=float(hf.get("resid_pdrop", 0.0)), norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        bias=bias, init_std=float(hf.get("initializer_range", 0.02)),
    )


def _llama_config(hf: dict[str, Any], path: Path) -> ModelConfig:
    if hf.get("hidden_act", "silu") != "silu":
        raise _refuse(path, f"hidden_act {hf.get('hidden_act')!r} is not SiLU (our SwiGLU MLP)")
    if hf.get("rope_scaling"):
        raise _refuse(path, f"rope_scaling {hf['rope_scaling']!r} is not supported (plain RoPE only)")
    rope_parameters = hf.get("rope_parameters") or {}
    rope_type = rope_parameters.get("rope_type", rope_parameters.get("type", "default"))
    if rope_type != "default":
        raise _refuse(path, f"rope_parameters.rope_type {rope_type!r} is not supported (plain RoPE only)")
    attention_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    if attention_bias != mlp_bias:
        # Our ``bias`` switches every linear layer at once; export writes both flags equal.
        raise _refuse(path, f"attention_bias ({attention_bias}) and mlp_bias ({mlp_bias}) differ")
    d_model, n_head = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)  # LlamaConfig defaults
    head_dim = hf.get("head_dim") or d_model // n_head
    if head_dim * n_head != d_model:
        raise _refuse(path, f"head_dim {head_dim} × num_attention_heads {n_head} != hidden_size {d_model}")
    rope_theta = hf.get("rope_theta", rope_parameters.get("rope_theta", 10000.0))
    return ModelConfig(
        arch="llama", vocab_size=hf.get("vocab_size", 32000),
        max_seq_len=hf.get("max_position_embeddings", 2048), n_layer=hf.get("num_hidden_layers", 32),
        n_head=n_head, n_kv_head=hf.get("num_key_value_heads") or n_head, d_model=d_model,
        d_ff=hf.get("intermediate_size", 11008), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        dropout=float(hf.get("attention_dropout", 0.0)), rope_theta=float(rope_theta),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), bias=attention_bias,
        init_std=float(hf.get("initializer_range", 0.02)),
    )


def _gpt2_has_biases(hf_state: dict[str, torch.Tensor]) -> bool:
    # HF GPT-2 always has biases; export writes zeros for a ``bias: false`` model, so all-zero
    # biases (and only those) map back to ``bias: false``: the same function, the original config.
    return any(bool(t.any()) for name, t in hf_state.items() if name.endswith(".bias") and name.startswith("transformer."))


def _gpt2_state(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {"tok_emb.weight": hf.pop("transformer.wte.weight"), "pos_emb.weight": hf.pop("transformer.wpe.weight")}
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}", f"transformer.h.{i}"
        for our_norm, hf_norm in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            out[f"{ours}.{our_norm}.weight"] = hf.pop(f"{theirs}.{hf_norm}.weight")
            bias = hf.pop(f"{theirs}.{hf_norm}.bias")
            if cfg.bias:
                out[f"{ours}.{our_norm}.bias"] = bias
        for our_lin, hf_lin in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                                ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            out[f"{ours}.{our_lin}.weight"] = hf.pop(f"{theirs}.{hf_lin}.weight").t()  # Conv1D [in, out]
            bias = hf.pop(f"{theirs}.{hf_lin}.bias")
            if cfg.bias:
                out[f"{ours}.{our_lin}.bias"] = bias
        # Causal-mask buffers some transformers versions saved; not weights.
        hf.pop(f"{theirs}.attn.bias", None), hf.pop(f"{theirs}.attn.masked_bias", None)
    out["final_norm.weight"] = hf.pop("transformer.ln_f.weight")
    bias = hf.pop("transformer.ln_f.bias")
    if cfg.bias:
        out["final_norm.bias"] = bias
    return out


def _llama_state(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {"tok_emb.weight": hf.pop("model.embed_tokens.weight"), "final_norm.weight": hf.pop("model.norm.weight")}
    kinds = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}", f"model.layers.{i}"
        out[f"{ours}.attn_norm.weight"] = hf.pop(f"{theirs}.input_layernorm.weight")
        out[f"{ours}.mlp_norm.weight"] = hf.pop(f"{theirs}.post_attention_layernorm.weight")
        for kind in kinds:
            out[f"{ours}.attn.qkv.{kind}"] = torch.cat(
                [hf.pop(f"{theirs}.self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")], dim=0)
            for our_lin, hf_lin in (("attn.proj", "self_attn.o_proj"), ("mlp.gate", "mlp.gate_proj"),
                                    ("mlp.up", "mlp.up_proj"), ("mlp.proj", "mlp.down_proj")):
                out[f"{ours}.{our_lin}.{kind}"] = hf.pop(f"{theirs}.{hf_lin}.{kind}")
        hf.pop(f"{theirs}.self_attn.rotary_emb.inv_freq", None)  # a buffer older versions saved
    return out


def load_hf_export(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Transformer, ModelConfig]:
    """Build our :class:`Transformer` from a ``transformers`` GPT-2 / Llama directory (strictly: every
    tensor used, none missing). Returned in eval mode on ``device``, float32 like our checkpoints."""
    directory = Path(directory)
    config_path, weights_path = directory / HF_CONFIG_FILE, directory / HF_WEIGHTS_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found")
    hf_config = json.loads(config_path.read_text())
    model_type = hf_config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise _refuse(config_path, f"model_type {model_type!r} is not one of {MODEL_TYPES}")
    if not weights_path.is_file():
        hint = " (sharded weights are not supported)" if (directory / "model.safetensors.index.json").is_file() else ""
        raise FileNotFoundError(f"{weights_path} not found{hint}")
    hf_state = load_file(str(weights_path), device=str(device))
    try:
        if model_type == "gpt2":
            config = _gpt2_config(hf_config, config_path, _gpt2_has_biases(hf_state))
            state = _gpt2_state(hf_state, config)
        else:
            config = _llama_config(hf_config, config_path)
            state = _llama_state(hf_state, config)
    except KeyError as exc:
        raise _refuse(weights_path, f"tensor {exc.args[0]} is missing (does config.json match the weights?)") from None
    if config.tie_embeddings:
        hf_state.pop("lm_head.weight", None)  # some writers store the tied copy too
    elif "lm_head.weight" in hf_state:
        state["lm_head.weight"] = hf_state.pop("lm_head.weight")
    else:
        raise _refuse(weights_path, "tie_word_embeddings is false but lm_head.weight is missing")
    if hf_state:
        raise _refuse(weights_path, f"unexpected tensors {sorted(hf_state)[:5]} (more layers, or biases "
                      "config.json does not declare?)")
    with torch.device(device):
        model = Transformer(config)
    if config.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    expected = set(model.state_dict())
    if set(state) != expected:
        raise _refuse(weights_path, f"weights do not match config.json: missing {sorted(expected - set(state))[:5]}, "
                      f"unexpected {sorted(set(state) - expected)[:5]}")
    try:
        model.load_state_dict(state, strict=True)  # copies into float32 parameters whatever the stored dtype
    except RuntimeError as exc:  # shape mismatches
        raise _refuse(weights_path, f"weights do not match config.json: {exc}") from None
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    model.eval()
    return model, config
