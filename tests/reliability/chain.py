"""The small chain the kill tests run: curate (normalize, length filter, exact + MinHash dedup,
tokenize) → pretrain → SFT → eval, each as its own spec through the real `gristmill` command, with
data small enough that the whole chain takes about a minute on two cores."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import DATA, GRISTMILL, REPO
from tests.helpers import kept_ids, manifest, rejected_tables

# Moby-Dick chapters 20..69 and the dedup mirror, which holds exact, re-cased and lightly edited copies
# of chapters 23, 25, 37, 38, 39 and 43 among others (exact and near duplicates to remove).
CHAPTERS = range(20, 45)
SFT_RECORDS = 160

CURATE = """\
kind: curate
name: rel-curate
input:
  - {{format: text, paths: [{chapters}]}}
  - {{format: jsonl, paths: ["{mirror}"]}}
steps:
  - normalize: {{}}
  - length_filter: {{min_words: 50}}
  - exact_dedup: {{}}
  - minhash_dedup: {{ngram: 5, bands: 14, rows: 8}}
  - tokenize:
      tokenizer: {{train: {{vocab_size: 384, sample_docs: 40}}}}
      seq_len: 64
      val_fraction: 0.1
      seed: 0
      shard_target_mb: 0.02
"""

PRETRAIN = """\
kind: pretrain
name: rel-pretrain
data: {data}
model: {{preset: tiny, n_layer: 1, d_model: 32, n_head: 2}}
optimizer: {{lr: 3.0e-3}}
batch: {{micro_batch: 4}}
max_steps: 12
eval_every: 4
eval_batches: 2
checkpoint_every: 4
keep: 5
log_every: 4
scaling: {{num_workers: 1}}
"""

FINETUNE = """\
kind: finetune
name: rel-sft
method: sft
from: {base}
data: {{train: ["{train}"], val_fraction: 0.1}}
max_seq_len: 64
max_steps: 8
optimizer: {{lr: 1.0e-3}}
batch: {{micro_batch: 4}}
eval_every: 4
eval_batches: 2
checkpoint_every: 4
keep: 5
log_every: 4
scaling: {{num_workers: 1}}
"""

EVAL = """\
kind: eval
name: rel-eval
checkpoints: ["{pretrain}", "{sft}"]
tasks:
  - perplexity: {{shards: "{shards}"}}
batch_size: 8
cpus_per_checkpoint: 0.5
"""


def write_specs(folder: Path) -> dict[str, Path]:
    """The four specs, reading their upstream from the reference runs under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    chapters = ", ".join(f'"{DATA}/text/moby-dick/chapter_{i}.txt"' for i in CHAPTERS)
    sft = folder / "sft.jsonl"
    lines = (DATA / "instruct" / "sft-arc_easy-piqa.train.jsonl").read_text().splitlines()[:SFT_RECORDS]
    sft.write_text("\n".join(lines) + "\n")
    ref = folder / "ref"
    texts = {
        "curate": CURATE.format(chapters=chapters, mirror=DATA / "dedup" / "moby-dick-mirror.jsonl"),
        "pretrain": PRETRAIN.format(data=ref / "curate"),
        "finetune": FINETUNE.format(base=ref / "pretrain", train=sft),
        "eval": EVAL.format(pretrain=ref / "pretrain", sft=ref / "finetune", shards=ref / "curate"),
    }
    specs = {}
    for kind, text in texts.items():
        specs[kind] = folder / f"{kind}.yaml"
        specs[kind].write_text(text)
    return specs


def cli(spec: Path, out: Path, address: str, kill_at: str | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """`gristmill run SPEC --out OUT` against the test session's Ray; with ``kill_at`` armed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("GRISTMILL_KILL_AT", None)
    env.pop("GRISTMILL_KILL_PID", None)
    if kill_at:
        env["GRISTMILL_KILL_AT"] = kill_at
    cmd = [GRISTMILL, "run", str(spec), "--out", str(out), "--address", address, "--set", "ray.ship_code=false"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def must(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise AssertionError(f"gristmill exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
                             f"--- stderr\n{proc.stderr[-6000:]}")
    return proc


# ------------------------------------------------------------------------------ what must be equal


def curate_outcome(run: Path) -> dict:
    """Kept ids, rejected ids per step (with reasons), shard rows, and the manifest's totals."""
    rejected = {step: sorted(zip(t.column("doc_id").to_pylist(), t.column("reason").to_pylist()))
                for step, t in rejected_tables(run).items()}
    shards = {}
    for path in sorted((run / "shards").glob("*.parquet")):
        table = pq.read_table(path, columns=["input_ids", "doc_starts"])
        shards[path.name] = (table.column("input_ids").to_pylist(), table.column("doc_starts").to_pylist())
    shard_manifest = json.loads((run / "shards" / "manifest.json").read_text())
    return {"kept": sorted(kept_ids(run)), "rejected": rejected, "shards": shards,
            "shard_manifest": shard_manifest, "totals": manifest(run)["totals"],
            "tokenizer": (run / "tokenizer" / "tokenizer.json").read_bytes()}


def loss_curve(run: Path) -> list[dict]:
    """metrics/train.csv without the wall-clock columns."""
    with (run / "metrics" / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [{k: r[k] for k in ("step", "tokens", "loss", "lr", "grad_norm", "val_loss") if k in r} for r in rows]


def eval_outcome(run: Path) -> list[dict]:
    results = json.loads((run / "eval" / "results.json").read_text())
    return [{"label": c["label"], "tasks": {k: {m: v for m, v in t.items() if m not in ("seconds", "tokens_per_s")}
                                            for k, t in c["tasks"].items()}}
            for c in results["checkpoints"]]
