"""training.generate and `gristmill generate`: KV cache vs recompute, batching, sampling, stops."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_gristmill
from tests.tiny_lm import spread_weights, tiny_config
from training.checkpoint import save_model
from training.generate import SamplingParams, generate_text, generate_tokens, sample_next_token
from training.model import Transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH_CASES = [
    pytest.param(dict(arch="gpt2"), id="gpt2"),
    pytest.param(dict(arch="llama", n_kv_head=2), id="llama-gqa"),
]
PROMPTS = [[5, 9, 31, 2, 77, 120, 3], [44], [200, 201, 202, 17]]


def _model(**fields) -> Transformer:
    torch.manual_seed(0)
    return spread_weights(Transformer(tiny_config(**fields))).eval()



@pytest.fixture(scope="module")
def tokenizer(shakespeare_bpe):
    return shakespeare_bpe


@pytest.mark.parametrize("fields", ARCH_CASES)
def test_greedy_with_and_without_kv_cache_and_batched_equal_unbatched(fields):
    model = _model(**fields)
    greedy = SamplingParams(max_new_tokens=12, temperature=0)
    cached = generate_tokens(model, PROMPTS, greedy)
    recomputed = generate_tokens(model, PROMPTS, greedy, use_kv_cache=False)
    alone = [generate_tokens(model, [p], greedy)[0] for p in PROMPTS]
    assert [r.tokens for r in cached] == [r.tokens for r in recomputed] == [r.tokens for r in alone]
    assert all(len(r.tokens) == 12 and r.finish_reason == "length" for r in cached)

    # The reference: argmax of a plain forward pass over the growing sequence, one row at a time.
    for prompt, row in zip(PROMPTS, cached):
        seq = list(prompt)
        for _ in range(12):
            with torch.no_grad():
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        assert seq[len(prompt):] == row.tokens


def test_eos_ends_a_row_and_the_context_limit_ends_generation():
    model = _model(arch="llama")
    greedy = SamplingParams(max_new_tokens=10, temperature=0)
    free = generate_tokens(model, PROMPTS, greedy)
    eos = free[0].tokens[3]
    rows = generate_tokens(model, PROMPTS, greedy, eos_id=eos)
    first = free[0].tokens.index(eos)
    assert rows[0].tokens == free[0].tokens[: first + 1] and rows[0].finish_reason == "eos"
    for free_row, row in zip(free[1:], rows[1:]):  # the other rows go on, unaffected
        cut = free_row.tokens.index(eos) + 1 if eos in free_row.tokens else len(free_row.tokens)
        assert row.tokens == free_row.tokens[:cut]

    long_prompt = [[7] * 60]  # max_seq_len is 64
    assert len(generate_tokens(model, long_prompt, greedy)[0].tokens) == 4
    with pytest.raises(ValueError, match="no room"):
        generate_tokens(model, [[7] * 64], greedy)
    with pytest.raises(ValueError, match="at least one token"):
        generate_tokens(model, [[]], greedy)


def test_sampling_top_k_top_p_and_seed():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    gen = torch.Generator().manual_seed(0)

    def draw(temperature=1.0, **kw):
        return sample_next_token(logits, SamplingParams(temperature=temperature, **kw), gen)

    counts = torch.bincount(draw(), minlength=4).float() / 4000
    torch.testing.assert_close(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), rtol=0, atol=0.04)
    assert set(draw(top_k=2).tolist()) == {0, 1}
    # Nucleus 0.8: tokens 0 and 1 already hold 0.8, so 2 and 3 are cut.
    assert set(draw(top_p=0.8).tolist()) == {0, 1}
    assert set(draw(top_p=0.81).tolist()) == {0, 1, 2}
    assert set(draw(top_p=0.1).tolist()) == {0}
    assert torch.equal(sample_next_token(logits, SamplingParams(temperature=0)), torch.zeros(4000, dtype=torch.long))
    # Low temperature sharpens the distribution.
    assert (draw(temperature=0.2) == 0).float().mean() > 0.85

    model = _model(arch="gpt2")
    sampled = SamplingParams(max_new_tokens=16, temperature=1.0, top_k=50, seed=123)
    a = generate_tokens(model, PROMPTS, sampled)
    b = generate_tokens(model, PROMPTS, sampled)
    c = generate_tokens(model, PROMPTS, SamplingParams(max_new_tokens=16, temperature=1.0, top_k=50, seed=124))
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert [r.tokens for r in a] != [r.tokens for r in c]
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)


def test_stop_strings_cut_the_text(tokenizer):
    model = _model(arch="llama", vocab_size=tokenizer.get_vocab_size())
    greedy = SamplingParams(max_new_tokens=20, temperature=0)
    prompts = ["ROMEO:", "First Citizen:\nWe are"]
    free = generate_text(model, tokenizer, prompts, greedy)
    assert all(c.finish_reason == "length" and len(c.tokens) == 20 for c in free)
    stop = free[0].text[5:8]
    stopped = generate_text(model, tokenizer, prompts, greedy, stop=[stop, "\x00never"])
    assert stopped[0].finish_reason == "stop"
    assert stopped[0].text == free[0].text[: free[0].text.find(stop)]
    assert free[0].tokens[: len(stopped[0].tokens)] == stopped[0].tokens
    assert len(stopped[0].tokens) < 20
    if stop not in free[1].text:
        assert stopped[1].text == free[1].text and stopped[1].finish_reason == "length"


ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_gristmill_generate_cli_on_a_run_checkpoint(tmp_path, tokenizer):
    model = _model(arch="gpt2", vocab_size=tokenizer.get_vocab_size())
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step-000100"
    save_model(ckpt, model, extra={"step": 100})
    (run / "tokenizer").mkdir(parents=True)
    tokenizer.save(str(run / "tokenizer" / "tokenizer.json"))  # found through the run layout
    proc = run_gristmill("generate", str(ckpt), "--prompt", "ROMEO:", "--prompt", "To be, or not",
                         "--temperature", "0", "--top-k", "20", "--top-p", "0.9", "--max-tokens", "9", "--seed", "1",
                         "--json", env=ONE_THREAD)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    expected = generate_text(model, tokenizer, ["ROMEO:", "To be, or not"], SamplingParams(max_new_tokens=9, temperature=0))
    assert [(r["prompt"], r["text"], r["tokens"]) for r in lines] == [(e.prompt, e.text, e.tokens) for e in expected]

    # Error paths in-process (same Typer app, no subprocess start-up).
    from typer.testing import CliRunner

    from pipelines.cli import app

    bad = CliRunner().invoke(app, ["generate", str(tmp_path / "nope"), "--prompt", "x"])
    assert bad.exit_code == 2 and "model_config.json" in bad.output
    bad = CliRunner().invoke(app, ["generate", str(ckpt), "--prompt", "x", "--top-p", "1.5"])
    assert bad.exit_code == 2 and "top_p" in bad.output
