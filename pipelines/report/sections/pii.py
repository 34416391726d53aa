"""PII found and redacted, by type: the ``pii.*`` count columns the ``pii`` op writes."""

from __future__ import annotations

from pipelines.report.context import RunContext
from pipelines.report.render import figure, table
from pipelines.report.section import Section
from pipelines.report.svg import NEUTRAL, hbars

KEY, TITLE = "pii", "PII"


def build(ctx: RunContext) -> Section | None:
    totals: dict[str, dict[str, int]] = {}
    kept = ctx.kept().pii
    for _, s in ctx.all_folders():
        for col, c in s.pii.items():
            t = totals.setdefault(col, {"total": 0, "documents": 0})
            t["total"] += c["total"]
            t["documents"] += c["documents"]
    if not totals:
        return None
    stats = {col.split(".", 1)[1]: {"replacements": t["total"], "documents": t["documents"],
                                   "replacements_kept": kept.get(col, {}).get("total", 0),
                                   "documents_kept": kept.get(col, {}).get("documents", 0)}
             for col, t in sorted(totals.items())}
    body = figure(hbars([(k, v["replacements"]) for k, v in stats.items()], NEUTRAL, label_w=160, title="PII by type"),
                  "Replacements by type over every document the pii step saw (kept and removed later)")
    body += table(["type", "replacements", "documents", "replacements in kept", "kept documents with it"],
                  [(k, v["replacements"], v["documents"], v["replacements_kept"], v["documents_kept"])
                   for k, v in stats.items()], numeric=(1, 2, 3, 4))
    return Section(KEY, TITLE, stats, body)
