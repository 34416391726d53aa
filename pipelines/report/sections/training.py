"""Training: loss curves from ``metrics/train.csv`` (columns step, tokens, loss, lr, grad_norm,
tokens_per_s, mfu; val_loss and val_ppl on eval steps)."""

from __future__ import annotations

import math
from typing import Any

import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.report.context import RunContext
from pipelines.report.render import figure, table
from pipelines.report.section import Section
from pipelines.report.svg import RUN_A, RUN_B, fmt_num, line_chart

KEY, TITLE = "training", "Training"
MAX_POINTS = 2_000  # a long run's curve is thinned to this many points (every k-th step)


def _column(t, name: str) -> list[float | None]:
    if name not in t.column_names:
        return []
    return pc.cast(t.column(name), "float64", safe=False).to_pylist()


def build(ctx: RunContext) -> Section | None:
    if not ctx.run.exists("metrics/train.csv"):
        return None
    with ctx.run.fs.open_input_stream(ctx.run.path("metrics/train.csv")) as f:
        t = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    if "step" not in t.column_names or not t.num_rows:
        return None
    steps = _column(t, "step")
    loss, val = _column(t, "loss"), _column(t, "val_loss")
    stride = max(1, len(steps) // MAX_POINTS)
    train_pts = [(s, v) for s, v in zip(steps[::stride], loss[::stride]) if v is not None and math.isfinite(v)]
    val_pts = [(s, v) for s, v in zip(steps, val) if v is not None and math.isfinite(v)] if val else []
    last: dict[str, Any] = {}
    for name in ("step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
        values = [v for v in _column(t, name) if v is not None]
        if values:
            last[name] = values[-1]
    if val_pts:
        last["val_loss"] = val_pts[-1][1]
        ppl = [v for v in _column(t, "val_ppl") if v is not None]
        if ppl:
            last["val_ppl"] = ppl[-1]
    stats = {"rows": t.num_rows, "final": last, "best_val_loss": min(v for _, v in val_pts) if val_pts else None,
             "train_points": len(train_pts), "val_points": len(val_pts)}
    series = [("train loss", [p[0] for p in train_pts], [p[1] for p in train_pts], RUN_A)]
    if val_pts:
        series.append(("validation loss", [p[0] for p in val_pts], [p[1] for p in val_pts], RUN_B))
    body = figure(line_chart(series, y_label="loss", title="loss"), "Loss by optimizer step")
    body += table([], [(k, fmt_num(v)) for k, v in last.items()], numeric=(1,), cls="kv")
    return Section(KEY, TITLE, stats, body)
