"""GPU pretraining throughput: the ``gpt2-124m`` preset on one GPU, bf16 autocast + torch.compile +
flash attention (SDPA's causal fast path), fused AdamW, for ~200 steps; prints tokens/s and MFU.

Self-contained: random token ids (throughput does not depend on the tokens), no downloads, no Ray,
under 5 minutes on an H100 (compile ≈ 1 min). Same model class, loss and optimizer groups as
``kind: pretrain``. MFU = flops_per_token (6N + 12·L·H·Q·T, PaLM appendix B) × tokens/s / peak
(``training.metrics.PEAK_FLOPS``: H100 SXM bf16 dense 989 TFLOP/s). Steady state: the first
``--warmup`` steps (compilation, allocator warm-up) are excluded.

    .venv/bin/python -m benchmarks.gpu_pretrain_gpt2               # on a GPU machine
    .venv/bin/python -m benchmarks.gpu_pretrain_gpt2 --smoke       # a few tiny CPU steps (checks the script)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from training.lightning_module import next_token_loss
from training.metrics import mfu, peak_flops
from training.model import ModelConfig, Transformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help="steps excluded from the timing")
    parser.add_argument("--micro-batch", type=int, default=16, help="rows of 1024 tokens per step")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 6 steps, CPU allowed, no compile")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise SystemExit("no GPU here: run with --smoke to check the script on a CPU")
    device = torch.device("cuda" if cuda else "cpu")
    if args.smoke:
        config = ModelConfig.preset("gpt2-124m", n_layer=2, d_model=64, n_head=4, vocab_size=512, max_seq_len=64)
        args.steps, args.warmup, args.micro_batch, args.no_compile = 6, 2, 4, True
    else:
        config = ModelConfig.preset("gpt2-124m")
    seq = config.max_seq_len
    torch.manual_seed(0)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = Transformer(config).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=6e-4, betas=(0.9, 0.95), fused=cuda or None)
    forward = model if args.no_compile else torch.compile(model)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    data = torch.randint(0, config.vocab_size, (args.micro_batch, seq + 1), device=device)

    def step() -> float:
        with autocast:
            loss = next_token_loss(forward(data[:, :-1]), data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps - args.warmup):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens_per_s = (args.steps - args.warmup) * args.micro_batch * seq / seconds
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_flops(name if cuda else None, "bf16-mixed")
    fpt = config.flops_per_token(seq)
    print(json.dumps({
        "benchmark": "gpu_pretrain_gpt2", "device": name, "smoke": args.smoke, "params": config.num_params(),
        "steps_timed": args.steps - args.warmup, "micro_batch": args.micro_batch, "seq_len": seq,
        "compile": not args.no_compile, "tokens_per_s": round(tokens_per_s, 1),
        "flops_per_token": fpt, "peak_flops": peak,
        "mfu": None if peak is None else round(mfu(fpt, tokens_per_s, peak, 1), 4),
        "final_loss": round(float(loss), 4), "goal_mfu": 0.45,
    }, indent=2))


if __name__ == "__main__":
    main()
