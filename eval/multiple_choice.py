"""Multiple-choice scoring: each choice's log-likelihood after the prompt, the highest wins.

Metrics, as lm-eval computes them (``lm_eval/api/task.py``, ``ConfigurableTask.process_results``):

* ``acc``: argmax of the summed log-likelihood of each choice;
* ``acc_norm``: argmax of log-likelihood divided by the choice's length in **characters**
  (``len(choice)``, the delimiter not counted). lm-eval calls this length normalisation; it is what
  published ``acc_norm`` figures (ARC, HellaSwag, PIQA) mean, so we keep its exact definition;
* ``acc_bytes``: the same with the UTF-8 byte length (lm-eval's ``acc_bytes``; equal to ``acc_norm``
  on ASCII text). Normalising by characters or bytes rather than tokens keeps the metric comparable
  across tokenizers (Gao 2021, "Multiple Choice Normalization in LM Evaluation").

``*_stderr`` is the standard error of the mean over items (sample standard deviation / √n), lm-eval's
``mean_stderr``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from eval.checkpoints import EvalModel
from eval.loglikelihood import Score, score_pairs
from eval.tasks import DEFAULT_FEWSHOT_SEED, MultipleChoiceItem, Task, item_requests


def predictions(loglikelihoods: np.ndarray, choices: tuple[str, ...]) -> dict[str, int]:
    """Chosen index under each metric for one item."""
    chars = np.array([len(c) for c in choices], dtype=np.float64)
    nbytes = np.array([len(c.encode("utf-8")) for c in choices], dtype=np.float64)
    return {"acc": int(np.argmax(loglikelihoods)), "acc_norm": int(np.argmax(loglikelihoods / chars)),
            "acc_bytes": int(np.argmax(loglikelihoods / nbytes))}


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    stderr = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return mean, stderr


def score_items(task: Task, scores: list[Score]) -> dict[str, np.ndarray]:
    """Per-item correctness (0/1) under each metric, from the flat scores of every choice."""
    correct: dict[str, list[float]] = {"acc": [], "acc_norm": [], "acc_bytes": []}
    offset = 0
    for item in task.items:
        assert isinstance(item, MultipleChoiceItem)
        n = len(item.choices)
        lls = np.array([s.logprob for s in scores[offset:offset + n]])
        offset += n
        for metric, chosen in predictions(lls, item.choices).items():
            correct[metric].append(float(chosen == item.gold))
    return {k: np.array(v) for k, v in correct.items()}


def evaluate_multiple_choice(em: EvalModel, task: Task, num_fewshot: int = 0, batch_size: int = 16,
                             seed: int = DEFAULT_FEWSHOT_SEED) -> dict[str, Any]:
    started = time.perf_counter()
    requests = item_requests(task, num_fewshot, seed)
    scores = score_pairs(em, [pair for pairs in requests for pair in pairs], batch_size)
    correct = score_items(task, scores)
    metrics: dict[str, float] = {}
    for name, values in correct.items():
        metrics[name], metrics[f"{name}_stderr"] = mean_and_stderr(values)
    return {"kind": "multiple_choice", "metrics": metrics, "items": len(task.items), "requests": len(scores),
            "truncated": sum(s.truncated for s in scores), "num_fewshot": num_fewshot,
            "seconds": round(time.perf_counter() - started, 3)}
