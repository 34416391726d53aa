"""Rendered conversations → fixed-width training rows with a loss mask.

Input: rendered text plus the assistant's ``[start, end)`` character spans (:mod:`curation.chat`).
A token is the assistant's when its first character lies in a span (the tokenizer's offsets map
tokens to characters), so the mask follows the template exactly, whatever the tokenizer merges.

Rows follow the token-shard contract (``input_ids`` of ``seq_len + 1`` tokens, ``doc_starts``) and
add ``loss_mask`` (int8, 1 where the token at that position is a training target):

* **SFT**: conversations, each followed by EOS, packed greedily into rows (several per row, as
  the shards pack documents); ``doc_starts`` marks each conversation and the padding tail, so
  attention is blocked across them exactly as across pretraining documents. Without packing, one
  conversation per row, right-padded.
* **Preference** (reward, DPO): one pair per row: ``input_ids``/``loss_mask`` hold prompt + chosen,
  ``rejected_ids``/``rejected_loss_mask`` prompt + rejected, each right-padded with at most
  ``seq_len`` real tokens, so a forward over the first ``seq_len`` positions sees every real token.

Everything here works on whole batches (NumPy over Arrow buffers) except the tokenizer call itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

LOSS_MASK = "loss_mask"
REJECTED_IDS = "rejected_ids"
REJECTED_MASK = "rejected_loss_mask"
SFT_COLUMNS = ("loss_mask",)
PREFERENCE_COLUMNS = ("loss_mask", "rejected_ids", "rejected_loss_mask")


@dataclass(frozen=True)
class Tokenized:
    """Token ids and assistant masks of a batch of texts, as flat arrays plus row offsets."""

    ids: np.ndarray  # int32, all rows concatenated
    mask: np.ndarray  # int8, 1 = assistant token
    offsets: np.ndarray  # int64, len rows + 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.ids[lo:hi], self.mask[lo:hi]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def tokenize_with_mask(tokenizer, texts: list[str], spans: list[list[tuple[int, int]]],
                       append_id: int | None = None) -> Tokenized:
    """Encode ``texts`` (special tokens in the text are recognised, none are added) and mark the
    tokens whose first character falls in one of the row's spans. ``append_id`` (EOS) is added after
    every row, unmasked."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    ids = np.fromiter((t for e in encodings for t in e.ids), dtype=np.int32, count=int(lengths.sum()))
    starts = np.fromiter((o[0] for e in encodings for o in e.offsets), dtype=np.int64, count=int(lengths.sum()))
    token_row = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    span_row = np.repeat(np.arange(len(texts), dtype=np.int64), [len(s) for s in spans])
    flat = np.asarray([p for s in spans for p in s], dtype=np.int64).reshape(-1, 2)
    # One sorted key space over all rows: key = row * stride + character offset.
    stride = int(max([len(t) for t in texts], default=0)) + 1
    token_key = token_row * stride + starts
    mask = np.zeros(len(ids), dtype=np.int8)
    if len(flat):
        span_start = span_row * stride + flat[:, 0]
        span_end = span_row * stride + flat[:, 1]
        k = np.searchsorted(span_start, token_key, side="right") - 1
        valid = k >= 0
        kk = np.where(valid, k, 0)
        mask = (valid & (token_key < span_end[kk]) & (span_row[kk] == token_row)).astype(np.int8)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if append_id is not None:  # one extra unmasked token per row
        insert_at = offsets[1:]
        ids = np.insert(ids, insert_at, append_id).astype(np.int32)
        mask = np.insert(mask, insert_at, 0).astype(np.int8)
        offsets = offsets + np.arange(len(offsets))
    return Tokenized(ids, mask, offsets)


def pack_rows(tok: Tokenized, width: int, pad_id: int, packing: bool) -> tuple[pa.Table, int]:
    """SFT rows of ``width`` tokens; returns the table and how many sequences were truncated.

    Greedy packing in order (a conversation goes into the current row if it fits, else starts the
    next one); a conversation longer than a row is cut to ``width`` tokens (its tail is lost, and
    counted), as TRL truncates to ``max_length``.
    """
    lengths = tok.lengths
    truncated = int((lengths > width).sum())
    clipped = np.minimum(lengths, width)
    # Assign rows: a Python loop over sequences, but only over their lengths (cheap integers).
    row_of = np.empty(len(lengths), dtype=np.int64)
    pos_of = np.empty(len(lengths), dtype=np.int64)
    row, used = -1, width
    for i, n in enumerate(clipped.tolist()):
        if not packing or used + n > width:
            row, used = row + 1, 0
        row_of[i], pos_of[i] = row, used
        used += n
    rows = row + 1
    ids = np.full((rows, width), pad_id, dtype=np.int32)
    mask = np.zeros((rows, width), dtype=np.int8)
    # Scatter every kept token to (row, position) in one vectorised step.
    seq = np.repeat(np.arange(len(lengths)), clipped)
    within = np.arange(int(clipped.sum())) - np.repeat(np.cumsum(clipped) - clipped, clipped)
    source = tok.offsets[:-1][seq] + within
    ids[row_of[seq], pos_of[seq] + within] = tok.ids[source]
    mask[row_of[seq], pos_of[seq] + within] = tok.mask[source]
    # doc_starts: each sequence's start, and where the padding tail begins (its own segment).
    used_per_row = np.bincount(row_of, weights=clipped, minlength=rows).astype(np.int64)
    starts = [[] for _ in range(rows)]
    for r, p in zip(row_of.tolist(), pos_of.tolist()):
        starts[r].append(p)
    for r in np.nonzero(used_per_row < width)[0].tolist():
        starts[r].append(int(used_per_row[r]))
    table = pa.table({
        "input_ids": _fixed_lists(ids, pa.int32()),
        "doc_starts": pa.array(starts, pa.list_(pa.int32())),
        LOSS_MASK: _fixed_lists(mask, pa.int8()),
    })
    return table, truncated


def preference_rows(chosen: Tokenized, rejected: Tokenized, width: int, pad_id: int) -> tuple[pa.Table, np.ndarray]:
    """One row per pair (see the module docstring). Returns the table of usable pairs and a boolean
    array of which input pairs were usable (a pair whose response does not survive truncation to
    ``width - 1`` tokens is not)."""
    limit = width - 1
    arrays = []
    ok = np.ones(len(chosen.lengths), dtype=bool)
    for tok in (chosen, rejected):
        n = np.minimum(tok.lengths, limit)
        ids = np.full((len(n), width), pad_id, dtype=np.int32)
        mask = np.zeros((len(n), width), dtype=np.int8)
        seq = np.repeat(np.arange(len(n)), n)
        within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        source = tok.offsets[:-1][seq] + within
        ids[seq, within] = tok.ids[source]
        mask[seq, within] = tok.mask[source]
        ok &= mask.any(axis=1)
        arrays.append((ids, mask))
    (cids, cmask), (rids, rmask) = arrays
    keep = np.nonzero(ok)[0]
    table = pa.table({
        "input_ids": _fixed_lists(cids[keep], pa.int32()),
        "doc_starts": pa.array([[0]] * len(keep), pa.list_(pa.int32())),
        LOSS_MASK: _fixed_lists(cmask[keep], pa.int8()),
        REJECTED_IDS: _fixed_lists(rids[keep], pa.int32()),
        REJECTED_MASK: _fixed_lists(rmask[keep], pa.int8()),
    })
    return table, ok


def _fixed_lists(matrix: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """A [rows, width] matrix as a list<dtype> column without a per-row Python loop."""
    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), dtype))
