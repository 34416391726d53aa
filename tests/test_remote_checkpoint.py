"""Checkpoints given as URIs (training/remote.py): resolved in the store, copied once to the local
cache with the run layout, loaded from there. The store here is pyarrow's local filesystem behind a
``file://`` URI, the same code path as ``s3://`` (tests/cluster/test_s3_rundir.py covers a real S3
API); no Ray needed."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from curation.tokenize.train import TokenizerTrainConfig, tokenizer_bytes, train_bpe
from eval.checkpoints import resolve_checkpoint
from pipelines.finetune_run import resolve_base
from tests.conftest import DATA, run_gristmill
from training.checkpoint import find_tokenizer, load_model, save_model
from training.model import ModelConfig, Transformer
from training.remote import localize, resolve_remote, tokenizer_uri


def write_tiny_run(run):
    """A pretrain-shaped run: checkpoints/step-000002 complete, step-000004 cut short by a kill."""
    texts = [p.read_text(encoding="utf-8") for p in sorted((DATA / "text" / "moby-dick").glob("chapter_*.txt"))[:4]]
    tok = tokenizer_bytes(train_bpe(iter(texts), TokenizerTrainConfig(vocab_size=320)))
    (run / "tokenizer").mkdir(parents=True)
    (run / "tokenizer" / "tokenizer.json").write_bytes(tok)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=320, max_seq_len=32, n_layer=1, n_head=2, d_model=32))
    for step, complete in ((2, True), (4, False)):
        ckpt = run / "checkpoints" / f"step-{step:06d}"
        save_model(ckpt, model, extra={"step": step})
        (ckpt / "tokenizer.json").write_bytes(tok)
        if complete:  # what training.resume.is_complete looks for
            (ckpt / "trainer_state.json").write_text(json.dumps({"world_size": 1}))
            torch.save({"opt": torch.zeros(3)}, ckpt / "optimizer.pt")
            torch.save({"rng": 1}, ckpt / "rng-rank0.pt")
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    run = write_tiny_run(tmp_path_factory.mktemp("store") / "runs" / "tiny")
    return {"run": run, "uri": f"file://{run}"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRISTMILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "remote"


def test_a_run_uri_means_its_newest_complete_checkpoint_copied_with_the_run_layout(store, cache):
    local = localize(store["uri"])
    assert local.startswith(str(cache)) and local.endswith("checkpoints/step-000002")
    copied = sorted(p.name for p in (cache.iterdir().__next__() / "checkpoints" / "step-000002").iterdir())
    assert copied == ["model.safetensors", "model_config.json", "tokenizer.json", "trainer_state.json"], \
        "weights, config and tokenizer come; optimizer and RNG state (resume only) stay in the store"
    assert os.path.isfile(os.path.join(local, "..", "..", "tokenizer", "tokenizer.json"))
    assert resolve_remote(store["uri"]) == f"{store['uri']}/checkpoints/step-000002"
    assert tokenizer_uri(store["uri"]) == f"{store['uri']}/checkpoints/step-000002/tokenizer.json"
    assert localize(str(store["run"])) == str(store["run"]), "a local path is left alone"


def test_loading_through_a_uri_equals_loading_the_local_checkpoint(store, cache):
    model, config = load_model(store["uri"])
    reference, _ = load_model(store["run"] / "checkpoints" / "step-000002")
    assert config == reference.config
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    assert find_tokenizer(f"{store['uri']}/checkpoints/step-000002").read_bytes() == \
        (store["run"] / "tokenizer" / "tokenizer.json").read_bytes()
    assert resolve_checkpoint(store["uri"]) == resolve_checkpoint(localize(store["uri"]))
    assert resolve_base(store["uri"]) == f"{store['uri']}/checkpoints/step-000002", \
        "fine-tuning hands workers the URI: each node copies it itself"


def test_the_copy_is_reused_until_the_store_changes(store, cache, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(store["run"], run)
    uri = f"file://{run}"
    weights = os.path.join(localize(uri), "model.safetensors")
    first = os.stat(weights).st_mtime_ns
    assert os.stat(os.path.join(localize(uri), "model.safetensors")).st_mtime_ns == first, "no second copy"
    config = run / "checkpoints" / "step-000002" / "model_config.json"
    meta = json.loads(config.read_text())
    meta["extra"]["note"] = "rewritten"
    config.write_text(json.dumps(meta))
    again = localize(uri)
    assert json.loads((open(os.path.join(again, "model_config.json")).read()))["extra"]["note"] == "rewritten"
    assert not [p for p in cache.rglob("*") if p.name.startswith(".tmp-")], "no half copy left"


def test_a_uri_without_a_checkpoint_is_a_clear_error(store, cache):
    with pytest.raises(FileNotFoundError, match="holds no model checkpoint"):
        localize(f"file://{store['run'] / 'tokenizer'}")


def test_generate_and_export_take_a_uri(store, tmp_path):
    env = {"GRISTMILL_CACHE": str(tmp_path / "cache")}
    done = run_gristmill("generate", store["uri"], "--prompt", "Call me", "--max-tokens", "4", "--temperature", "0",
                         "--json", env=env)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["prompt"] == "Call me" and len(record["tokens"]) == 4
    out = tmp_path / "hf"
    run_gristmill("export", store["uri"], "--out", str(out), env=env)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
