"""training.export and `gristmill export`: transformers loads the export and computes our logits."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_gristmill
from tests.tiny_lm import spread_weights, tiny_config
from training.checkpoint import save_model
from training.export import export_hf
from training.generate import SamplingParams, generate_tokens
from training.model import Transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

transformers = pytest.importorskip("transformers")  # a dev dependency; export itself does not need it

CASES = [
    pytest.param(dict(arch="gpt2"), "GPT2LMHeadModel", id="gpt2-tied"),
    pytest.param(dict(arch="gpt2", tie_embeddings=False, bias=False, d_ff=96), "GPT2LMHeadModel", id="gpt2-untied-nobias"),
    pytest.param(dict(arch="llama", n_kv_head=2), "LlamaForCausalLM", id="llama-gqa"),
    pytest.param(dict(arch="llama", tie_embeddings=True, bias=True, rope_theta=500000.0), "LlamaForCausalLM",
                 id="llama-tied-bias"),
]



@pytest.fixture(scope="module")
def tokenizer(shakespeare_bpe):
    return shakespeare_bpe


def _checkpoint(tmp_path, tokenizer, **fields):
    torch.manual_seed(0)
    model = spread_weights(Transformer(tiny_config(vocab_size=tokenizer.get_vocab_size(), **fields))).eval()
    ckpt = tmp_path / "ckpt"
    save_model(ckpt, model)
    tokenizer.save(str(ckpt / "tokenizer.json"))
    return model, ckpt


@pytest.mark.parametrize("fields,hf_class", CASES)
def test_transformers_loads_the_export_with_matching_logits(tmp_path, tokenizer, fields, hf_class):
    model, ckpt = _checkpoint(tmp_path, tokenizer, **fields)
    out = export_hf(ckpt, tmp_path / "hf")
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert type(hf).__name__ == hf_class
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    hf.eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 40))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert ours.abs().max() > 1.0  # weights spread enough that a wrong mapping would show
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)
    assert hf.config.tie_word_embeddings == model.config.tie_embeddings


def test_greedy_generation_matches_transformers_generate(tmp_path, tokenizer):
    model, ckpt = _checkpoint(tmp_path, tokenizer, arch="llama", n_kv_head=2)
    hf = transformers.AutoModelForCausalLM.from_pretrained(export_hf(ckpt, tmp_path / "hf"), dtype=torch.float32).eval()
    prompt = tokenizer.encode("ROMEO: what").ids
    ours = generate_tokens(model, [prompt], SamplingParams(max_new_tokens=15, temperature=0))[0].tokens
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=15, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, len(prompt):].tolist()
    assert ours == theirs


def test_gristmill_export_cli_writes_a_loadable_model_and_tokenizer(tmp_path, tokenizer):
    model, _ = _checkpoint(tmp_path, tokenizer, arch="gpt2")
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step-000002"
    save_model(ckpt, model)
    (run / "tokenizer").mkdir(parents=True)
    tokenizer.save(str(run / "tokenizer" / "tokenizer.json"))
    out = tmp_path / "export"
    env = {"OMP_NUM_THREADS": "1"}
    run_gristmill("export", str(ckpt), "--format", "hf", "--out", str(out), "--dtype", "bfloat16", env=env)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["eos_token_id"] == tokenizer.token_to_id("<|eos|>")

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    assert hf_tok(text)["input_ids"] == tokenizer.encode(text).ids
    assert (hf_tok.eos_token, hf_tok.pad_token, hf_tok.bos_token) == ("<|eos|>", "<|pad|>", "<|bos|>")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).eval()
    ids = torch.tensor([tokenizer.encode(text).ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits.float(), model(ids), rtol=0.05, atol=0.3)  # bf16 weights

    # Error paths in-process (same Typer app, no subprocess start-up).
    from typer.testing import CliRunner

    from pipelines.cli import app

    again = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(out)])
    assert again.exit_code == 2 and "not an empty directory" in again.output
    wrong = CliRunner().invoke(app, ["export", str(ckpt), "--format", "gguf", "--out", str(tmp_path / "x")])
    assert wrong.exit_code == 2 and "unknown export format" in wrong.output


def test_export_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path, tokenizer):
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    save_model(ckpt, Transformer(tiny_config("llama", vocab_size=100)))
    tokenizer.save(str(ckpt / "tokenizer.json"))
    with pytest.raises(ValueError, match="vocab_size is 100"):
        export_hf(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
