"""Log-likelihood of a continuation given a context, batched: the one scoring primitive that multiple
choice, cloze, perplexity and the lm-eval adapter all share.

Tokenisation at the context/continuation boundary (the choice lm-eval documents for its HF model,
``HFLM._encode_pair``, refined):

* Trailing whitespace of the context moves to the start of the continuation (``"Answer: " + "Paris"``
  is scored as ``"Answer:" + " Paris"``), because a GPT-2 style byte-level BPE attaches a space to the
  word after it; splitting before the space would score a token sequence the model never saw.
* The pair is encoded **whole** and split afterwards, not encoded separately: encoding separately can
  tokenise the junction differently from how the same text was tokenised in training. The split uses
  the tokens' character offsets: tokens that end inside the context are context, every other token is
  continuation. A token that straddles the boundary therefore counts as continuation, so the
  continuation's text is always scored in full (lm-eval instead splits at ``len(encode(context))``,
  which agrees with this whenever no token straddles, the usual case when continuations start with a
  space).
* Every request starts with the document-boundary token (EOS, :attr:`EvalModel.boundary_id`): packed
  training rows put EOS after every document, so that is what a document's first token follows.
  lm-eval adds its ``prefix_token_id`` only to empty contexts; with this model family the boundary is
  always part of the training distribution, so we always add it.

Batching (right-aligned, left-padded): requests are sorted longest first (as lm-eval does, so a batch
that does not fit fails on the first batch), each batch is left-padded to its longest row so every
continuation ends in the last column. Padding gets segment id 0 and real tokens segment 1, and
positions restart at 0 on each row's first real token, so the model's segment mask makes a padded row
score exactly as it would alone (``tests/test_eval_loglikelihood.py`` checks batched == unbatched).
Only the last ``max continuation`` columns go through the output projection and ``log_softmax``.

A request longer than the model's context keeps its last ``max_seq_len + 1`` tokens (the context is
cut on the left, as lm-eval does). A continuation longer than ``max_seq_len`` itself (a 1,000-character
PIQA answer for a 256-token model) then loses its first tokens too: only its last ``max_seq_len``
tokens are scored. Either way the request is marked ``truncated`` and each task reports how many were,
rather than failing a whole evaluation on a few long items.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from eval.checkpoints import EvalModel


@dataclass(frozen=True)
class TokenRequest:
    """Score ``continuation`` (token ids) after ``context`` (token ids, never empty)."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass(frozen=True)
class Score:
    logprob: float  # sum of log p(continuation token | everything before it), natural log
    greedy: bool  # every continuation token is the argmax at its position
    tokens: int  # continuation tokens scored
    truncated: bool = False  # cut on the left to fit the model (the context, or the continuation too)


def encode_pairs(em: EvalModel, pairs: Sequence[tuple[str, str]]) -> list[TokenRequest]:
    """Text (context, continuation) pairs → token requests (see the module docstring for the rules)."""
    contexts, wholes = [], []
    for context, continuation in pairs:
        trailing = len(context) - len(context.rstrip())
        if trailing:
            context, continuation = context[:-trailing], context[-trailing:] + continuation
        if not continuation:
            raise ValueError(f"empty continuation after context {context[-40:]!r}")
        contexts.append(context)
        wholes.append(context + continuation)
    encodings = em.tokenizer.encode_batch(wholes, add_special_tokens=False)
    prefix = (em.boundary_id,)
    out = []
    for context, encoding in zip(contexts, encodings):
        cut = len(context)
        n_context = sum(1 for _, end in encoding.offsets if end <= cut)
        ids = encoding.ids
        out.append(TokenRequest(prefix + tuple(ids[:n_context]), tuple(ids[n_context:])))
    return out


