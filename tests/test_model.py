"""training.model and training.checkpoint: shapes, masking, GQA, presets' sizes, init, save/load."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.tiny_lm import spread_weights, tiny_config
from training.checkpoint import find_tokenizer, load_model, read_model_config, save_model
from training.model import ModelConfig, Transformer, swiglu_hidden_dim

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH_CASES = [
    pytest.param(dict(arch="gpt2"), id="gpt2"),
    pytest.param(dict(arch="llama"), id="llama"),
    pytest.param(dict(arch="llama", n_kv_head=2), id="llama-gqa"),
]



def _model(seed: int = 0, **fields) -> Transformer:
    torch.manual_seed(seed)
    return spread_weights(Transformer(tiny_config(**fields)), seed).eval()


@pytest.mark.parametrize("fields", ARCH_CASES)
def test_logits_shape_and_backward(fields):
    model = _model(**fields).train()
    ids = torch.randint(0, 320, (3, 17))
    logits = model(ids)
    assert logits.shape == (3, 17, 320) and logits.dtype == torch.float32
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 320), ids[:, 1:].reshape(-1))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("fields", ARCH_CASES)
def test_causal_masking_future_token_does_not_change_earlier_logits(fields):
    model = _model(**fields)
    ids = torch.randint(0, 320, (2, 20))
    changed = ids.clone()
    changed[:, 12] = (changed[:, 12] + 1) % 320
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.parametrize("fields", ARCH_CASES)
def test_segment_masking_isolates_packed_documents(fields):
    model = _model(**fields)
    ids = torch.randint(0, 320, (2, 24))
    segments = torch.tensor([[0] * 10 + [1] * 8 + [2] * 6, [5] * 24])
    changed = ids.clone()
    changed[0, :10] = (changed[0, :10] + 7) % 320  # rewrite the first document of row 0
    with torch.no_grad():
        a = model(ids, segment_ids=segments)
        b = model(changed, segment_ids=segments)
        plain = model(ids)
    assert torch.equal(a[0, 10:], b[0, 10:])  # later documents never saw the first one
    assert not torch.allclose(a[0, :10], b[0, :10])
    # One segment for the whole row is plain causal attention.
    torch.testing.assert_close(a[1], plain[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(a[0, :10], plain[0, :10], rtol=0, atol=1e-5)
    assert not torch.allclose(a[0, 10:], plain[0, 10:])


def test_rope_makes_a_packed_document_equal_to_the_document_alone():
    # RoPE scores depend on relative positions only, so a Llama document packed after another one
    # (with attention blocked between them) gives the same logits as the document on its own.
    model = _model(arch="llama", n_kv_head=2)
    ids = torch.randint(0, 320, (1, 30))
    segments = torch.tensor([[0] * 12 + [1] * 18])
    with torch.no_grad():
        packed = model(ids, segment_ids=segments)
        alone = model(ids[:, 12:])
    torch.testing.assert_close(packed[0, 12:], alone[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("fields", ARCH_CASES)
def test_kv_cache_chunks_equal_one_forward(fields):
    model = _model(**fields)
    ids = torch.randint(0, 320, (2, 21))
    cache = model.new_kv_cache(batch_size=2, max_len=32)
    with torch.no_grad():
        full = model(ids)
        parts = [model(ids[:, :9], kv_cache=cache, start_pos=0)]
        parts += [model(ids[:, t:t + 1], kv_cache=cache, start_pos=t) for t in range(9, 15)]
        parts.append(model(ids[:, 15:], kv_cache=cache, start_pos=15))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)
    with torch.no_grad():
        last = model(ids, logits_to_keep=1)
    assert last.shape == (2, 1, 320)
    torch.testing.assert_close(last, full[:, -1:], rtol=0, atol=1e-5)


def test_grouped_query_attention_equals_attention_with_shared_heads():
    # A GQA model is an MHA model whose key/value heads are repeated per query group; build that MHA
    # model from the GQA weights and compare.
    gqa = _model(arch="llama", n_kv_head=2)
    mha = Transformer(tiny_config("llama")).eval()
    cfg = gqa.config
    hd, q_out = cfg.head_dim, cfg.n_head * cfg.head_dim
    assert gqa.blocks[0].attn.qkv.weight.shape == (q_out + 2 * cfg.kv_dim, cfg.d_model)
    state = {k: v.clone() for k, v in gqa.state_dict().items()}
    for i in range(cfg.n_layer):
        w = state[f"blocks.{i}.attn.qkv.weight"]
        q, k, v = w.split((q_out, cfg.kv_dim, cfg.kv_dim))
        group = cfg.n_head // cfg.n_kv_head
        k = k.view(cfg.n_kv_head, hd, -1).repeat_interleave(group, 0).reshape(q_out, -1)
        v = v.view(cfg.n_kv_head, hd, -1).repeat_interleave(group, 0).reshape(q_out, -1)
        state[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, k, v])
    mha.load_state_dict(state)
    ids = torch.randint(0, 320, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(gqa(ids), mha(ids), rtol=0, atol=1e-5)
    assert gqa.num_params() < mha.num_params()


def test_gpt2_and_llama_blocks_differ_as_documented():
    gpt2, llama = Transformer(tiny_config("gpt2")), Transformer(tiny_config("llama"))
    assert isinstance(gpt2.final_norm, torch.nn.LayerNorm) and gpt2.pos_emb is not None
    assert gpt2.lm_head.weight is gpt2.tok_emb.weight  # tied
    assert gpt2.blocks[0].mlp.fc.out_features == 4 * 64 and gpt2.blocks[0].attn.qkv.bias is not None
    assert type(llama.final_norm).__name__ == "RMSNorm" and llama.pos_emb is None
    assert llama.lm_head.weight is not llama.tok_emb.weight  # untied
    assert llama.blocks[0].mlp.gate.out_features == swiglu_hidden_dim(64) == 192
    assert llama.blocks[0].attn.qkv.bias is None
    assert swiglu_hidden_dim(4096) == 11008  # Llama-7B's width


def test_preset_parameter_counts_match_the_published_models():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    gpt2 = ModelConfig.preset("gpt2-124m")
    assert gpt2.num_params() == 124_439_808  # HF "gpt2" checkpoint
    llama = ModelConfig.preset("llama-350m")
    assert llama.num_params() == 367_969_280
    with torch.device("meta"):
        ours_gpt2, ours_llama = Transformer(gpt2), Transformer(llama)
        hf_gpt2 = GPT2LMHeadModel(GPT2Config())
        hf_llama = LlamaForCausalLM(LlamaConfig(
            vocab_size=32000, hidden_size=1024, intermediate_size=2736, num_hidden_layers=24,
            num_attention_heads=16, max_position_embeddings=2048))  # GaLore's llama_350m.json
    for ours, hf, cfg in ((ours_gpt2, hf_gpt2, gpt2), (ours_llama, hf_llama, llama)):
        assert ours.num_params() == cfg.num_params() == hf.num_parameters()
        assert ours.num_params(non_embedding=True) == cfg.num_params(non_embedding=True)
    tiny = ModelConfig.preset("tiny")
    assert tiny.num_params() == Transformer(tiny).num_params() and tiny.num_params() < 5_000_000
    assert ModelConfig.preset("tiny", arch="gpt2").arch == "gpt2"


def test_flops_per_token_is_the_palm_estimate():
    cfg = ModelConfig.preset("gpt2-124m")
    # nanoGPT's estimate_mfu: N = all parameters except position embeddings (the tied matrix once).
    n = 124_439_808 - 1024 * 768
    assert cfg.flops_per_token(1024) == 6 * n + 12 * 12 * 12 * 64 * 1024
    assert cfg.flops_per_token(512) < cfg.flops_per_token(1024)


def test_initialisation_scales_residual_projections():
    torch.manual_seed(0)
    cfg = tiny_config("llama", d_model=256, n_layer=8, n_head=4)
    model = Transformer(cfg)
    residual = torch.cat([torch.cat([b.attn.proj.weight.flatten(), b.mlp.proj.weight.flatten()])
                          for b in model.blocks])
    other = torch.cat([b.attn.qkv.weight.flatten() for b in model.blocks])
    assert residual.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert other.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(model.blocks[0].attn_norm.weight, torch.ones(256))


def test_config_defaults_round_trip_and_errors():
    cfg = ModelConfig.preset("tiny", n_kv_head=2, dropout=0.1)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.n_kv_head == 2 and cfg.d_ff == swiglu_hidden_dim(128) and cfg.tie_embeddings is False
    gpt2 = ModelConfig(arch="gpt2", d_model=64, n_head=4)
    assert (gpt2.n_kv_head, gpt2.d_ff, gpt2.tie_embeddings, gpt2.bias) == (4, 256, True, True)
    with pytest.raises(ValueError, match="needs arch: llama"):
        ModelConfig(arch="gpt2", n_kv_head=2)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=100, n_head=3)
    with pytest.raises(ValueError, match="arch"):
        ModelConfig(arch="mamba")
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("gpt5")
    with pytest.raises(ValueError, match="unknown model config fields"):
        ModelConfig.from_dict({"arch": "llama", "n_layers": 2})
    model = Transformer(tiny_config("gpt2"))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize("fields", ARCH_CASES)
def test_checkpoint_save_then_load_gives_identical_logits(tmp_path, fields):
    model = _model(**fields)
    save_model(tmp_path / "ck", model, extra={"step": 7})
    loaded, cfg = load_model(tmp_path / "ck")
    assert cfg == model.config and not loaded.training
    ids = torch.randint(0, 320, (2, 12))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    assert (loaded.lm_head.weight is loaded.tok_emb.weight) == cfg.tie_embeddings
    assert read_model_config(tmp_path / "ck")[1] == {"step": 7}
    # Safetensors holds tensors only; a tied output projection is stored once.
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ck" / "model.safetensors"), "pt") as f:
        assert ("lm_head.weight" in f.keys()) == (not cfg.tie_embeddings)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["model.safetensors", "model_config.json"]


def test_checkpoint_errors_and_tokenizer_lookup(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        load_model(tmp_path)
    ckpt = tmp_path / "run" / "checkpoints" / "step-000010"
    save_model(ckpt, Transformer(tiny_config("gpt2")))
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        find_tokenizer(ckpt)
    (tmp_path / "run" / "tokenizer").mkdir()
    (tmp_path / "run" / "tokenizer" / "tokenizer.json").write_text("{}")
    assert find_tokenizer(ckpt) == tmp_path / "run" / "tokenizer" / "tokenizer.json"
    (ckpt / "tokenizer.json").write_text("{}")
    assert find_tokenizer(ckpt) == ckpt / "tokenizer.json"
