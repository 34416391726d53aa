"""kind: pretrain end to end through the real `gristmill` command: Ray Train + Lightning with two
CPU workers on token shards. The driver is SIGKILLed after its first checkpoint and the same
command run again; the resumed run's loss curve must be the one of an uninterrupted run. The
uninterrupted reference is the same training written as a plain PyTorch loop
(`tests.pretrain_shards.reference_curve`), which costs seconds where another Ray Train run costs a
minute, and checks on the way that Ray Train + Lightning + DDP compute exactly that training."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

from tests.conftest import GRISTMILL, REPO, run_gristmill
from tests.pretrain_shards import reference_curve, write_shards
from training.resume import latest_complete

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPEC = REPO / "specs" / "pretrain-tiny.yaml"
MAX_STEPS = 20
EVERY = 5
SETTINGS = [f"max_steps={MAX_STEPS}", f"checkpoint_every={EVERY}", f"eval_every={EVERY}", "log_every=5"]
GLOBAL_ROWS = 8  # 2 workers × micro_batch 4 (the shipped spec)


def _args(data: Path, out: Path) -> list[str]:
    args = ["run", str(SPEC), "--out", str(out), "--set", f"data={data}"]
    for setting in SETTINGS:
        args += ["--set", setting]
    return args


def _rows(run: Path) -> list[dict]:
    with (run / "metrics" / "train.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards-run")
    write_shards(folder)
    return folder


@pytest.fixture(scope="module")
def resumed(shards, ray_address, tmp_path_factory) -> dict:
    """Train, SIGKILL the driver right after its first complete checkpoint, train again."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    cmd = [GRISTMILL, *_args(shards, out), "--address", ray_address, "--set", "ray.ship_code=false"]
    log_path = out.parent / "killed.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log,
                                stderr=subprocess.STDOUT)
        fs = pafs.LocalFileSystem()
        deadline = time.time() + 400
        killed_at = None
        while time.time() < deadline and proc.poll() is None:
            latest = latest_complete(fs, str(out / "checkpoints"))
            if latest and latest[0] >= EVERY:
                proc.send_signal(signal.SIGKILL)
                killed_at = latest[0]
                break
            time.sleep(0.05)
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=30)
    assert killed_at is not None, "no checkpoint before the run ended:\n" + log_path.read_text()[-3000:]
    latest = latest_complete(pafs.LocalFileSystem(), str(out / "checkpoints"))
    assert latest[0] < MAX_STEPS, "killed after the last step: nothing left to resume"
    rows_before = _rows(out)
    result = run_gristmill(*_args(shards, out), address=ray_address, timeout=400)
    return {"out": out, "killed_at": latest[0], "rows_before": rows_before, "stderr": result.stderr,
            "console": result.stdout + result.stderr}


def test_two_workers_train_and_loss_decreases(resumed):
    run = resumed["out"]
    rows = _rows(run)
    # The workers' lines reach the console, without Ray's per-process notes (the workers' setup hook).
    assert f"step {MAX_STEPS}/{MAX_STEPS}" in resumed["console"]
    for noise in ("Progress bars disabled", "Failed to query Ray Train Controller actor state"):
        assert noise not in resumed["console"]
    assert [int(r["step"]) for r in rows] == list(range(1, MAX_STEPS + 1))
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5, losses
    assert [int(r["tokens"]) for r in rows[:2]] == [256, 512]  # 2 workers × 4 rows × 32 tokens per step
    evals = [r for r in rows if r["val_loss"]]
    assert [int(r["step"]) for r in evals] == list(range(EVERY, MAX_STEPS + 1, EVERY))
    assert float(evals[-1]["val_loss"]) < float(evals[0]["val_loss"])
    for r in evals:
        assert float(r["val_ppl"]) == pytest.approx(2.718281828459045 ** float(r["val_loss"]), rel=1e-6)
    assert all(float(r["grad_norm"]) > 0 and float(r["lr"]) > 0 and float(r["tokens_per_s"]) > 0 for r in rows)
    assert all(r["mfu"] == "" for r in rows)  # a CPU has no peak in the table: MFU left empty, not invented
    assert list(rows[0].keys()) == ["step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu",
                                    "val_loss", "val_ppl", "wall_time"]
    assert list((run / "metrics" / "tb").glob("events.out.tfevents.*"))
    stage = json.loads((run / "manifest.json").read_text())["stages"][0]
    assert stage["status"] == "done" and stage["metrics"]["step"] == MAX_STEPS
    assert stage["plan"]["num_workers"] == 2 and stage["plan"]["cpus_per_worker"] == 0.5
    walls = [float(r["wall_time"]) for r in rows]  # Ray Train's start-up is read off the first row
    assert walls == sorted(walls) and 0 < stage["first_step_s"] < stage["seconds"]
    # The run ends by writing its report: the training section from the same CSV and manifest.
    training = json.loads((run / "report" / "stats.json").read_text())["sections"]["training"]
    assert (run / "report" / "index.html").is_file() and training["rows"] == MAX_STEPS
    assert training["run"]["params"] == stage["plan"]["params"] and training["run"]["steps_done"] == MAX_STEPS


