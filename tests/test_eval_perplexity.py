"""Perplexity and bits per byte on val shards and on text files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval.checkpoints import load_eval_model
from eval.perplexity import file_perplexity, shard_perplexity, text_perplexity, token_byte_lengths
from eval_support import cached_checkpoint, shakespeare, single_thread, write_shards
from training.lightning_module import next_token_loss
from training.shards import to_model_inputs


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def em():
    return load_eval_model(cached_checkpoint("llama"))


@pytest.mark.parametrize("block_documents", [True, False])
def test_shard_perplexity_is_exp_of_the_training_loss(tmp_path, em, block_documents):
    table = write_shards(tmp_path, em)
    result = shard_perplexity(em, str(tmp_path), batch_size=4, block_documents=block_documents)
    # The trainer's loss on the same rows, computed directly in one batch.
    inputs = to_model_inputs(table, block_documents=True)
    ids = torch.from_numpy(inputs["input_ids"])
    segments = torch.from_numpy(inputs["segment_ids"]).long()[:, :-1] if block_documents else None
    with torch.no_grad():
        loss = next_token_loss(em.model(ids[:, :-1], segment_ids=segments), ids)
    assert result["rows"] == 10 and result["tokens"] == 10 * 32
    assert result["metrics"]["perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert result["metrics"]["nll_per_token"] == pytest.approx(float(loss), rel=1e-5)
    # bits per byte: the same NLL over the UTF-8 bytes of the predicted text (EOS has no bytes).
    nbytes = sum(len(em.tokenizer.decode(row[1:].tolist()).encode()) for row in ids)
    assert result["bytes"] == nbytes
    assert result["metrics"]["bits_per_byte"] == pytest.approx(float(loss) * 320 / (math.log(2) * nbytes), rel=1e-5)
    assert shard_perplexity(em, str(tmp_path / "shards"), batch_size=3, max_rows=5)["rows"] == 5


def test_blocking_documents_changes_the_score(tmp_path, em):
    write_shards(tmp_path, em)
    blocked = shard_perplexity(em, str(tmp_path), batch_size=8)["metrics"]["perplexity"]
    open_ = shard_perplexity(em, str(tmp_path), batch_size=8, block_documents=False)["metrics"]["perplexity"]
    assert blocked != pytest.approx(open_, rel=1e-6)


def test_token_bytes_are_the_text_bytes(em):
    lengths = token_byte_lengths(em.tokenizer)
    for text in ["To be, or not to be", "naïve café — ünïcödé ✓ 日本語", "\n\n  tabs\tand spaces "]:
        ids = em.tokenizer.encode(text, add_special_tokens=False).ids
        assert int(lengths[np.array(ids)].sum()) == len(text.encode())
    assert lengths[em.boundary_id] == 0


def test_text_perplexity_matches_a_direct_forward(tmp_path, em):
    short = "Before we proceed any further, hear me speak."
    ids = em.tokenizer.encode(short, add_special_tokens=False).ids
    with torch.no_grad():
        seq = torch.tensor([[em.boundary_id] + ids])
        logprobs = torch.log_softmax(em.model(seq[:, :-1]), dim=-1)[0]
        nll = -float(logprobs.gather(-1, seq[0, 1:].unsqueeze(-1)).sum())
    result = text_perplexity(em, [short])
    assert result["tokens"] == len(ids) and result["bytes"] == len(short.encode())
    assert result["metrics"]["perplexity"] == pytest.approx(math.exp(nll / len(ids)), rel=1e-5)
    assert result["metrics"]["bits_per_byte"] == pytest.approx(nll / math.log(2) / len(short.encode()), rel=1e-5)
    # A file longer than the context: rolling windows; batch size does not change the figure.
    path = tmp_path / "long.txt"
    path.write_text(shakespeare(3000))
    a, b = file_perplexity(em, [str(path)], batch_size=1), file_perplexity(em, [str(path)], batch_size=8)
    assert a["windows"] > 1 and a["metrics"]["perplexity"] == pytest.approx(b["metrics"]["perplexity"], rel=1e-5)
    # A sliding window gives each token more context: a trained model is no more surprised.
    sliding = file_perplexity(em, [str(path)], batch_size=8, stride=32)
    assert sliding["tokens"] == a["tokens"] and sliding["metrics"]["perplexity"] < a["metrics"]["perplexity"]
