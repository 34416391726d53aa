"""The funnel: documents and characters in / removed / out per step, re-derived from the Parquet
files (kept rows in ``data/``, each step's removed rows in ``rejected/<label>/``, unreadable input in
``rejected/_ingest/``). Each step's input is what it kept plus what it removed; what it kept is the
next step's input; the last step's output is ``data/``."""

from __future__ import annotations

from typing import Any

from pipelines.report.context import INGEST, RunContext
from pipelines.report.render import figure, note, table
from pipelines.report.section import Section
from pipelines.report.svg import funnel as funnel_chart

KEY, TITLE = "funnel", "Funnel"


def step_name(label: str) -> str:
    return "ingest (quarantined)" if label == INGEST else label


def compute(ctx: RunContext) -> dict[str, Any] | None:
    if not ctx.files("data") and not ctx.run.exists("rejected"):
        return None
    kept = ctx.kept()
    out_docs, out_chars = kept.rows, kept.chars
    steps = []
    for label in reversed(ctx.step_order):
        rej = ctx.rejected(label)
        steps.append({"step": label, "in": out_docs + rej.rows, "rejected": rej.rows, "out": out_docs,
                      "in_chars": out_chars + rej.chars, "rejected_chars": rej.chars, "out_chars": out_chars})
        out_docs, out_chars = out_docs + rej.rows, out_chars + rej.chars
    steps.reverse()
    rejected = {s["step"]: s["rejected"] for s in steps if s["step"] != INGEST}
    stats = {"read": out_docs, "kept": kept.rows, "kept_chars": kept.chars, "rejected": rejected,
             "quarantined": next((s["rejected"] for s in steps if s["step"] == INGEST), 0), "steps": steps}
    stats["manifest_agrees"] = _agrees(ctx.manifest.get("totals") or {}, stats)
    return stats


def _agrees(totals: dict[str, Any], stats: dict[str, Any]) -> bool | None:
    """Does the manifest (counted by the runner while writing) match the files (counted now)?"""
    if not totals:
        return None
    return (totals.get("read") == stats["read"] and totals.get("kept") == stats["kept"]
            and totals.get("quarantined", 0) == stats["quarantined"]
            and {k: v for k, v in (totals.get("rejected") or {}).items() if v} == {k: v for k, v in stats["rejected"].items() if v})


def build(ctx: RunContext) -> Section | None:
    stats = compute(ctx)
    if stats is None:
        return None
    rows = [(step_name(s["step"]), s["in"], s["out"]) for s in stats["steps"]]
    chart = funnel_chart(rows)
    read = stats["read"]
    body = [figure(chart, caption_html=f"<b>{stats['kept']:,}</b> of {read:,} documents kept "
                                       f"({stats['kept'] / read:.1%})" if read else "no documents")]
    body.append(table(
        ["step", "docs in", "removed", "docs out", "removed %", "chars in", "chars removed", "chars out"],
        [(step_name(s["step"]), s["in"], s["rejected"], s["out"],
          f"{s['rejected'] / s['in']:.2%}" if s["in"] else "–", s["in_chars"], s["rejected_chars"], s["out_chars"])
         for s in stats["steps"]], numeric=range(1, 8)))
    body.append(note("Counted from the Parquet files: documents read = kept + removed by every step + "
                     "quarantined. Characters are of the text as each step wrote it (steps such as "
                     "c4_quality rewrite text)."))
    if stats["manifest_agrees"] is False:
        body.append(note("These counts differ from manifest.json: files were changed or removed after the run.",
                         warn=True))
    return Section(KEY, TITLE, stats, "".join(body))
