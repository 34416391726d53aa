"""Finding and loading what an evaluation scores: a checkpoint directory (or a run directory whose
newest checkpoint is meant) and the tokenizer that belongs to it.

A checkpoint directory holds ``model.safetensors`` + ``model_config.json`` (training/checkpoint.py);
its tokenizer is ``tokenizer.json`` beside them or the run's ``tokenizer/tokenizer.json``
(:func:`training.checkpoint.find_tokenizer`). A run directory means its newest
``checkpoints/step-NNNNNN/``, the same choice litgpt / torchtitan make for "the latest checkpoint".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from curation.tokenize.train import EOS, for_documents, load_tokenizer
from training.checkpoint import CONFIG_FILE, WEIGHTS_FILE, find_tokenizer, load_model, read_model_config
from training.model import ModelConfig, Transformer


def resolve_checkpoint(location: str | os.PathLike) -> Path:
    """A checkpoint directory as given, or a run directory's newest ``checkpoints/step-*``. A
    ``transformers`` GPT-2 / Llama directory (``gristmill export``) is a checkpoint too:
    :func:`training.checkpoint.load_model` reads it through :mod:`training.hf_import`."""
    from training.hf_import import is_hf_export
    from training.remote import localize

    path = Path(localize(location))  # a URI (s3://…): the local copy of the checkpoint it means
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return path
    if is_hf_export(path):
        return path
    steps = sorted(p for p in (path / "checkpoints").glob("step-*")
                   if (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file())
    if steps:
        return steps[-1]
    raise FileNotFoundError(f"{location} is neither a model checkpoint (holding {WEIGHTS_FILE} and {CONFIG_FILE}), "
                            "a transformers export (config.json + model.safetensors) "
                            "nor a run directory with checkpoints/step-*/")


@dataclass
class EvalModel:
    """A model ready to score: eval mode, its tokenizer (encoding text literally, as the shards
    were encoded) and the id of the token every document follows in training (EOS)."""

    model: Transformer
    tokenizer: Tokenizer
    config: ModelConfig
    path: str
    step: int | None = None

    @property
    def boundary_id(self) -> int:
        """Packed training rows put EOS after every document, so the token a document's first token
        is predicted from is EOS: requests start with it (it plays the part of lm-eval's
        ``prefix_token_id``)."""
        token = self.tokenizer.token_to_id(EOS)
        if token is None:
            raise ValueError(f"the tokenizer of {self.path} has no {EOS} token")
        return token

    @property
    def device(self) -> torch.device:
        return self.model.tok_emb.weight.device


def load_eval_model(location: str | os.PathLike, device: str = "cpu") -> EvalModel:
    checkpoint = resolve_checkpoint(location)
    model, config = load_model(checkpoint, device=device)
    _, extra = read_model_config(checkpoint)
    tokenizer = for_documents(load_tokenizer(str(find_tokenizer(checkpoint))))
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(f"{checkpoint}: the tokenizer has {tokenizer.get_vocab_size()} tokens but the model "
                         f"only {config.vocab_size}; they do not belong together")
    step = extra.get("step")
    return EvalModel(model, tokenizer, config, str(checkpoint), int(step) if step is not None else None)
