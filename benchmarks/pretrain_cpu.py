"""Training throughput: the Ray Train + Lightning path vs a bare PyTorch loop, same model, data and
batch, on this machine's CPUs. One run each; the figure is the ratio of steady-state tokens/s.

Both sides train the same model (``tiny`` preset, 2 layers × d=128, seq 128, segment ids on) from
the same shards in the same seeded order (``training.shards.stream_from``), with AdamW and the same
schedule, micro-batch 8, no accumulation, one worker / one process, one torch thread each (the
Ray side leaves the second core to the Ray Data read; the bare loop reads with pyarrow in-process).

Measured: the wall time of each optimizer step from step 11 on (median over the steps; the first
10 and the last, which writes the checkpoint, are excluded), i.e. steady state. Bare runs
and Ray runs alternate (bare, Ray, bare, …); each Ray run's peer is the faster of its two neighbours. Excluded: Ray start-up,
the TorchTrainer's worker start and process-group setup, and the first batches (~30 s on 2 CPUs).

    .venv/bin/python -m benchmarks.pretrain_cpu [--steps 80] [--pairs 3]

Each pair also reports Ray Train's start-up: ``fit_to_first_step_s`` (the stage's ``first_step_s``)
and ``command_to_first_step_s`` (from launching ``gristmill run`` to the first step's
``wall_time``: Python imports and Ray start included).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.common import REPO, machine

SEQ_LEN = 128
MICRO = 8
WARM = 10
MODEL = {"preset": "tiny", "n_layer": 2, "d_model": 128, "n_head": 4}


def make_shards(folder: Path) -> None:
    sys.path.insert(0, str(REPO))
    from tests.pretrain_shards import write_shards

    write_shards(folder, seq_len=SEQ_LEN, vocab_size=1024, max_chars=400_000, train_files=4, val_rows=16)


def ray_path(shards: Path, out: Path, steps: int) -> list[float]:
    """Seconds per optimizer step (from train.csv: tokens per step / tokens_per_s)."""
    sets = [f"data={shards}", f"max_steps={steps}", f"checkpoint_every={steps}", "eval_every=0",
            f"batch.micro_batch={MICRO}", "scaling.num_workers=1", "scaling.cpus_per_worker=1",
            "log_every=20", "keep=1", "schedule.warmup_steps=5"]
    sets += [f"model.{k}={v}" for k, v in MODEL.items()]
    cmd = [str(Path(sys.executable).with_name("gristmill")), "run", str(REPO / "specs" / "pretrain-tiny.yaml"),
           "--out", str(out), "--fresh", "--set", "ray.num_cpus=2"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gristmill run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    with (out / "metrics" / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    tokens = MICRO * SEQ_LEN
    return [tokens / float(r["tokens_per_s"]) for r in rows[WARM:-1]]  # the last step holds the checkpoint


def bare_loop(shards: Path, steps: int) -> list[float]:
    """The same training, hand-written: pyarrow reads, a plain loop, no Ray, no Lightning."""
    from functools import partial

    from training.lightning_module import next_token_loss
    from training.model import ModelConfig, Transformer
    from training.schedule import lr_multiplier
    from training.shards import open_shards, stream_from, to_model_inputs

    torch.set_num_threads(1)
    s = open_shards(str(shards))
    fields = {k: v for k, v in MODEL.items() if k != "preset"}
    config = ModelConfig.preset("tiny", **fields, vocab_size=s.vocab_size, max_seq_len=SEQ_LEN)
    torch.manual_seed(1337)
    model = Transformer(config)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_multiplier, total_steps=steps, kind="cosine",
                                                           warmup_steps=5, min_lr_ratio=0.1))
    stream = stream_from(s, 1337, 0, steps * MICRO)

    def batches():
        """Micro-batches of MICRO rows across file boundaries, as the Ray side cuts them."""
        pending: dict[str, np.ndarray] | None = None
        for path in stream.files:
            for rb in pq.ParquetFile(path).iter_batches(batch_size=256, columns=["input_ids", "doc_starts"]):
                part = to_model_inputs(pa.Table.from_batches([rb]), True)
                pending = part if pending is None else {k: np.concatenate([pending[k], part[k]]) for k in part}
                while len(pending["input_ids"]) >= MICRO:
                    yield {k: v[:MICRO] for k, v in pending.items()}
                    pending = {k: v[MICRO:] for k, v in pending.items()}

    times = []
    it = batches()
    last = time.perf_counter()
    for _ in range(steps):
        b = next(it)
        ids = torch.from_numpy(b["input_ids"])
        seg = torch.from_numpy(b["segment_ids"])
        loss = next_token_loss(model(ids[:, :-1], seg[:, :-1]), ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times[WARM:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--pairs", type=int, default=1,
                        help="Ray runs, each between two bare runs: bare, ray, bare, ray, …, bare")
    args = parser.parse_args()
    tokens = MICRO * SEQ_LEN
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards-run"
        make_shards(shards)
        # On a shared machine the load moves: each Ray run is set against the faster of the bare
        # runs just before and just after it.
        bare = [tokens / statistics.median(bare_loop(shards, args.steps))]
        pairs = []
        for i in range(args.pairs):
            load_before = os.getloadavg()[0]
            out = Path(tmp) / f"run-{i}"
            launched = time.time()
            ray_tps = tokens / statistics.median(ray_path(shards, out, args.steps))
            stage = json.loads((out / "manifest.json").read_text())["stages"][0]
            with (out / "metrics" / "train.csv").open() as f:
                first_wall = float(next(csv.DictReader(f))["wall_time"])
            bare.append(tokens / statistics.median(bare_loop(shards, args.steps)))
            peer = max(bare[-2:])
            pairs.append({"bare_tokens_per_s": [round(x, 1) for x in bare[-2:]],
                          "ray_train_lightning_tokens_per_s": round(ray_tps, 1), "ratio": round(ray_tps / peer, 3),
                          "fit_to_first_step_s": stage.get("first_step_s"),
                          "command_to_first_step_s": round(first_wall - launched, 2),
                          "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]})
    ratios = [p["ratio"] for p in pairs]
    print(json.dumps({
        "benchmark": "pretrain_cpu", "machine": machine(), "steps": args.steps,
        "steady_state_steps": args.steps - WARM - 1, "tokens_per_step": tokens, "pairs": pairs,
        "ratio_median": round(statistics.median(ratios), 3), "ratio_range": [min(ratios), max(ratios)],
        "goal": ">= 0.9",
    }, indent=2))


if __name__ == "__main__":
    main()
