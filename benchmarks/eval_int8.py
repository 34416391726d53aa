"""int8 dynamic quantisation vs fp32: model size, generation tokens/s, perplexity change.

    python -m benchmarks.eval_int8 [--train-steps 150] [--threads 1]

The `tiny` preset (Llama blocks, 2.9M parameters) with a byte-level BPE of 8,192 tokens, trained for
``--train-steps`` AdamW steps (plain PyTorch, batch 16 × 128 tokens) on the first 1 MB of the shipped
Shakespeare so the weights are not random; perplexity is measured on the last 50 KB, which training
never saw. int8 is ``eval.quantize.quantize_int8`` (``torch.ao.quantization.quantize_dynamic`` on
every Linear). Generation is ``training.generate.generate_tokens`` with the KV cache, greedy,
32-token prompts, 64 new tokens, batch 1 and 8, best of 3 after a warm-up; fp32 on CPU, ``--threads``
torch threads for both. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import DATA, machine
from curation.tokenize.train import EOS, TokenizerTrainConfig, for_documents, train_bpe
from eval.checkpoints import EvalModel
from eval.perplexity import text_perplexity
from eval.quantize import quantize_int8, serialized_size
from training.generate import SamplingParams, generate_tokens
from training.model import ModelConfig, Transformer

HELD_OUT_CHARS = 50_000


def train(model: Transformer, ids: list[int], steps: int) -> None:
    width = 129
    data = torch.tensor(ids[: len(ids) // width * width]).view(-1, width)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    model.train()
    for _ in range(steps):
        rows = data[torch.randint(len(data), (16,), generator=generator)]
        logits = model(rows[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def tokens_per_s(model, prompts: list[list[int]], new_tokens: int, repeats: int = 3) -> tuple[float, list]:
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0)
    generate_tokens(model, prompts, params)  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = [r.tokens for r in generate_tokens(model, prompts, params)]
        best = min(best, time.perf_counter() - start)
    return len(prompts) * new_tokens / best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = (DATA / "text" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    train_text, held_out = text[:-HELD_OUT_CHARS][:1_000_000], text[-HELD_OUT_CHARS:]
    tokenizer = for_documents(train_bpe([train_text[i:i + 5000] for i in range(0, len(train_text), 5000)],
                                        TokenizerTrainConfig(vocab_size=8192)))
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", vocab_size=8192)
    model = Transformer(config)
    started = time.perf_counter()
    train(model, [tokenizer.token_to_id(EOS)] + tokenizer.encode(train_text, add_special_tokens=False).ids,
          args.train_steps)
    train_s = time.perf_counter() - started
    int8 = quantize_int8(model)

    fp32_em, int8_em = EvalModel(model, tokenizer, config, "<fp32>"), EvalModel(int8, tokenizer, config, "<int8>")
    ppl = {name: text_perplexity(em, [held_out], batch_size=16)["metrics"]
           for name, em in (("fp32", fp32_em), ("int8", int8_em))}
    held_ids = tokenizer.encode(held_out, add_special_tokens=False).ids
    speed, same = {}, {}
    for batch in (1, 8):
        prompts = [held_ids[i * 200:i * 200 + 32] for i in range(batch)]
        rate_fp32, out_fp32 = tokens_per_s(model, prompts, args.new_tokens)
        rate_int8, out_int8 = tokens_per_s(int8, prompts, args.new_tokens)
        speed[batch] = {"fp32": round(rate_fp32, 1), "int8": round(rate_int8, 1),
                        "int8_over_fp32": round(rate_int8 / rate_fp32, 2)}
        same[batch] = sum(a == b for a, b in zip(out_fp32, out_int8))
    sizes = {"fp32": serialized_size(model), "int8": serialized_size(int8)}
    print(json.dumps({
        "model": "tiny", "params": config.num_params(), "train_steps": args.train_steps, "train_s": round(train_s, 1),
        "threads": args.threads,
        "size_bytes": {**sizes, "int8_over_fp32": round(sizes["int8"] / sizes["fp32"], 3)},
        "held_out_perplexity": {k: round(v["perplexity"], 3) for k, v in ppl.items()},
        "held_out_bits_per_byte": {k: round(v["bits_per_byte"], 4) for k, v in ppl.items()},
        "perplexity_change": round(ppl["int8"]["perplexity"] / ppl["fp32"]["perplexity"] - 1, 5),
        "generation_tokens_per_s": speed, "identical_greedy_rows": same,
        "machine": machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
