"""Small real artefacts for fine-tuning tests: a base checkpoint (tiny Llama, seeded) with the shared
byte-level BPE, and tensors of SFT / preference rows built by the real rendering and masking code
from the shipped derived pairs (data/instruct/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from curation.chat import conversation_of, preference_of, render
from tests.tiny_lm import REPO, tiny_config, train_tokenizer
from training.checkpoint import save_model
from training.finetune.data import pack_rows, preference_rows, tokenize_with_mask
from training.model import Transformer

INSTRUCT = REPO / "data" / "instruct"
SFT_TRAIN = INSTRUCT / "sft-arc_easy-piqa.train.jsonl"
PREF_TRAIN = INSTRUCT / "pref-arc_easy-piqa.train.jsonl"
PREF_HELDOUT = INSTRUCT / "pref-arc_easy-piqa.heldout.jsonl"


def records(path: Path, n: int) -> list[dict]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) == n:
                break
    return out


def make_base(folder: Path, max_seq_len: int = 128, seed: int = 0):
    """Write a checkpoint directory (model.safetensors, model_config.json, tokenizer.json).

    The output projection is scaled ×10 so logits are O(1) as in a trained model: at init (std
    0.02) they are ≈ 0 whatever the residual stream holds, and an adapter on the blocks (LoRA) could
    barely move them, which is a property of untrained models, not of LoRA."""
    tok = train_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config("llama", max_seq_len=max_seq_len)
    model = Transformer(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    save_model(folder, model, config)
    tok.save(str(folder / "tokenizer.json"))
    return tok, config


def sft_rows(tok, recs: list[dict], width: int, packing: bool = True) -> dict[str, torch.Tensor]:
    rendered = [render(conversation_of(r)) for r in recs]
    tokenized = tokenize_with_mask(tok, [t for t, _ in rendered], [s for _, s in rendered],
                                   append_id=tok.token_to_id("<|eos|>"))
    table, _ = pack_rows(tokenized, width, tok.token_to_id("<|pad|>"), packing)
    from training.shards import to_model_inputs

    arrays = to_model_inputs(table, True, ("loss_mask",))
    return {k: torch.from_numpy(v).long() for k, v in arrays.items()}


def preference_tensors(tok, recs: list[dict], width: int) -> dict[str, torch.Tensor]:
    pairs = [preference_of(r) for r in recs]
    chosen = [render(p[0]) for p in pairs]
    rejected = [render(p[1]) for p in pairs]
    c = tokenize_with_mask(tok, [t for t, _ in chosen], [s for _, s in chosen])
    r = tokenize_with_mask(tok, [t for t, _ in rejected], [s for _, s in rejected])
    table, _ = preference_rows(c, r, width, tok.token_to_id("<|pad|>"))
    return {k: torch.from_numpy(np.stack(table.column(k).to_numpy(zero_copy_only=False)).astype(np.int64))
            for k in ("input_ids", "loss_mask", "rejected_ids", "rejected_loss_mask")}
