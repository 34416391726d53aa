"""Score histograms: every namespaced numeric column (``langid.score``, ``gopher.*``, ``toxicity.*``,
``length.*`` …, discovered from the schema), kept documents stacked on removed ones, with the
thresholds the spec sets drawn as dashed lines. Rows removed before a step carry nulls in its
columns, so each histogram shows exactly the documents the step scored."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.report.context import RunContext
from pipelines.report.render import figure
from pipelines.report.section import Section
from pipelines.report.svg import KEPT, REMOVED, esc, fmt_num, histogram

KEY, TITLE = "scores", "Score distributions"


def compute(ctx: RunContext) -> dict[str, Any]:
    """Column → bins, kept and removed counts, nulls, means and thresholds."""
    out: dict[str, Any] = {}
    folders = ctx.all_folders()
    for col, rng in sorted(ctx.ranges.items()):
        kept = np.zeros(len(rng.edges) - 1, np.int64)
        removed = np.zeros_like(kept)
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
                n_removed, sum_removed = n_removed + hist.n, sum_removed + hist.total
        if not present:
            continue
        out[col] = {"edges": rng.as_dict()["edges"], "log": rng.log, "integer": rng.integer,
                    "kept": kept.tolist(), "removed": removed.tolist(), "nulls": nulls,
                    "kept_n": n_kept, "removed_n": n_removed,
                    "kept_mean": sum_kept / n_kept if n_kept else None,
                    "removed_mean": sum_removed / n_removed if n_removed else None,
                    "thresholds": [t.as_dict() for t in ctx.thresholds.get(col, [])]}
    return out


def markers(thresholds: list[dict[str, Any]], prefix: str = "") -> list[tuple[float, str]]:
    sign = {"min": "≥", "max": "≤"}
    return [(t["value"], f"{prefix}{sign[t['bound']]} {fmt_num(t['value'])}") for t in thresholds]


def build(ctx: RunContext) -> Section | None:
    stats = compute(ctx)
    if not stats:
        return None
    figures = []
    for col, s in stats.items():
        svg = histogram(s["edges"], [("kept", s["kept"], KEPT), ("removed", s["removed"], REMOVED)],
                        markers=markers(s["thresholds"]), log=s["log"], integer=s["integer"], title=col)
        means = f"mean kept {fmt_num(s['kept_mean'])}, removed {fmt_num(s['removed_mean'])}"
        limits = "; ".join(f"{t['step']}.{t['field']} = {fmt_num(t['value'])}" for t in s["thresholds"])
        caption = (f"<b>{esc(col)}</b> — {s['kept_n'] + s['removed_n']:,} scored, {esc(means)}"
                   + (f"; threshold {esc(limits)}" if limits else "")
                   + (f"; {s['nulls']:,} not scored (removed earlier)" if s["nulls"] else ""))
        figures.append(figure(svg, caption_html=caption))
    legend = ('<p class="note legend"><span style="background:#2e7d32"></span>kept'
              '<span style="background:#c62828"></span>removed (by any step) · dashed line: threshold in the spec</p>')
    return Section(KEY, TITLE, stats, legend + '<div class="grid">' + "".join(figures) + "</div>")
