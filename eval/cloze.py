"""Cloze scoring (LAMBADA): does the model predict the passage's last word, and how surprised is it.

* ``acc``: every token of the target is the model's greedy choice at its position (lm-eval's
  ``is_greedy``), i.e. greedy decoding from the context reproduces the target's tokens;
* ``perplexity``: ``exp(-mean over items of log p(target | context))``, lm-eval's LAMBADA
  ``perplexity`` (per item, not per token, so it is comparable with published LAMBADA figures);
* ``token_perplexity``: ``exp(-Σ log p / Σ target tokens)``, per token, for tokenizer-level analysis.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from eval.checkpoints import EvalModel
from eval.loglikelihood import score_pairs
from eval.multiple_choice import mean_and_stderr
from eval.tasks import DEFAULT_FEWSHOT_SEED, Task, item_requests


def evaluate_cloze(em: EvalModel, task: Task, num_fewshot: int = 0, batch_size: int = 16,
                   seed: int = DEFAULT_FEWSHOT_SEED) -> dict[str, Any]:
    started = time.perf_counter()
    pairs = [pair for pairs in item_requests(task, num_fewshot, seed) for pair in pairs]
    scores = score_pairs(em, pairs, batch_size)
    greedy = np.array([float(s.greedy) for s in scores])
    logprobs = np.array([s.logprob for s in scores])
    tokens = sum(s.tokens for s in scores)
    acc, acc_stderr = mean_and_stderr(greedy)
    metrics = {"acc": acc, "acc_stderr": acc_stderr, "perplexity": math.exp(-float(logprobs.mean())),
               "token_perplexity": math.exp(-float(logprobs.sum()) / tokens)}
    return {"kind": "cloze", "metrics": metrics, "items": len(task.items), "target_tokens": tokens,
            "truncated": sum(s.truncated for s in scores), "num_fewshot": num_fewshot,
            "seconds": round(time.perf_counter() - started, 3)}
