"""Export a checkpoint as a Hugging Face ``transformers`` model directory.

``export_hf`` writes ``model.safetensors``, ``config.json``, ``generation_config.json`` and the
tokenizer files (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``), which
``AutoModelForCausalLM`` / ``AutoTokenizer`` load as ``GPT2LMHeadModel`` or ``LlamaForCausalLM`` and a
``PreTrainedTokenizerFast``. No ``transformers`` import: the files are written from the config
field names of ``transformers``' ``GPT2Config`` / ``LlamaConfig``.

Weight layout differences, checked against ``transformers/models/{gpt2,llama}/modeling_*.py``:

* GPT-2 uses ``Conv1D`` (weight stored ``[in, out]``), so every linear weight is transposed; its
  fused ``c_attn`` has our ``qkv`` row order (queries, keys, values). HF GPT-2 always has biases, so a
  ``bias: false`` model exports zero biases (the same function).
* Llama: our fused ``qkv`` is split into ``q_proj`` / ``k_proj`` / ``v_proj``. Our RoPE already uses
  HF's ``rotate_half`` layout, so no q/k permutation is needed (Meta's original checkpoints
  interleave pairs and need one; ours do not).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from training.checkpoint import find_tokenizer, load_model
from training.model import ModelConfig, Transformer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPECIAL_TOKEN_ROLES = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}


def _gpt2_state(model: Transformer) -> dict[str, torch.Tensor]:
    cfg = model.config
    sd = model.state_dict()

    def bias_or_zeros(name: str, size: int) -> torch.Tensor:
        return sd[name] if name in sd else torch.zeros(size, dtype=sd["tok_emb.weight"].dtype)

    out = {"transformer.wte.weight": sd["tok_emb.weight"], "transformer.wpe.weight": sd["pos_emb.weight"]}
    for i in range(cfg.n_layer):
        ours, hf = f"blocks.{i}", f"transformer.h.{i}"
        for our_norm, hf_norm in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            out[f"{hf}.{hf_norm}.weight"] = sd[f"{ours}.{our_norm}.weight"]
            out[f"{hf}.{hf_norm}.bias"] = bias_or_zeros(f"{ours}.{our_norm}.bias", cfg.d_model)
        for our_lin, hf_lin in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                                ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            weight = sd[f"{ours}.{our_lin}.weight"]
            out[f"{hf}.{hf_lin}.weight"] = weight.t()  # Conv1D stores [in, out]
            out[f"{hf}.{hf_lin}.bias"] = bias_or_zeros(f"{ours}.{our_lin}.bias", weight.shape[0])
    out["transformer.ln_f.weight"] = sd["final_norm.weight"]
    out["transformer.ln_f.bias"] = bias_or_zeros("final_norm.bias", cfg.d_model)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def _llama_state(model: Transformer) -> dict[str, torch.Tensor]:
    cfg = model.config
    sd = model.state_dict()
    q_out = cfg.n_head * cfg.head_dim
    split = (q_out, cfg.kv_dim, cfg.kv_dim)
    out = {"model.embed_tokens.weight": sd["tok_emb.weight"], "model.norm.weight": sd["final_norm.weight"]}
    for i in range(cfg.n_layer):
        ours, hf = f"blocks.{i}", f"model.layers.{i}"
        out[f"{hf}.input_layernorm.weight"] = sd[f"{ours}.attn_norm.weight"]
        out[f"{hf}.post_attention_layernorm.weight"] = sd[f"{ours}.mlp_norm.weight"]
        for kind in ("weight", "bias"):
            name = f"{ours}.attn.qkv.{kind}"
            if name in sd:
                q, k, v = sd[name].split(split, dim=0)
                out[f"{hf}.self_attn.q_proj.{kind}"] = q
                out[f"{hf}.self_attn.k_proj.{kind}"] = k
                out[f"{hf}.self_attn.v_proj.{kind}"] = v
            for our_lin, hf_lin in (("attn.proj", "self_attn.o_proj"), ("mlp.gate", "mlp.gate_proj"),
                                    ("mlp.up", "mlp.up_proj"), ("mlp.proj", "mlp.down_proj")):
                if f"{ours}.{our_lin}.{kind}" in sd:
                    out[f"{hf}.{hf_lin}.{kind}"] = sd[f"{ours}.{our_lin}.{kind}"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights under ``transformers``' parameter names and layouts (tied output left out)."""
    return _gpt2_state(model) if model.config.arch == "gpt2" else _llama_state(model)


