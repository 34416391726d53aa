"""LoRA: which parameters train (count by hand), merge equivalence, adapter-only save/load, errors."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_lm import spread_weights, tiny_config
from training.finetune.lora import (ADAPTER_FILE, LoRAConfig, LoRALinear, apply_lora, load_adapter, merge_lora,
                                    save_adapter, trainable_parameters)
from training.model import Transformer

torch.set_num_threads(1)


def _adapted(arch: str, targets: tuple[str, ...], rank: int = 4, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = spread_weights(Transformer(tiny_config(arch)), seed=seed)
    apply_lora(model, LoRAConfig(rank=rank, alpha=8.0, dropout=0.0, target_modules=targets))
    with torch.no_grad():  # B starts at zero; give it values so the adapter changes the output
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(0.0, 0.2)
    return model.eval()


@pytest.mark.parametrize("arch, targets", [
    ("llama", ("attn.qkv", "attn.proj", "mlp.gate", "mlp.up", "mlp.proj")),
    ("llama", ("attn.qkv",)),
    ("gpt2", ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")),
])
def test_only_adapters_train_and_their_count_matches_r_times_in_plus_out(arch, targets):
    rank = 4
    model = _adapted(arch, targets, rank)
    cfg = model.config
    d, ff, qkv = cfg.d_model, cfg.d_ff, cfg.d_model + 2 * cfg.kv_dim
    shapes = {"attn.qkv": (d, qkv), "attn.proj": (d, d), "mlp.fc": (d, ff), "mlp.gate": (d, ff), "mlp.up": (d, ff),
              "mlp.proj": (ff, d)}
    expected = cfg.n_layer * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)
    assert trainable_parameters(model) == expected
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    # a backward pass leaves gradients on the adapters only
    model.train()
    model(torch.randint(0, 320, (2, 16))).logsumexp(-1).mean().backward()
    assert all((p.grad is not None) == ("lora_" in n) for n, p in model.named_parameters())


def test_a_fresh_adapter_is_the_identity():
    torch.manual_seed(0)
    base = spread_weights(Transformer(tiny_config("llama"))).eval()
    ids = torch.randint(0, 320, (2, 20))
    expected = base(ids)
    apply_lora(base, LoRAConfig(rank=8))
    assert torch.equal(base.eval()(ids), expected)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_merged_model_gives_the_adapted_models_logits(arch):
    targets = ("attn.qkv", "attn.proj", "mlp.proj") + (("mlp.gate", "mlp.up") if arch == "llama" else ("mlp.fc",))
    model = _adapted(arch, targets)
    ids = torch.randint(0, 320, (3, 24))
    with torch.no_grad():
        adapted = model(ids)
        merged_model = merge_lora(model)
        merged = merged_model(ids)
    assert type(merged_model.blocks[0].attn.qkv) is torch.nn.Linear  # a plain model again
    assert torch.allclose(merged, adapted, atol=1e-4), (merged - adapted).abs().max()
    # the adapter really changed the model (the test would pass vacuously otherwise)
    plain = Transformer(model.config)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "lora_" not in k})
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(ids), adapted, atol=1e-2)


def test_adapter_checkpoint_holds_only_the_adapter_and_loads_back(tmp_path):
    from safetensors.torch import load_file

    model = _adapted("llama", ("attn.qkv", "mlp.up"))
    save_adapter(tmp_path, model, LoRAConfig(rank=4, alpha=8.0, target_modules=("attn.qkv", "mlp.up")), base="/base")
    saved = load_file(str(tmp_path / ADAPTER_FILE))
    assert saved and all("lora_" in k for k in saved)
    assert sum(v.numel() for v in saved.values()) == trainable_parameters(model)
    fresh = _adapted("llama", ("attn.qkv", "mlp.up"), seed=1)
    load_adapter(fresh, tmp_path)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if "lora_" not in k}, strict=False)
    ids = torch.randint(0, 320, (1, 12))
    with torch.no_grad():
        assert torch.allclose(fresh(ids), model(ids), atol=1e-6)
    other = _adapted("llama", ("attn.qkv",))
    with pytest.raises(ValueError, match="adapter keys do not match"):
        load_adapter(other, tmp_path)


def test_targets_that_match_nothing_are_errors():
    model = Transformer(tiny_config("gpt2"))
    with pytest.raises(ValueError, match="match no linear layer"):
        apply_lora(model, LoRAConfig(target_modules=("mlp.gate", "mlp.up")))  # llama-only names on gpt2
    with pytest.raises(ValueError, match="match no linear layer"):
        apply_lora(Transformer(tiny_config("llama")), LoRAConfig(target_modules=("attn.q_proj",)))
