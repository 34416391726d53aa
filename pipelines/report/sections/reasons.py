"""Why documents were removed: the ``reason`` column of each ``rejected/<step>/`` folder."""

from __future__ import annotations

from pipelines.report.context import RunContext
from pipelines.report.render import figure, pct, table
from pipelines.report.section import Section
from pipelines.report.sections.funnel import step_name
from pipelines.report.svg import REMOVED, esc, hbars

KEY, TITLE = "reasons", "Rejection reasons"
TOP = 12


def build(ctx: RunContext) -> Section | None:
    stats, body = {}, []
    for label in ctx.step_order:
        rej = ctx.rejected(label)
        if not rej.rows:
            continue
        reasons = dict(sorted(rej.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        stats[label] = reasons
        items = list(reasons.items())
        body.append(f"<h3>{esc(step_name(label))} — {rej.rows:,} removed</h3>")
        body.append(figure(hbars(items[:TOP], REMOVED, title=f"reasons of {label}")))
        if len(items) > TOP:
            body.append(table(["reason", "documents", "share"], [(r, n, pct(n, rej.rows)) for r, n in items],
                              numeric=(1, 2)))
    if not stats:
        return None
    return Section(KEY, TITLE, stats, "".join(body))
