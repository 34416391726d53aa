"""Score histograms: every namespaced numeric column (``langid.score``, ``gopher.*``, ``toxicity.*``,
``length.*`` …, discovered from the schema): kept documents, those the scoring step removed and
those a later step removed, stacked, with the thresholds the spec sets drawn as dashed lines. Rows
removed before a step carry nulls in its columns, so each histogram shows exactly the documents the
step scored."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.report.context import RunContext
from pipelines.report.render import figure
from pipelines.report.section import Section
from pipelines.report.svg import KEPT, LATER, REMOVED, esc, fmt_num, histogram
from pipelines.report.thresholds import PREFIX

KEY, TITLE = "scores", "Score distributions"


def compute(ctx: RunContext) -> dict[str, Any]:
    """Column → bins, kept and removed counts, nulls, means and thresholds."""
    out: dict[str, Any] = {}
    folders = ctx.all_folders()
    for col, rng in sorted(ctx.ranges.items()):
        kept = np.zeros(len(rng.edges) - 1, np.int64)
        removed = np.zeros_like(kept)
        removed_here = np.zeros_like(kept)  # by the step that wrote the column
        owner = owning_step(ctx, col)
        nulls = n_kept = n_removed = 0
        sum_kept = sum_removed = 0.0
        present = False
        for label, stats in folders:
            hist = stats.scores.get(col)
            if hist is None:
                continue
            present = True
            nulls += hist.nulls
            if label is None:
                kept += hist.counts
                n_kept, sum_kept = n_kept + hist.n, sum_kept + hist.total
            else:
                removed += hist.counts
                if label == owner:
                    removed_here += hist.counts
                n_removed, sum_removed = n_removed + hist.n, sum_removed + hist.total
        if not present:
            continue
        out[col] = {"edges": rng.as_dict()["edges"], "log": rng.log, "integer": rng.integer,
                    "kept": kept.tolist(), "removed": removed.tolist(), "step": owner,
                    "removed_by_step": removed_here.tolist(), "nulls": nulls,
                    "kept_n": n_kept, "removed_n": n_removed,
                    "kept_mean": sum_kept / n_kept if n_kept else None,
                    "removed_mean": sum_removed / n_removed if n_removed else None,
                    "thresholds": [t.as_dict() for t in ctx.thresholds.get(col, [])]}
    return out


def owning_step(ctx: RunContext, column: str) -> str | None:
    """The step that writes ``column``: the one whose column prefix (``length`` for length_filter,
    ``gopher`` for gopher_quality, else the op name) is the column's namespace."""
    namespace = column.split(".", 1)[0]
    for step in ctx.steps:
        if PREFIX.get(step.op, step.op) == namespace:
            return step.label
    return None


def markers(thresholds: list[dict[str, Any]], prefix: str = "") -> list[tuple[float, str]]:
    sign = {"min": "≥", "max": "≤"}
    return [(t["value"], f"{prefix}{sign[t['bound']]} {fmt_num(t['value'])}") for t in thresholds]


def build(ctx: RunContext) -> Section | None:
    stats = compute(ctx)
    if not stats:
        return None
    figures = []
    for col, s in stats.items():
        later = [r - h for r, h in zip(s["removed"], s["removed_by_step"])]
        series = [("kept", s["kept"], KEPT)]
        if s["step"]:
            series += [(f"removed by {s['step']}", s["removed_by_step"], REMOVED), ("removed by a later step", later, LATER)]
        else:
            series.append(("removed", s["removed"], REMOVED))
        svg = histogram(s["edges"], series,
                        markers=markers(s["thresholds"]), log=s["log"], integer=s["integer"], title=col)
        means = f"mean kept {fmt_num(s['kept_mean'])}, removed {fmt_num(s['removed_mean'])}"
        limits = "; ".join(f"{t['step']}.{t['field']} = {fmt_num(t['value'])}" for t in s["thresholds"])
        caption = (f"<b>{esc(col)}</b> — {s['kept_n'] + s['removed_n']:,} scored, {esc(means)}"
                   + (f"; threshold {esc(limits)}" if limits else "")
                   + (f"; {s['nulls']:,} not scored (removed earlier)" if s["nulls"] else ""))
        figures.append(figure(svg, caption_html=caption))
    legend = (f'<p class="note legend"><span style="background:{KEPT}"></span>kept'
              f'<span style="background:{REMOVED}"></span>removed by the step that computed the score'
              f'<span style="background:{LATER}"></span>removed by a later step · dashed line: threshold in the spec</p>')
    return Section(KEY, TITLE, stats, legend + '<div class="grid">' + "".join(figures) + "</div>")
