"""Small real artefacts for model / generation / export tests: a byte-level BPE trained with HF
tokenizers on shipped text, tiny model configs, and weights with a spread large enough that a wrong
weight mapping shows up in the logits."""

from __future__ import annotations

from pathlib import Path

import torch

from training.model import ModelConfig, Transformer

REPO = Path(__file__).resolve().parent.parent
SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def train_tokenizer(vocab_size: int = 320, max_chars: int = 20_000):
    """A byte-level BPE (GPT-2 style) with the shards contract's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = (REPO / "data" / "text" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:max_chars]
    docs = [d.strip() for d in text.split("\n\n") if d.strip()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def tiny_config(arch: str, **overrides) -> ModelConfig:
    fields = dict(arch=arch, vocab_size=320, max_seq_len=64, n_layer=2, n_head=4, d_model=64)
    return ModelConfig(**{**fields, **overrides})


def spread_weights(model: Transformer, seed: int = 0) -> Transformer:
    """Re-draw every parameter with std 0.2 (norm scales around 1) so logits are O(1), not ~0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            p.copy_(1.0 + noise if "norm" in name and name.endswith("weight") else noise)
    return model