def rolling_windows(tokens: Sequence[int], prefix: int, max_len: int, stride: int | None = None) -> list[TokenRequest]:
    """Every token of ``tokens`` predicted exactly once, in windows of at most ``max_len`` inputs.

    Windows of ``stride`` predicted tokens (default ``max_len``), each with as much preceding text as
    still fits as context. ``stride == max_len`` gives lm-eval's ``loglikelihood_rolling`` windows
    (``get_rolling_token_windows(context_len=1)`` + ``make_disjoint_window``) exactly; a smaller
    stride gives the sliding-window perplexity of the HF "perplexity of fixed-length models" guide
    (more context per token, more compute).
    """
    stride = max_len if stride is None else stride
    if not 1 <= stride <= max_len:
        raise ValueError(f"stride must be in [1, {max_len}], got {stride}")
    full = [prefix, *tokens]  # full[j] is the input that predicts tokens[j]
    out = []
    for start in range(0, len(tokens), stride):
        end = min(start + stride, len(tokens))
        out.append(TokenRequest(tuple(full[max(0, end - max_len):start + 1]), tuple(tokens[start:end])))
    return out


@contextmanager
def _hidden_states(model):
    """Within the block, ``model(...)`` returns the final hidden states instead of logits, and the
    output projection is handed out to apply to the positions that are scored only.

    The output projection is the largest matmul of a small model (vocab × d per position: for the
    ``tiny`` preset more than all four blocks together) and a multiple-choice request scores a few
    tokens at the end of a long prompt, so projecting only the scored tail saves most of that matmul
    (a third of the CPU time on ARC-Easy with ``tiny``: benchmarks/eval_throughput.py).
    ``Transformer.forward`` ends with ``self.lm_head(self.final_norm(x))``; swapping ``lm_head`` for an
    identity for one call gets ``final_norm(x)`` without re-implementing the forward pass here (a
    tied projection stays tied: the same module object is put back).
    """
    head = model.lm_head
    model.lm_head = torch.nn.Identity()
    try:
        yield head
    finally:
        model.lm_head = head


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(order), size):
        yield order[i:i + size]


@torch.inference_mode()
def score_requests(em: EvalModel, requests: Sequence[TokenRequest], batch_size: int = 16) -> list[Score]:
    """Score token requests in left-padded batches of ``batch_size`` rows; results in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_len = em.config.max_seq_len
    sequences, n_cont, truncated = [], [], []
    for i, req in enumerate(requests):
        if not req.context or not req.continuation:
            raise ValueError(f"request {i}: context and continuation must both hold tokens")
        seq = req.context + req.continuation
        truncated.append(len(seq) > max_len + 1)
        sequences.append(seq[-(max_len + 1):])
        n_cont.append(min(len(req.continuation), max_len))
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    results: list[Score | None] = [None] * len(sequences)
    model, device = em.model, em.device
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(order, batch_size):
            width = max(len(sequences[i]) - 1 for i in batch)
            tail = max(n_cont[i] for i in batch)
            rows = len(batch)
            ids = torch.zeros(rows, width, dtype=torch.long)
            real = torch.zeros(rows, width, dtype=torch.bool)
            targets = torch.zeros(rows, tail, dtype=torch.long)
            scored = torch.zeros(rows, tail, dtype=torch.bool)
            for r, i in enumerate(batch):
                inputs, cont = sequences[i][:-1], sequences[i][-n_cont[i]:]
                ids[r, width - len(inputs):] = torch.tensor(inputs)
                real[r, width - len(inputs):] = True
                targets[r, tail - len(cont):] = torch.tensor(cont)
                scored[r, tail - len(cont):] = True
            padded = not bool(real.all())
            segments = real.long()
            positions = (segments.cumsum(dim=1) - 1).clamp(min=0)
            with _hidden_states(model) as head:
                hidden = model(ids.to(device), segment_ids=segments.to(device) if padded else None,
                               position_ids=positions.to(device))
                logits = head(hidden[:, -tail:, :])
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            sums = torch.where(scored, token_lp, 0.0).sum(dim=1)
            greedy = ((logprobs.argmax(dim=-1) == targets) | ~scored).all(dim=1)
            for r, i in enumerate(batch):
                results[i] = Score(float(sums[r]), bool(greedy[r]), n_cont[i], truncated[i])
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def score_pairs(em: EvalModel, pairs: Sequence[tuple[str, str]], batch_size: int = 16) -> list[Score]:
    """Text pairs → scores (encode with :func:`encode_pairs`, then :func:`score_requests`)."""
    return score_requests(em, encode_pairs(em, pairs), batch_size)
