"""LoRA vs full fine-tuning on the `tiny` preset on CPU: trainable parameters, peak memory, step time;
and DPO steps/s (against an SFT step on the same rows). One run each.

Every configuration runs in its own child process (one torch thread), so each peak RSS is that
configuration's own. Memory is reported two ways: the child's peak RSS, and the peak above the RSS
after the model is built and its rows are in memory (what training adds: gradients, optimizer state,
activations). Step time: the median wall time of optimizer steps 6..N (the first five warm up).

The model is the `tiny` preset (llama blocks, 4 layers, d=128, 4 heads, seq 256) with a 2,048-token
BPE trained on shipped Shakespeare; rows are the shipped instruction / preference pairs
(data/instruct/), rendered with the default chat template, packed to 257 tokens. The steps are the
fine-tuning modules' own ``training_step`` with their AdamW groups and clipping, in a plain loop
(Lightning and Ray Train overhead is measured by benchmarks/pretrain_cpu.py).

    .venv/bin/python -m benchmarks.finetune_lora_vs_full [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, machine

MICRO = 8
WARM = 5
WIDTH = 257


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one(kind: str, steps: int, base: str) -> dict:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))
    from tokenizers import Tokenizer

    from tests.finetune_support import PREF_TRAIN, SFT_TRAIN, preference_tensors, records, sft_rows
    from training.checkpoint import read_model_config
    from training.finetune.lora import LoRAConfig, trainable_parameters
    from training.finetune.modules import DPOModule, SFTModule
    from training.lightning_module import OptimConfig, ScheduleConfig

    tok = Tokenizer.from_file(str(Path(base) / "tokenizer.json"))
    config, _ = read_model_config(base)
    optim, schedule = OptimConfig(lr=1e-4, weight_decay=0.0), ScheduleConfig(kind="constant")
    torch.manual_seed(0)
    if kind == "dpo":
        rows = preference_tensors(tok, records(PREF_TRAIN, 600), WIDTH)
        module = DPOModule(config, optim, schedule, steps, base, beta=0.1)
    else:
        rows = sft_rows(tok, records(SFT_TRAIN, 900), WIDTH)
        lora = LoRAConfig(rank=8, alpha=16.0, dropout=0.05) if kind == "lora" else None
        module = SFTModule(config, optim, schedule, steps, True, base, lora)
    n = rows["input_ids"].shape[0]
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    rss_ready = _rss_mb()
    times = []
    for step in range(steps):
        lo = (step * MICRO) % (n - MICRO)
        batch = {k: v[lo:lo + MICRO] for k, v in rows.items()}
        start = time.perf_counter()
        loss = module.training_step(batch, step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # What scales with the trainable parameters: AdamW's two moments (+ the gradients, freed here by
    # zero_grad but held during each step), and what a checkpoint must store.
    state_bytes = sum(t.numel() * t.element_size() for st in optimizer.state.values() for t in st.values()
                      if torch.is_tensor(t) and t.dim() > 0)
    grad_bytes = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    with tempfile.TemporaryDirectory() as ckpt:
        if hasattr(module, "save_weights"):
            module.save_weights(ckpt, {})
        else:
            from training.checkpoint import save_model

            save_model(ckpt, module.model, config)
        checkpoint_mb = sum(f.stat().st_size for f in Path(ckpt).iterdir()) / 2**20
    step_s = statistics.median(times[WARM:])
    return {"kind": kind, "params": config.num_params(), "trainable": trainable_parameters(module.model),
            "step_s": round(step_s, 4), "steps_per_s": round(1 / step_s, 2),
            "tokens_per_s": round(MICRO * (WIDTH - 1) / step_s), "peak_rss_mb": round(peak, 1),
            "training_mb": round(peak - rss_ready, 1), "optimizer_and_grad_mb": round((state_bytes + grad_bytes) / 2**20, 2),
            "checkpoint_mb": round(checkpoint_mb, 2), "rows": n, "steps": steps}


def make_base(folder: Path) -> None:
    import torch

    sys.path.insert(0, str(REPO))
    from tests.tiny_lm import train_tokenizer
    from training.checkpoint import save_model
    from training.model import ModelConfig, Transformer

    tok = train_tokenizer(vocab_size=2048, max_chars=300_000)
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", vocab_size=tok.get_vocab_size())
    save_model(folder, Transformer(config), config)
    tok.save(str(folder / "tokenizer.json"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--one", choices=["full", "lora", "sft", "dpo"])
    parser.add_argument("--base")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one("full" if args.one == "sft" else args.one, args.steps, args.base)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        make_base(base)
        results = {}
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for kind in ("full", "lora", "dpo"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.finetune_lora_vs_full", "--one", kind, "--steps",
                                  str(args.steps), "--base", str(base)], capture_output=True, text=True, cwd=REPO,
                                 env=env, check=True)
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    full, lora, dpo = results["full"], results["lora"], results["dpo"]
    report = {
        "machine": machine(), "micro_batch": MICRO, "seq_len": WIDTH - 1, **results,
        "lora_vs_full": {"trainable_ratio": round(lora["trainable"] / full["trainable"], 4),
                         "step_time_ratio": round(lora["step_s"] / full["step_s"], 3),
                         "training_memory_ratio": round(lora["training_mb"] / max(full["training_mb"], 1e-9), 3),
                         "optimizer_and_grad_ratio": round(lora["optimizer_and_grad_mb"] / full["optimizer_and_grad_mb"], 4),
                         "checkpoint_ratio": round(lora["checkpoint_mb"] / max(full["checkpoint_mb"], 1e-9), 4)},
        "dpo_vs_sft_step_time": round(dpo["step_s"] / full["step_s"], 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
