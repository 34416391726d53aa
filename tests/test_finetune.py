"""Fine-tuning runs on CPU: SFT and LoRA lower the assistant-token loss on held-out conversations,
DPO and a reward model learn a preference that holds on held-out pairs; and `kind: finetune` end to
end through the real `gristmill` command (Ray Data prepare + Ray Train + Lightning), then `gristmill
generate` on its checkpoint and a LoRA merge exported for transformers. The end-to-end run's prepare
stage is also where the SFT path of the data stage is checked (every record kept or rejected with a
reason, rows that follow the shard contract plus masks); tests/test_finetune_prepare.py has the
preference pairs.

The in-process runs use a plain Lightning Trainer on the same modules the Ray path runs (the launcher
only adds Ray's strategy and data feeding, which the end-to-end test covers)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import pyarrow.parquet as pq
import pytest
import torch

from tests.finetune_support import (PREF_HELDOUT, PREF_TRAIN, SFT_TRAIN, make_base, preference_tensors, records,
                                    sft_rows)
from training.finetune.lora import LoRAConfig, trainable_parameters
from training.finetune.modules import DPOModule, RewardModule, SFTModule
from training.lightning_module import OptimConfig, ScheduleConfig
from training.shards import open_shards, to_model_inputs

torch.set_num_threads(1)
WIDTH = 97  # rows of 96 positions + 1


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    tok, config = make_base(folder)
    return folder, tok, config


def _fit(module: pl.LightningModule, batches: list[dict], steps: int) -> None:
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)  # pre-made micro-batches
    trainer.fit(module, train_dataloaders=loader)


def _batches(rows: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    n = rows["input_ids"].shape[0]
    return [{k: v[i:i + size] for k, v in rows.items()} for i in range(0, n - size + 1, size)]


def _sft_val_loss(module: SFTModule, rows: dict[str, torch.Tensor]) -> float:
    module.eval()
    total, count = module.eval_loss_sum(rows)
    module.train()
    return float(total) / count


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_sft_lowers_the_assistant_loss_on_held_out_conversations(base, use_lora):
    folder, tok, config = base
    recs = records(SFT_TRAIN, 260)
    train, held = sft_rows(tok, recs[:200], WIDTH), sft_rows(tok, recs[200:], WIDTH)
    torch.manual_seed(0)
    lora = LoRAConfig(rank=8, alpha=16.0, dropout=0.0) if use_lora else None
    module = SFTModule(config, OptimConfig(lr=1e-2 if use_lora else 2e-3, weight_decay=0.0),
                       ScheduleConfig(kind="constant"), 16, True, str(folder), lora)
    before_weights = {n: p.detach().clone() for n, p in module.model.named_parameters() if "lora_" not in n}
    before = _sft_val_loss(module, held)
    _fit(module, _batches(train, 8), steps=16)
    after = _sft_val_loss(module, held)
    assert after < before - 0.5, (before, after)
    if use_lora:
        assert trainable_parameters(module.model) < 0.25 * config.num_params()
        for name, p in module.model.named_parameters():
            if "lora_" not in name:
                assert torch.equal(p, before_weights[name]), f"{name} changed under LoRA"


def _shouting_pairs(path: Path, n: int) -> list[dict]:
    """A real preference signal on real answers: the answer as written is preferred over the same
    answer in capitals (derived from the shipped pairs). Learnable by a tiny model from scratch,
    so held-out accuracy can show it was learned, not memorised."""
    out = []
    for r in records(path, 4 * n):
        if r["chosen"].upper() != r["chosen"]:
            out.append({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["chosen"].upper()})
        if len(out) == n:
            break
    return out


def test_dpo_preference_accuracy_rises_on_held_out_pairs(base):
    folder, tok, config = base
    train = preference_tensors(tok, _shouting_pairs(PREF_TRAIN, 96), WIDTH)
    held = preference_tensors(tok, _shouting_pairs(PREF_HELDOUT, 48), WIDTH)
    torch.manual_seed(0)
    module = DPOModule(config, OptimConfig(lr=1e-3, weight_decay=0.0), ScheduleConfig(kind="constant"), 10,
                       str(folder), beta=0.1)
    assert not any(k.startswith("_reference") for k in module.state_dict())  # the reference is not trained
    with torch.no_grad():
        start = module.pair_terms(held)
    assert start["margin"].abs().max() == 0  # policy == reference: no preference yet
    _fit(module, _batches(train, 8), steps=10)
    module.eval()
    with torch.no_grad():
        end = module.pair_terms(held)
    assert end["accuracy"].mean() >= 0.9 and end["margin"].mean() > 0.2, (end["accuracy"].mean(), end["margin"].mean())
    assert end["loss"].mean() < start["loss"].mean()
    # the reference stayed the base model
    ref = module._reference[0]
    from training.checkpoint import load_model

    original, _ = load_model(folder)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), original.state_dict().values()))


def test_reward_model_accuracy_rises_on_held_out_pairs(base):
    folder, tok, config = base
    train = preference_tensors(tok, _shouting_pairs(PREF_TRAIN, 96), WIDTH)
    held = preference_tensors(tok, _shouting_pairs(PREF_HELDOUT, 48), WIDTH)
    torch.manual_seed(0)
    module = RewardModule(config, OptimConfig(lr=2e-3, weight_decay=0.0), ScheduleConfig(kind="constant"), 12,
                          str(folder))
    assert module.model.lm_head.weight.shape == (1, config.d_model)
    module.eval()
    with torch.no_grad():
        start = module.pair_terms(held)
    module.train()
    _fit(module, _batches(train, 8), steps=12)
    module.eval()
    with torch.no_grad():
        end = module.pair_terms(held)
    assert end["accuracy"].mean() >= 0.9 > start["accuracy"].mean() - 0.2, (start["accuracy"].mean(), end["accuracy"].mean())
    assert end["margin"].mean() > start["margin"].mean()


# --------------------------------------------------------------------------------------------------
# end to end


@pytest.mark.e2e
@pytest.mark.slow
def test_finetune_spec_end_to_end_then_generate(gristmill, base, tmp_path):
    folder, tok, config = base
    data = tmp_path / "pairs.jsonl"
    lines = SFT_TRAIN.read_text(encoding="utf-8").splitlines()[:150]
    # every outcome of the prepare stage: lines that are no JSON object, records that are no chat, a
    # blank line (no record at all) and an answer longer than a row (kept, truncated)
    lines += ["not json", json.dumps([1, 2]), json.dumps({"prompt": "no response"}),
              json.dumps({"messages": [{"role": "user", "content": "q"}]}), "",
              json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a " * 200}]})]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    args = ["run", "specs/finetune-sft.yaml", "--out", str(out), "--set", f"from={folder}", "--set", f"data.train={data}",
            "--set", "max_seq_len=96", "--set", "max_steps=6", "--set", "eval_every=3", "--set", "checkpoint_every=3",
            "--set", "batch.micro_batch=4", "--set", "data.val_fraction=0.1"]
    gristmill(*args, timeout=420)

    manifest = json.loads((out / "manifest.json").read_text())
    prepare, train = manifest["stages"]
    counts = prepare["prepare"]
    assert counts["in"] == 155 and counts["kept"] == 151 and counts["balanced"]  # the blank line is no record
    assert counts["rejected"] == {"invalid_json": 2, "bad_chat": 2}
    assert counts["truncated"] >= 1  # the 200-word answer
    rejected = pq.read_table(out / "rejected" / "prepare").to_pylist()
    assert sorted(r["reason"] for r in rejected) == ["bad_chat", "bad_chat", "invalid_json", "invalid_json"]
    assert any(r["line"] == "not json" for r in rejected)
    # the rows follow the shard contract, with the assistant-token mask as the extra column
    shards = open_shards(str(out))
    assert shards.seq_len == 96 and shards.val and shards.manifest["finetune"]["columns"] == ["loss_mask"]
    arrays = to_model_inputs(pq.read_table(shards.train[0].path), True, ("loss_mask",))
    assert arrays["input_ids"].shape[1] == 97 and arrays["loss_mask"].shape == arrays["input_ids"].shape
    assert arrays["loss_mask"].sum() > 0 and arrays["segment_ids"].max() >= 1
    # every kept conversation is in exactly one row (EOS closes each; a truncated one may lose it)
    eos = shards.manifest["tokenizer"]["eos_id"]
    total_eos = sum(int((to_model_inputs(pq.read_table(f.path), True)["input_ids"] == eos).sum())
                    for f in shards.train + shards.val)
    assert counts["kept"] - counts["truncated"] <= total_eos <= counts["kept"]
    assert train["status"] == "done" and train["plan"]["method"] == "sft"
    with (out / "metrics" / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(int(r["assistant_tokens"]) > 0 for r in rows) and rows[-1]["val_loss"]
    ckpt = out / "checkpoints" / "step-000006"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()
    training = json.loads((out / "report" / "stats.json").read_text())["sections"]["training"]
    assert (out / "report" / "index.html").is_file() and training["run"]["method"] == "sft"
    assert training["final"]["assistant_tokens"] == int(rows[-1]["assistant_tokens"])

    # `gristmill generate` on the checkpoint, in-process (same Typer app; tests/test_generate.py runs
    # the command itself): a second interpreter start-up would only add time
    from typer.testing import CliRunner

    from pipelines.cli import app

    prompt = "<|user|>\nWhat do plants need to grow?<|end|>\n<|assistant|>\n"
    result = CliRunner().invoke(app, ["generate", str(ckpt), "--prompt", prompt, "--temperature", "0",
                                      "--max-tokens", "8", "--json"])
    assert result.exit_code == 0, result.output
    completion = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(completion["tokens"]) > 0 and completion["prompt"] == prompt

    # Rerunning the same spec resumes (here: finds the run finished) instead of training again.
    again = gristmill(*args, timeout=300)
    assert "skipped" in again.stderr


def test_lora_merge_exports_for_transformers(base, tmp_path):
    """The run's merge step (`model/`) is an ordinary checkpoint: `gristmill export` reads it and
    transformers computes the adapted model's logits."""
    transformers = pytest.importorskip("transformers")
    from pipelines.finetune_run import FinetuneRun
    from training.export import export_hf
    from training.finetune.lora import LoRALinear, save_adapter

    folder, tok, config = base
    torch.manual_seed(0)
    lora = LoRAConfig(rank=4, alpha=8.0, dropout=0.0)
    module = SFTModule(config, OptimConfig(), ScheduleConfig(), 1, True, str(folder), lora)
    with torch.no_grad():
        for m in module.model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0.0, 0.05)
    adapter_dir = tmp_path / "step-000001"
    save_adapter(adapter_dir, module.model, lora, base=str(folder))

    class Notes:
        def note(self, message: str) -> None:
            pass

    from pipelines.rundir import RunDir

    run = RunDir.open(str(tmp_path / "run"))
    run.makedirs("tokenizer")
    (tmp_path / "run" / "tokenizer" / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    merged_dir = FinetuneRun(None, run, Notes())._merge(str(adapter_dir), str(folder))  # type: ignore[arg-type]
    exported = export_hf(merged_dir, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(exported)).eval()
    ids = torch.randint(3, 300, (2, 20))
    module.model.eval()
    with torch.no_grad():
        ours = module.model(ids)
        theirs = hf(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    # `gristmill generate` / `export` pointed at the adapter checkpoint itself merge it the same way
    from training.finetune.lora import is_adapter_checkpoint, load_merged

    assert is_adapter_checkpoint(adapter_dir) and not is_adapter_checkpoint(merged_dir)
    with torch.no_grad():
        assert torch.allclose(load_merged(adapter_dir)(ids), ours, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "reward"])
def test_checkpoint_hooks_round_trip(base, tmp_path, method):
    """What the progress callback writes (save_weights) and a resumed worker reads (restore_weights):
    a LoRA step checkpoint holds the adapter only, a reward checkpoint the model with its head; both
    restore the exact model, and the file that marks them complete is the one they write."""
    from training.checkpoint import WEIGHTS_FILE
    from training.finetune.modules import REWARD_WEIGHTS, load_reward_model

    folder, tok, config = base

    def build(seed: int):
        torch.manual_seed(seed)
        if method == "lora":
            return SFTModule(config, OptimConfig(), ScheduleConfig(), 1, True, str(folder), LoRAConfig(rank=4, dropout=0.0))
        return RewardModule(config, OptimConfig(), ScheduleConfig(), 1, str(folder))

    trained = build(0)
    with torch.no_grad():
        for name, p in trained.model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)  # stands in for training
    trained.save_weights(str(tmp_path), {"step": 3})
    assert (tmp_path / trained.weights_file).is_file() and not (tmp_path / WEIGHTS_FILE).exists()
    resumed = build(1)
    resumed.restore_weights(str(tmp_path))
    ids = torch.randint(3, 300, (2, 16))
    trained.eval()
    resumed.eval()
    with torch.no_grad():
        assert torch.equal(trained.model(ids), resumed.model(ids))
        if method == "reward":
            assert trained.weights_file == REWARD_WEIGHTS
            assert torch.equal(load_reward_model(str(tmp_path))(ids), trained.model(ids))
    if method == "lora":
        size = sum(f.stat().st_size for f in tmp_path.iterdir())
        assert size < 0.2 * (folder / WEIGHTS_FILE).stat().st_size  # adapter only
