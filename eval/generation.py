"""Generation samples for a prompt file, through the KV-cache decoder (``training.generate``).

A prompt file is JSONL with a ``prompt`` field per line, or plain text with one prompt per line
(``.txt``); blank lines are skipped. Prompts are generated ``batch_size`` at a time (left-padded, so
each row decodes as it would alone).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from eval.checkpoints import EvalModel
from training.generate import SamplingParams, generate_text


def read_prompts(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"prompts file {path} not found")
    prompts = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if file.suffix in (".jsonl", ".json"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
                if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                    raise ValueError(f"{path}:{number}: each line needs a string field 'prompt'")
                prompts.append(record["prompt"])
            else:
                prompts.append(line.rstrip("\n"))
    if not prompts:
        raise ValueError(f"prompts file {path} holds no prompts")
    return prompts


def generate_samples(em: EvalModel, prompts: list[str], params: SamplingParams, batch_size: int = 8,
                     stop: list[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary with tokens/s, one sample record per prompt)."""
    started = time.perf_counter()
    samples = []
    for i in range(0, len(prompts), batch_size):
        for c in generate_text(em.model, em.tokenizer, prompts[i:i + batch_size], params, stop=stop or ()):
            samples.append({"prompt": c.prompt, "completion": c.text, "tokens": len(c.tokens),
                            "finish_reason": c.finish_reason})
    seconds = time.perf_counter() - started
    tokens = sum(s["tokens"] for s in samples)
    summary = {"kind": "generate", "metrics": {"tokens_per_s": tokens / seconds if seconds else float("nan"),
                                                "mean_tokens": tokens / len(samples)},
               "items": len(samples), "tokens": tokens, "seconds": round(seconds, 3)}
    return summary, samples
