"""Log-likelihood scoring: a hand-computed case, the boundary tokenisation, batched == unbatched,
rolling windows, and agreement with a plain unbatched forward pass."""

from __future__ import annotations

import math

import pytest
import torch

from curation.tokenize.train import for_documents
from eval.checkpoints import EvalModel, load_eval_model
from eval.loglikelihood import TokenRequest, encode_pairs, rolling_windows, score_pairs, score_requests
from eval_support import cached_checkpoint, controlled_model, single_thread, tiny_tokenizer


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def tokenizer():
    return for_documents(tiny_tokenizer())


def _eval_model(model, tokenizer) -> EvalModel:
    return EvalModel(model, tokenizer, model.config, "<memory>")


def test_hand_computed_loglikelihood(tokenizer):
    vocab = tokenizer.get_vocab_size()
    logits = torch.zeros(vocab)
    logits[:5] = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5])  # special tokens 0..4 get most of the mass
    em = _eval_model(controlled_model(vocab, logits), tokenizer)
    # p(token) = exp(logit) / Z with Z = e^4 + e^3 + e^2 + e^1 + e^0.5 + (vocab - 5) · e^0
    z = math.exp(4) + math.exp(3) + math.exp(2) + math.exp(1) + math.exp(0.5) + (vocab - 5)
    context, continuation = tokenizer.encode("To be", add_special_tokens=False).ids, [0, 0, 9]
    score, = score_requests(em, [TokenRequest(tuple(context), tuple(continuation))])
    assert score.logprob == pytest.approx(2 * (4 - math.log(z)) + (0 - math.log(z)), abs=1e-5)
    assert score.tokens == 3 and not score.greedy  # token 9 is not the argmax (token 0 is)
    greedy, = score_requests(em, [TokenRequest(tuple(context), (0, 0))])
    assert greedy.greedy and greedy.logprob == pytest.approx(2 * (4 - math.log(z)), abs=1e-5)


def test_boundary_tokenisation(tokenizer):
    em = _eval_model(controlled_model(tokenizer.get_vocab_size()), tokenizer)
    eos = em.boundary_id
    # Trailing whitespace moves to the continuation; the pair is encoded whole and split.
    moved, plain = encode_pairs(em, [("Answer: ", "Paris"), ("Answer:", " Paris")])
    assert moved == plain
    whole = tokenizer.encode("Answer: Paris", add_special_tokens=False).ids
    assert list(plain.context) == [eos] + whole[: len(plain.context) - 1]
    assert list(plain.context[1:] + plain.continuation) == whole
    assert tokenizer.decode(list(plain.continuation)) == " Paris"
    # An empty context is just the document boundary.
    empty, = encode_pairs(em, [("", "Hello")])
    assert empty.context == (eos,) and list(empty.continuation) == tokenizer.encode("Hello", add_special_tokens=False).ids
    # A token straddling the junction belongs to the continuation: its text is scored in full.
    for context, continuation in [("wh", "ereof"), ("Citiz", "en"), ("a", "b")]:
        req, = encode_pairs(em, [(context, continuation)])
        decoded = tokenizer.decode(list(req.continuation))
        assert decoded.endswith(continuation) and (context + continuation).endswith(decoded)
    with pytest.raises(ValueError, match="empty continuation"):
        encode_pairs(em, [("abc", "")])


def _reference_logprob(model, request: TokenRequest) -> float:
    """Direct, unbatched: one forward over the whole sequence, gather the continuation's log-probs."""
    seq = torch.tensor([request.context + request.continuation])
    logprobs = torch.log_softmax(model(seq[:, :-1]).float(), dim=-1)[0]
    n = len(request.continuation)
    targets = seq[0, -n:]
    return float(logprobs[-n:].gather(-1, targets.unsqueeze(-1)).sum())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_equals_unbatched_and_reference(arch):
    em = load_eval_model(cached_checkpoint(arch))
    pairs = [("First Citizen:\nBefore we proceed any further, hear me", " speak."),
             ("All:", " Speak, speak."), ("", "You are all resolved rather to die than to famish?"),
             ("Resolved.", " resolved."), ("We are accounted poor citizens, the patricians good.", " What"),
             ("x", "y z")]
    one_by_one = [score_pairs(em, [p], batch_size=1)[0] for p in pairs]
    for batch_size in (2, 3, 16):
        batched = score_pairs(em, pairs, batch_size=batch_size)
        for a, b in zip(batched, one_by_one):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert a.greedy == b.greedy and a.tokens == b.tokens
    with torch.inference_mode():
        for request, score in zip(encode_pairs(em, pairs), one_by_one):
            assert score.logprob == pytest.approx(_reference_logprob(em.model, request), abs=1e-4)


def test_long_context_is_cut_on_the_left():
    em = load_eval_model(cached_checkpoint("llama"))
    max_len = em.config.max_seq_len
    long_context = tuple(range(10, 10 + max_len + 40))
    request = TokenRequest(long_context, (11, 12, 13))
    score, = score_requests(em, [request])
    assert score.truncated
    kept = TokenRequest((long_context + (11, 12, 13))[-(max_len + 1):-3], (11, 12, 13))
    assert not score_requests(em, [kept])[0].truncated
    assert score.logprob == pytest.approx(score_requests(em, [kept])[0].logprob, abs=1e-5)
    # A continuation longer than the context: its last max_len tokens are scored, after its first one.
    long_cont = tuple(range(20, 20 + max_len + 5))
    cut, = score_requests(em, [TokenRequest((1,), long_cont)])
    tail = TokenRequest(long_cont[4:5], long_cont[5:])
    assert cut.truncated and cut.tokens == max_len
    assert cut.logprob == pytest.approx(score_requests(em, [tail])[0].logprob, abs=1e-5)


def test_rolling_windows_cover_every_token_once():
    tokens = list(range(100, 125))
    windows = rolling_windows(tokens, prefix=1, max_len=8)
    assert [t for w in windows for t in w.continuation] == tokens
    assert windows[0].context == (1,)
    assert all(len(w.context) + len(w.continuation) <= 9 for w in windows)
    # lm-eval's windows (get_rolling_token_windows(context_len=1) + make_disjoint_window), by hand:
    assert windows[1].context == (107,) and windows[1].continuation == tuple(range(108, 116))
    assert windows[-1].continuation == (124,) and windows[-1].context == tuple(range(116, 124))
    sliding = rolling_windows(tokens, prefix=1, max_len=8, stride=2)
    assert [t for w in sliding for t in w.continuation] == tokens
    assert all(len(w.context) + len(w.continuation) == 9 for w in sliding[4:])
