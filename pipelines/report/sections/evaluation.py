"""Evaluation (``kind: eval``): every checkpoint's result on every task from ``eval/results.json``
(format ``gristmill-eval/1``, written by :mod:`eval.results`), a comparison across checkpoints when
there are several, and a few generation samples from ``eval/samples/<checkpoint>/<task>.jsonl``.

Metrics shown are the ones the tasks report (acc, acc_norm, perplexity, bits_per_byte, tokens/s …);
``*_stderr`` values are kept in stats.json and shown next to their metric, not as columns of their own.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.report.context import RunContext
from pipelines.report.render import figure, note, table
from pipelines.report.section import Section
from pipelines.report.svg import NEUTRAL, esc, fmt_num, hbars

KEY, TITLE = "evaluation", "Evaluation"
RESULTS = "eval/results.json"  # eval.results.RESULTS_PATH
SAMPLES_PER_TASK = 3  # generation samples shown per (checkpoint, task)
SAMPLE_CHARS = 1_500  # a long completion is cut here in the page (the file has it whole)
# Columns in this order first; other metrics follow in the order the task reports them.
METRIC_ORDER = ("acc", "acc_norm", "acc_bytes", "perplexity", "bits_per_byte", "tokens_per_s")
# Metrics where lower is better (for the comparison's "best" column).
LOWER_IS_BETTER = ("perplexity", "bits_per_byte", "nll", "loss")


def _items(result: dict[str, Any]) -> int | None:
    for key in ("items", "rows", "documents"):
        if isinstance(result.get(key), int):
            return result[key]
    return None


def _samples(ctx: RunContext, rel: str | None) -> list[dict[str, Any]]:
    if not rel or not ctx.run.exists(rel):
        return []
    out = []
    for line in ctx.run.read_bytes(rel).decode("utf-8", errors="replace").splitlines():
        if len(out) >= SAMPLES_PER_TASK:
            break
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (checkpoint, task): its metrics, item count and seconds."""
    rows = []
    for checkpoint in document.get("checkpoints") or []:
        for task, result in (checkpoint.get("tasks") or {}).items():
            metrics = {k: v for k, v in (result.get("metrics") or {}).items() if isinstance(v, (int, float)) or v is None}
            rows.append({"checkpoint": checkpoint.get("label"), "step": checkpoint.get("step"), "task": task,
                         "kind": result.get("kind"), "metrics": metrics, "items": _items(result),
                         "seconds": result.get("seconds"), "samples_file": result.get("samples_file")})
    return rows


def _metric_names(rows: list[dict[str, Any]]) -> list[str]:
    seen = list(dict.fromkeys(m for r in rows for m in r["metrics"] if not m.endswith("_stderr")))
    return [m for m in METRIC_ORDER if m in seen] + [m for m in seen if m not in METRIC_ORDER]


def _cell(metrics: dict[str, Any], name: str) -> str:
    value = metrics.get(name)
    if value is None:
        return ""
    stderr = metrics.get(f"{name}_stderr")
    return fmt_num(value) + (f" ± {fmt_num(stderr)}" if isinstance(stderr, (int, float)) else "")


def _comparison(rows: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    """(task, metric) → value per checkpoint, the best checkpoint and the change first → last."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = {r["checkpoint"]: r for r in rows if r["task"] == task}
        for metric in _metric_names(list(task_rows.values())):
            values = {label: task_rows[label]["metrics"].get(metric) if label in task_rows else None for label in labels}
            known = {k: v for k, v in values.items() if isinstance(v, (int, float))}
            if len(known) < 2:
                continue
            lower = any(metric.startswith(p) for p in LOWER_IS_BETTER)
            best = (min if lower else max)(known, key=known.__getitem__)
            first, last = known[next(iter(known))], known[list(known)[-1]]
            out.append({"task": task, "metric": metric, "values": values, "best": best,
                        "lower_is_better": lower, "change": last - first})
    return out


def build(ctx: RunContext) -> Section | None:
    if not ctx.run.exists(RESULTS):
        return None
    document = ctx.run.read_json(RESULTS) or {}
    checkpoints = document.get("checkpoints") or []
    rows = _rows(document)
    labels = [c.get("label") for c in checkpoints]
    comparison = _comparison(rows, labels) if len(checkpoints) > 1 else []
    stats: dict[str, Any] = {
        "format": document.get("format"), "checkpoints": [
            {"label": c.get("label"), "step": c.get("step"), "path": c.get("path"), "model": c.get("model"),
             "seconds": c.get("seconds")} for c in checkpoints],
        "results": [{k: r[k] for k in ("checkpoint", "step", "task", "kind", "metrics", "items", "seconds")} for r in rows],
        "comparison": comparison}

    body = table(["checkpoint", "step", "arch", "parameters", "seconds"],
                 [(c.get("label"), c.get("step"), (c.get("model") or {}).get("arch"),
                   (c.get("model") or {}).get("params"), c.get("seconds")) for c in checkpoints], numeric=(1, 3, 4))
    if not rows:
        return Section(KEY, TITLE, stats, body + note("results.json holds no task results", warn=True))
    metrics = _metric_names(rows)
    body += "<h3>Results by checkpoint and task</h3>" + table(
        ["checkpoint", "task", "kind", *metrics, "items", "seconds"],
        [(r["checkpoint"], r["task"], r["kind"], *[_cell(r["metrics"], m) for m in metrics], r["items"], r["seconds"])
         for r in rows], numeric=tuple(range(3, 5 + len(metrics))))
    if comparison:
        body += "<h3>Across checkpoints</h3>" + table(
            ["task", "metric", *labels, "best", "last − first"],
            [(c["task"], c["metric"] + (" (lower is better)" if c["lower_is_better"] else ""),
              *[c["values"][label] for label in labels], c["best"], c["change"]) for c in comparison],
            numeric=tuple(range(2, 2 + len(labels))) + (3 + len(labels),))
        charts = []
        for c in comparison[:8]:  # one small bar chart per (task, metric): the checkpoints side by side
            bars = [(str(label), v) for label, v in c["values"].items() if isinstance(v, (int, float))]
            charts.append(figure(hbars(bars, NEUTRAL, value_fmt=fmt_num, title=f"{c['task']} {c['metric']}"), f"{c['task']}: {c['metric']}"))
        body += '<div class="grid">' + "".join(charts) + "</div>"
    sample_html, shown = [], 0
    for r in rows:
        for s in _samples(ctx, r["samples_file"]):
            completion = str(s.get("completion", ""))
            sample_html.append(
                f'<div class="doc"><div class="meta">{esc(r["checkpoint"])} · {esc(r["task"])}'
                f'{" · " + esc(s["tokens"]) + " tokens" if "tokens" in s else ""}</div>'
                f'<pre><b>{esc(s.get("prompt", ""))}</b>{esc(completion[:SAMPLE_CHARS])}'
                f'{"…" if len(completion) > SAMPLE_CHARS else ""}</pre></div>')
            shown += 1
    stats["samples_shown"] = shown
    if sample_html:
        body += "<h3>Generation samples</h3>" + "".join(sample_html)
    return Section(KEY, TITLE, stats, body)
