"""Perplexity and bits per byte, on text files and on validation token shards.

* token perplexity = ``exp(Σ NLL / predicted tokens)``: the exponent of the mean next-token
  cross-entropy, the quantity the trainer logs as ``val_loss`` (``training.lightning_module.
  next_token_loss``), so ``val_ppl`` and this agree on the same rows;
* bits per byte = ``Σ NLL / (ln 2 · UTF-8 bytes of the predicted tokens)``: the tokenizer-independent
  figure (Gao et al. 2020, The Pile, sec. 4), comparable across vocabularies. A token's byte count
  comes from the byte-level BPE alphabet (every token is a run of raw bytes), special tokens count
  zero bytes, so the bytes of a text are exactly ``len(text.encode())``.

Text files: each file is one document, encoded literally (as the shards are) and scored in rolling
windows (:func:`eval.loglikelihood.rolling_windows`: lm-eval's ``loglikelihood_rolling`` windows by
default, a sliding window with ``stride``); the first token is predicted from the document boundary.

Shards (``<run>/shards/val-*.parquet``, contract ``gristmill-shards/1``): every row is ``seq_len + 1``
tokens, positions ``0..seq_len-1`` predict ``1..seq_len`` exactly as in training, with attention
blocked across the packed documents of a row (``doc_starts``) unless asked otherwise, as the trainer
does by default. Rows are read batch by batch from the Parquet files (never all at once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from eval.checkpoints import EvalModel
from eval.loglikelihood import rolling_windows, score_requests


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte → visible-character table used by the ByteLevel pre-tokenizer:
    printable Latin-1 bytes stand for themselves, the other 68 bytes are shifted to U+0100 onwards
    in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in keep}
    shifted = 0
    for b in range(256):
        if b not in table.values():
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def token_byte_lengths(tokenizer) -> np.ndarray:
    """Bytes each token id stands for (int64, indexed by id); 0 for special tokens."""
    decoder = _byte_level_decoder()
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    lengths = np.zeros(size, dtype=np.int64)
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    for token, index in tokenizer.get_vocab(with_added_tokens=True).items():
        if token in special:
            continue
        if not all(ch in decoder for ch in token):
            raise ValueError(f"token {token!r} is not byte-level BPE; bits per byte needs a ByteLevel tokenizer")
        lengths[index] = len(token)  # one visible character per byte
    return lengths


def _metrics(nll: float, tokens: int, nbytes: int) -> dict[str, float]:
    return {"perplexity": math.exp(nll / tokens) if tokens else float("nan"),
            "nll_per_token": nll / tokens if tokens else float("nan"),
            "bits_per_byte": nll / (math.log(2) * nbytes) if nbytes else float("nan")}


def text_perplexity(em: EvalModel, texts: Sequence[str], batch_size: int = 16, stride: int | None = None) -> dict[str, Any]:
    """Perplexity and bits per byte of documents given as strings."""
    started = time.perf_counter()
    byte_lengths = token_byte_lengths(em.tokenizer)
    requests, tokens, nbytes = [], 0, 0
    for encoding in em.tokenizer.encode_batch(list(texts), add_special_tokens=False):
        ids = encoding.ids
        requests += rolling_windows(ids, em.boundary_id, em.config.max_seq_len, stride)
        tokens += len(ids)
        nbytes += int(byte_lengths[np.asarray(ids, dtype=np.int64)].sum()) if ids else 0
    scores = score_requests(em, requests, batch_size)
    nll = -sum(s.logprob for s in scores)
    return {"kind": "perplexity", "metrics": _metrics(nll, tokens, nbytes), "documents": len(texts),
            "tokens": tokens, "bytes": nbytes, "windows": len(requests),
            "seconds": round(time.perf_counter() - started, 3)}


def file_perplexity(em: EvalModel, files: Sequence[str], batch_size: int = 16, stride: int | None = None) -> dict[str, Any]:
    texts = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"perplexity text file {name} not found")
        texts.append(path.read_text(encoding="utf-8"))
    result = text_perplexity(em, texts, batch_size, stride)
    result["files"] = [str(f) for f in files]
    return result


@torch.inference_mode()
def shard_perplexity(em: EvalModel, location: str, batch_size: int = 16, max_rows: int | None = None,
                     block_documents: bool = True, split: str = "val") -> dict[str, Any]:
    """Perplexity and bits per byte over a run's validation shards (or ``split``)."""
    from training.shards import open_shards, to_model_inputs

    started = time.perf_counter()
    shards = open_shards(location)
    files = shards.val if split == "val" else shards.train
    if not files:
        raise FileNotFoundError(f"{location}: the shards have no {split} files")
    if shards.seq_len > em.config.max_seq_len:
        raise ValueError(f"the shards' rows hold {shards.seq_len} inputs, more than the model's context "
                         f"of {em.config.max_seq_len}")
    byte_lengths = torch.from_numpy(token_byte_lengths(em.tokenizer))
    columns = ["input_ids", "doc_starts"] if block_documents else ["input_ids"]
    nll, tokens, nbytes, rows = 0.0, 0, 0, 0
    model = em.model
    was_training = model.training
    model.eval()
    try:
        for shard in files:
            with shards.fs.open_input_file(shard.path) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_size, columns=columns):
                    if max_rows is not None and rows >= max_rows:
                        break
                    if max_rows is not None:
                        batch = batch.slice(0, max_rows - rows)
                    inputs = to_model_inputs(pa.Table.from_batches([batch]), block_documents)
                    ids = torch.from_numpy(inputs["input_ids"])
                    segments = torch.from_numpy(inputs["segment_ids"]).long()[:, :-1] if block_documents else None
                    logits = model(ids[:, :-1].to(em.device), segment_ids=None if segments is None else segments.to(em.device))
                    targets = ids[:, 1:]
                    nll += float(F.cross_entropy(logits.float().reshape(-1, logits.size(-1)).cpu(),
                                                 targets.reshape(-1), reduction="sum"))
                    tokens += targets.numel()
                    nbytes += int(byte_lengths[targets].sum())
                    rows += len(ids)
    finally:
        model.train(was_training)
    return {"kind": "perplexity", "metrics": _metrics(nll, tokens, nbytes), "rows": rows, "tokens": tokens,
            "bytes": nbytes, "split": split, "block_cross_document_attention": block_documents,
            "seconds": round(time.perf_counter() - started, 3)}
