"""Per step, a few documents it removed and a few that survived the whole run, with that step's
scores and the reason. Samples are the rows with the smallest hash of ``doc_id`` (see
:func:`pipelines.report.scan._splitmix64`): deterministic, and uniform over the folder. Text is
truncated and HTML-escaped."""

from __future__ import annotations

import posixpath
from typing import Any

from pipelines.report.context import INGEST, RunContext
from pipelines.report.render import note
from pipelines.report.section import Section
from pipelines.report.sections.funnel import step_name
from pipelines.report.svg import esc, fmt_num
from pipelines.report.thresholds import PREFIX

KEY, TITLE = "samples", "Sample documents"
IDENTITY = ("doc_id", "url", "source", "reason", "reason_detail", "text", "text_chars")


def _step_columns(ctx: RunContext, label: str, row: dict[str, Any]) -> list[str]:
    op = next((s.op for s in ctx.steps if s.label == label), label)
    prefix = PREFIX.get(op, op) + "."
    own = [c for c in row if c.startswith(prefix)]
    if label.startswith(("exact_dedup", "minhash_dedup", "dedup")):
        own += [c for c in row if c.startswith("dedup.")]
    return own or [c for c in row if c not in IDENTITY and row[c] is not None]


def _value(v: Any) -> str:
    return fmt_num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def card(row: dict[str, Any], columns: list[str], removed: bool) -> str:
    kind = "removed" if removed else "kept"
    badge = esc(row.get("reason") or "removed") if removed else "kept"
    where = row.get("url") or (posixpath.basename(row["source"]) if row.get("source") else "")
    meta = [f'<span class="badge {kind}">{badge}</span>', f"doc {esc(row.get('doc_id'))}"]
    if where:
        meta.append(esc(where))
    if row.get("reason_detail"):
        meta.append(esc(row["reason_detail"]))
    scores = " · ".join(f"{esc(c)} = {esc(_value(row[c]))}" for c in columns if row.get(c) is not None)
    text = row.get("text")
    if text is None:
        shown = "<em>(no text)</em>"
    else:
        more = row.get("text_chars", 0) - len(text)
        shown = esc(text) + (f"<span class=\"note\"> … ({row['text_chars']:,} characters in all)</span>" if more > 0 else "")
    return (f'<div class="doc {kind}"><div class="meta">{" · ".join(meta)}</div>'
            + (f'<div class="meta">{scores}</div>' if scores else "") + f"<pre>{shown}</pre></div>")


def build(ctx: RunContext) -> Section | None:
    kept = ctx.kept().sample
    stats: dict[str, Any] = {}
    body = []
    for label in ctx.step_order:
        removed = ctx.rejected(label).sample
        if not removed:
            continue
        columns = _step_columns(ctx, label, removed[0])
        stats[label] = {"removed": [r.get("doc_id") for r in removed], "kept": [r.get("doc_id") for r in kept]}
        left = "".join(card(r, columns, True) for r in removed)
        right = "".join(card(r, columns, False) for r in kept) if label != INGEST else note("(quarantined input has no kept counterpart)")
        body.append(f"<details open><summary>{esc(step_name(label))}</summary>"
                    f'<div class="cols"><div><h3>removed</h3>{left}</div><div><h3>kept</h3>{right}</div></div></details>')
    if not body and kept:
        stats["kept"] = [r.get("doc_id") for r in kept]
        body.append('<h3>kept</h3>' + "".join(card(r, [c for c in r if c not in IDENTITY], False) for r in kept))
    if not body:
        return None
    return Section(KEY, TITLE, stats, "".join(body))
