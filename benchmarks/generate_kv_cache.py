"""Generation throughput: KV-cache decoding vs recomputing the sequence, and vs `transformers`.

    python -m benchmarks.generate_kv_cache [--new-tokens 128] [--prompt-len 32] [--threads 1]

The `tiny` preset (Llama blocks, 2.9M parameters, random weights), greedy decoding, fp32 on CPU, at
batch 1 and 8. Three ways on the same weights, interleaved, best of ``--repeats``:

* ``cache``: ``training.generate.generate_tokens`` (preallocated per-layer KV cache);
* ``no_cache``: the same function with ``use_kv_cache=False`` (the whole sequence every step);
* ``hf``: ``transformers``' ``generate`` (its own KV cache) on our HF export of the model — the peer.

All three must produce the same tokens (checked). Prints JSON: tokens/s (new tokens across the batch
per second) and the ratios cache / no_cache and cache / hf.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import machine
from training.checkpoint import save_model
from training.generate import SamplingParams, generate_tokens
from training.model import ModelConfig, Transformer


def _export_for_hf(model: Transformer, folder: Path):
    """Our HF export of ``model`` (with a trivial tokenizer) loaded by transformers, or None."""
    try:
        import transformers
    except ImportError:
        return None
    from tokenizers import Tokenizer, models

    from training.export import export_hf

    ckpt = folder / "ckpt"
    save_model(ckpt, model)
    vocab = {f"t{i}": i for i in range(model.config.vocab_size)}
    Tokenizer(models.WordLevel(vocab, unk_token="t0")).save(str(ckpt / "tokenizer.json"))
    out = export_hf(ckpt, folder / "hf")
    return transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()


def _best_rate(fn, new_tokens: int, repeats: int) -> tuple[float, list]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return new_tokens / best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both sides)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny")
    model = Transformer(config).eval()
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0)

    with tempfile.TemporaryDirectory() as tmp:
        hf = _export_for_hf(model, Path(tmp))
        rows = []
        for batch in (int(b) for b in args.batches.split(",")):
            prompts = torch.randint(0, config.vocab_size, (batch, args.prompt_len))
            prompt_lists = prompts.tolist()
            total = batch * args.new_tokens
            rates, outputs = {}, {}
            for _ in range(2):  # warm-up pass, then the measured pass (best of repeats)
                rates["cache"], outputs["cache"] = _best_rate(
                    lambda: [r.tokens for r in generate_tokens(model, prompt_lists, params)], total, args.repeats)
                rates["no_cache"], outputs["no_cache"] = _best_rate(
                    lambda: [r.tokens for r in generate_tokens(model, prompt_lists, params, use_kv_cache=False)],
                    total, args.repeats)
                if hf is not None:
                    def hf_generate():
                        with torch.inference_mode():
                            out = hf.generate(prompts, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                              do_sample=False, eos_token_id=None, pad_token_id=0)
                        return out[:, args.prompt_len:].tolist()

                    rates["hf"], outputs["hf"] = _best_rate(hf_generate, total, args.repeats)
            same = all(outputs[k] == outputs["cache"] for k in outputs)
            row = {"batch": batch, "tokens_per_s": {k: round(v, 1) for k, v in rates.items()},
                   "cache_over_no_cache": round(rates["cache"] / rates["no_cache"], 2),
                   "same_tokens": same}
            if "hf" in rates:
                row["cache_over_hf"] = round(rates["cache"] / rates["hf"], 2)
            rows.append(row)

    print(json.dumps({
        "model": "tiny", "params": config.num_params(), "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens, "threads": args.threads, "dtype": "float32",
        "results": rows, "machine": machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