def test_sigkill_then_resume_matches_an_uninterrupted_run(resumed, shards):
    run = resumed["out"]
    killed_dir = run / "checkpoints" / f"step-{resumed['killed_at']:06d}"
    assert f"resuming from {killed_dir}" in resumed["stderr"].replace("\n", "")
    stage = json.loads((run / "manifest.json").read_text())["stages"][0]
    assert stage["plan"]["resumed_from_step"] == resumed["killed_at"]
    rows = _rows(run)
    # the rows written before the kill are kept as they were
    assert rows[: len(resumed["rows_before"])] == resumed["rows_before"]
    reference = reference_curve(shards, MAX_STEPS, GLOBAL_ROWS, seed=1337,
                                model_fields={"preset": "tiny", "n_layer": 2, "d_model": 64, "n_head": 4},
                                lr=3e-3, warmup_steps=4, eval_every=EVERY, eval_rows=4 * GLOBAL_ROWS)
    for got, want in zip(rows, reference, strict=True):
        for key in ("loss", "lr", "grad_norm"):
            assert float(got[key]) == pytest.approx(want[key], rel=2e-5), (got["step"], key)
        if "val_loss" in want:
            assert float(got["val_loss"]) == pytest.approx(want["val_loss"], rel=2e-5), got["step"]


def test_checkpoint_contents_load_safely(resumed, shards):
    from training.checkpoint import find_tokenizer, load_model
    from training.lightning_module import next_token_loss
    from training.resume import read_state
    from training.shards import to_model_inputs

    import pyarrow.parquet as pq

    run = resumed["out"]
    steps = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert steps == ["step-000015", "step-000020"]  # keep: 2 in the shipped spec
    last = run / "checkpoints" / "step-000020"
    model, config = load_model(last)
    assert config.vocab_size == 320 and config.max_seq_len == 32 and config.n_layer == 2
    assert find_tokenizer(last) == last / "tokenizer.json"
    optimizer = torch.load(last / "optimizer.pt", weights_only=True)
    assert len(optimizer["param_groups"]) == 2 and optimizer["param_groups"][1]["weight_decay"] == 0.0
    assert len(optimizer["state"]) == sum(1 for _ in model.parameters())
    for rank in (0, 1):
        assert torch.load(last / f"rng-rank{rank}.pt", weights_only=True)["torch"].dtype == torch.uint8
    state = read_state(pafs.LocalFileSystem(), str(last))
    assert state["step"] == 20 and state["rows_consumed"] == 20 * GLOBAL_ROWS and state["world_size"] == 2
    assert state["scheduler"]["last_epoch"] == 20
    # the saved weights give the final val loss the run reported
    val = to_model_inputs(pq.read_table(shards / "shards" / "val-00000.parquet"), True)
    ids, seg = torch.from_numpy(val["input_ids"]), torch.from_numpy(val["segment_ids"])
    with torch.no_grad():
        loss = next_token_loss(model(ids[:, :-1], seg[:, :-1]), ids).item()
    assert loss == pytest.approx(float(_rows(run)[-1]["val_loss"]), rel=1e-5)
