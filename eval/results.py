"""``<run>/eval/results.json``: every checkpoint's result on every task, for people and the report.

Layout (``format: gristmill-eval/1``)::

    {"format": ..., "name": run name, "created": ISO time,
     "checkpoints": [{"label": "step-000200", "path": ..., "step": 200,
                      "model": {"arch": ..., "params": ...},
                      "tasks": {"arc_easy": {"kind": "multiple_choice", "metrics": {"acc": ..., ...},
                                             "items": 200, "seconds": 3.1, ...},
                                "perplexity_shards": {...}, "generate": {...}},
                      "seconds": ...}]}

Every task result carries ``kind``, ``metrics`` (name → number), an item count (``items``, or
``rows`` / ``documents`` for perplexity) and ``seconds``. :func:`metric_rows` flattens it into one
row per (checkpoint, task, metric) for tables and comparisons across checkpoints.
"""

from __future__ import annotations

import json
import math
from typing import Any

RESULTS_FORMAT = "gristmill-eval/1"
RESULTS_PATH = "eval/results.json"


def _finite(value: Any) -> Any:
    """JSON has no NaN: a metric that is undefined (the stderr of one item) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def results_document(name: str, created: str, checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return _finite({"format": RESULTS_FORMAT, "name": name, "created": created, "checkpoints": checkpoints})


def dumps(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode()


def metric_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for checkpoint in document.get("checkpoints", []):
        for task, result in checkpoint.get("tasks", {}).items():
            for metric, value in result.get("metrics", {}).items():
                rows.append({"checkpoint": checkpoint["label"], "task": task, "metric": metric, "value": value})
    return rows
