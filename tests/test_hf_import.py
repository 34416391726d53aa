"""training.hf_import: a `gristmill export --format hf` directory loads back as the same model (the
inverse mapping), through `load_model` and as `kind: finetune`'s `from:`; what we cannot represent is
refused with a clear error."""

from __future__ import annotations

import json

import pytest
import torch

from tests.tiny_lm import REPO, spread_weights, tiny_config
from training.checkpoint import find_tokenizer, load_model, read_model_config, save_model
from training.export import export_hf
from training.hf_import import is_hf_export, load_hf_export
from training.model import Transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = [
    pytest.param(dict(arch="gpt2"), id="gpt2-tied"),
    pytest.param(dict(arch="gpt2", tie_embeddings=False, bias=False, d_ff=96, norm_eps=1e-6), id="gpt2-untied-nobias"),
    pytest.param(dict(arch="llama", n_kv_head=2, norm_eps=1e-6), id="llama-gqa"),
    pytest.param(dict(arch="llama", tie_embeddings=True, bias=True, rope_theta=500000.0), id="llama-tied-bias"),
]



@pytest.fixture(scope="module")
def tokenizer(shakespeare_bpe):
    return shakespeare_bpe


def _export(tmp_path, tokenizer, **fields):
    torch.manual_seed(0)
    model = spread_weights(Transformer(tiny_config(vocab_size=tokenizer.get_vocab_size(), **fields))).eval()
    ckpt = tmp_path / "ckpt"
    save_model(ckpt, model)
    tokenizer.save(str(ckpt / "tokenizer.json"))
    return model, export_hf(ckpt, tmp_path / "hf")


@pytest.mark.parametrize("fields", CASES)
def test_export_then_import_gives_the_same_model(tmp_path, tokenizer, fields):
    model, hf_dir = _export(tmp_path, tokenizer, **fields)
    assert is_hf_export(hf_dir) and not is_hf_export(tmp_path / "ckpt")
    imported, config = load_hf_export(hf_dir)
    assert config == model.config  # the exact inverse: every field back, defaults included
    ids = torch.randint(0, config.vocab_size, (2, 40))
    with torch.no_grad():
        ours, back = model(ids), imported(ids)
    assert ours.abs().max() > 1.0  # weights spread enough that a wrong mapping would show
    torch.testing.assert_close(back, ours, rtol=0, atol=1e-5)
    if config.tie_embeddings:
        assert imported.lm_head.weight is imported.tok_emb.weight  # still tied for fine-tuning
    # The generic loaders (finetune's base, generate, eval) take the directory as a checkpoint.
    via_load_model, same = load_model(hf_dir)
    assert same == config and read_model_config(hf_dir)[0] == config
    torch.testing.assert_close(via_load_model(ids), ours, rtol=0, atol=1e-5)
    assert find_tokenizer(hf_dir) == hf_dir / "tokenizer.json"


def test_bfloat16_export_loads_as_float32(tmp_path, tokenizer):
    model, _ = _export(tmp_path, tokenizer, arch="llama")
    bf16 = export_hf(tmp_path / "ckpt", tmp_path / "hf16", dtype="bfloat16")
    imported, _ = load_hf_export(bf16)
    assert imported.tok_emb.weight.dtype == torch.float32
    torch.testing.assert_close(imported.tok_emb.weight, model.tok_emb.weight.to(torch.bfloat16).float())


def _edit_config(hf_dir, **changes):
    path = hf_dir / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("changes,message", [
    (dict(model_type="mistral"), "model_type 'mistral' is not one of"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0}), "rope_type 'yarn'"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(mlp_bias=True), "attention_bias (False) and mlp_bias (True) differ"),
    (dict(num_hidden_layers=3), "model.layers.2"),
])
def test_what_we_cannot_represent_is_refused_clearly(tmp_path, tokenizer, changes, message):
    _, hf_dir = _export(tmp_path, tokenizer, arch="llama", n_kv_head=2)
    _edit_config(hf_dir, **changes)
    with pytest.raises(ValueError, match="Gristmill can only load") as err:
        load_hf_export(hf_dir)
    assert message in str(err.value)


def test_llama_biases_not_in_config_are_refused(tmp_path, tokenizer):
    _, hf_dir = _export(tmp_path, tokenizer, arch="llama", bias=True)
    _edit_config(hf_dir, attention_bias=False, mlp_bias=False)
    with pytest.raises(ValueError, match=r"unexpected tensors \['model.layers.0.mlp.down_proj.bias'"):
        load_hf_export(hf_dir)


def test_finetune_spec_accepts_an_hf_export_as_from(tmp_path, tokenizer):
    from pipelines.finetune_run import resolve_base
    from pipelines.specs import load_spec

    _, hf_dir = _export(tmp_path, tokenizer, arch="llama", n_kv_head=2)
    spec = load_spec(str(REPO / "specs" / "finetune-sft.yaml"), [f"from={hf_dir}", "max_seq_len=32"]).model
    assert resolve_base(spec.from_) == str(hf_dir)