def hf_config(config: ModelConfig, special_ids: dict[str, int], dtype: str) -> dict:
    """``config.json`` for ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` (field names of their configs)."""
    ids = {
        "bos_token_id": special_ids.get("bos_token"),
        "eos_token_id": special_ids.get("eos_token"),
        "pad_token_id": special_ids.get("pad_token"),
    }
    common = {"vocab_size": config.vocab_size, "tie_word_embeddings": bool(config.tie_embeddings),
              "initializer_range": config.init_std, "torch_dtype": dtype, "dtype": dtype, **ids}
    if config.arch == "gpt2":
        return {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "n_positions": config.max_seq_len, "n_ctx": config.max_seq_len, "n_embd": config.d_model,
            "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": config.d_ff,
            "activation_function": "gelu_new",  # tanh-approximate GELU, as our MLP
            "layer_norm_epsilon": config.norm_eps,
            "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, **common,
        }
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": config.d_model, "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head, "head_dim": config.head_dim,
        "hidden_act": "silu", "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        # transformers < 5 reads rope_theta; >= 5 reads rope_parameters (and folds rope_theta into it).
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rope_scaling": None,
        "attention_bias": bool(config.bias), "mlp_bias": bool(config.bias),
        "attention_dropout": config.dropout, "pretraining_tp": 1, **common,
    }


def _tokenizer_files(tokenizer_path: Path, config: ModelConfig) -> tuple[dict[str, dict], dict[str, int]]:
    """``tokenizer_config.json`` / ``special_tokens_map.json`` contents and the special token ids."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer_path} has {tokenizer.get_vocab_size()} tokens but the model's "
            f"vocab_size is {config.vocab_size}"
        )
    present = {role: tok for role, tok in SPECIAL_TOKEN_ROLES.items() if tokenizer.token_to_id(tok) is not None}
    special_ids = {role: tokenizer.token_to_id(tok) for role, tok in present.items()}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config.max_seq_len,
        "clean_up_tokenization_spaces": False,
        **present,
    }
    return {"tokenizer_config.json": tokenizer_config, "special_tokens_map.json": present}, special_ids


def export_hf(
    checkpoint_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a ``transformers`` model directory for the checkpoint at ``checkpoint_dir``.

    The tokenizer is ``tokenizer_path`` or the checkpoint's own (see
    :func:`training.checkpoint.find_tokenizer`). ``out_dir`` must not exist or be empty; files are
    written to a sibling temporary directory that is renamed into place at the end, so an interrupted
    export leaves nothing half-written under ``out_dir``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty directory")
    model, config = load_model(checkpoint_dir)
    tokenizer_path = Path(tokenizer_path) if tokenizer_path is not None else find_tokenizer(checkpoint_dir)
    tokenizer_jsons, special_ids = _tokenizer_files(tokenizer_path, config)

    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = {
        name: tensor.detach().to(DTYPES[dtype]).contiguous().clone()
        for name, tensor in hf_state_dict(model).items()
    }
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    generation_config = {k: v for k, v in {
        "bos_token_id": special_ids.get("bos_token"), "eos_token_id": special_ids.get("eos_token"),
        "pad_token_id": special_ids.get("pad_token"),
    }.items() if v is not None}
    files = {
        "config.json": hf_config(config, special_ids, dtype),
        "generation_config.json": generation_config,
        **tokenizer_jsons,
    }
    for name, content in files.items():
        (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
    shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
    if out_dir.exists():
        out_dir.rmdir()  # empty, checked above
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    return out_dir
