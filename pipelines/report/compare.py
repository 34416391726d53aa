"""``gristmill report RUN_A --compare RUN_B``: two runs side by side — what changed in their specs,
their funnels, and every score distribution on shared bins with both runs' thresholds — so a user
sees what a threshold change did. Written to ``RUN_A/report/compare-<B>.html`` (and ``.json``)
unless ``--out`` names another file."""

from __future__ import annotations

import json
import posixpath
import re
import time
from dataclasses import dataclass
from typing import Any

from pipelines.report.context import RunContext
from pipelines.report.render import figure, page, pct, table
from pipelines.report.scan import merge_ranges
from pipelines.report.section import Section
from pipelines.report.sections import funnel, scores
from pipelines.report.svg import RUN_A, RUN_B, esc, fmt_num, histogram
from pipelines.rundir import open_filesystem, write_atomic


@dataclass
class Comparison:
    html_path: str
    stats_path: str
    stats: dict[str, Any]


def default_name(location_b: str) -> str:
    base = posixpath.basename(location_b.rstrip("/")) or "run"
    return "compare-" + re.sub(r"[^A-Za-z0-9._-]+", "_", base)


def spec_changes(a: RunContext, b: RunContext) -> list[dict[str, Any]]:
    """Step config fields whose values differ, plus steps only one run has."""
    steps_a = {s.label: s.config for s in a.steps}
    steps_b = {s.label: s.config for s in b.steps}
    out = []
    for label in list(steps_a) + [s for s in steps_b if s not in steps_a]:
        if label not in steps_b or label not in steps_a:
            out.append({"step": label, "field": "(step)", "a": "present" if label in steps_a else "absent",
                        "b": "present" if label in steps_b else "absent"})
            continue
        for key in sorted(set(steps_a[label]) | set(steps_b[label])):
            va, vb = steps_a[label].get(key), steps_b[label].get(key)
            if va != vb:
                out.append({"step": label, "field": key, "a": va, "b": vb})
    return out


def _funnel_section(fa: dict[str, Any], fb: dict[str, Any], a: str, b: str) -> Section:
    steps_a = {s["step"]: s for s in fa["steps"]}
    steps_b = {s["step"]: s for s in fb["steps"]}
    order = list(steps_a) + [s for s in steps_b if s not in steps_a]
    rows = []
    for label in order:
        sa, sb = steps_a.get(label), steps_b.get(label)
        rows.append((funnel.step_name(label),
                     sa["in"] if sa else None, sa["rejected"] if sa else None,
                     f"{sa['rejected'] / sa['in']:.2%}" if sa and sa["in"] else "–",
                     sb["in"] if sb else None, sb["rejected"] if sb else None,
                     f"{sb['rejected'] / sb['in']:.2%}" if sb and sb["in"] else "–",
                     (sb["rejected"] if sb else 0) - (sa["rejected"] if sa else 0)))
    charts = (f'<div class="cols"><div><h3 style="color:{RUN_A}">A: {esc(a)}</h3>'
              + figure(funnel.funnel_chart([(funnel.step_name(s["step"]), s["in"], s["out"]) for s in fa["steps"]], width=560))
              + f'</div><div><h3 style="color:{RUN_B}">B: {esc(b)}</h3>'
              + figure(funnel.funnel_chart([(funnel.step_name(s["step"]), s["in"], s["out"]) for s in fb["steps"]], width=560))
              + "</div></div>")
    tbl = table(["step", "A in", "A removed", "A removed %", "B in", "B removed", "B removed %", "B − A removed"],
                rows, numeric=range(1, 8))
    head = (f"<p>kept: A <b>{fa['kept']:,}</b> of {fa['read']:,} ({pct(fa['kept'], fa['read'])}), "
            f"B <b>{fb['kept']:,}</b> of {fb['read']:,} ({pct(fb['kept'], fb['read'])}); B − A: "
            f"{fb['kept'] - fa['kept']:+,} documents, {fb['kept_chars'] - fa['kept_chars']:+,} characters</p>")
    return Section("funnel", "Funnel", {"a": fa, "b": fb}, head + tbl + charts)


def _scores_section(sa: dict[str, Any], sb: dict[str, Any]) -> Section | None:
    figures = []
    for col in sorted(set(sa) | set(sb)):
        a, b = sa.get(col), sb.get(col)
        ref = a or b
        assert ref is not None
        series = []
        if a:
            series.append(("kept in A", a["kept"], RUN_A))
        if b:
            series.append(("kept in B", b["kept"], RUN_B))
        marks = scores.markers(a["thresholds"], "A ") if a else []
        marks += scores.markers(b["thresholds"], "B ") if b else []
        svg = histogram(ref["edges"], series, stacked=False, markers=marks, log=ref["log"], integer=ref["integer"],
                        title=col)
        parts = []
        for name, s in (("A", a), ("B", b)):
            if s:
                parts.append(f"{name}: {s['kept_n']:,} kept (mean {fmt_num(s['kept_mean'])}), {s['removed_n']:,} removed")
        figures.append(figure(svg, caption_html=f"<b>{esc(col)}</b> — " + esc("; ".join(parts))))
    if not figures:
        return None
    legend = (f'<p class="note legend"><span style="background:{RUN_A}"></span>kept in A'
              f'<span style="background:{RUN_B}"></span>kept in B · same bins for both runs · dashed: each run\'s threshold</p>')
    return Section("scores", "Score distributions (kept documents)", {"a": sa, "b": sb},
                   legend + '<div class="grid">' + "".join(figures) + "</div>")


def build_compare(location_a: str, location_b: str, out: str | None = None) -> Comparison:
    own_a, own_b = RunContext.open(location_a), RunContext.open(location_b)
    for ctx, loc in ((own_a, location_a), (own_b, location_b)):
        if not ctx.run.exists("manifest.json"):
            raise FileNotFoundError(f"{loc} is not a run directory (no manifest.json)")
    shared = merge_ranges(own_a.ranges, own_b.ranges)
    a, b = RunContext.open(location_a, shared), RunContext.open(location_b, shared)
    name_a, name_b = f"{a.name} ({location_a})", f"{b.name} ({location_b})"
    changes = spec_changes(a, b)
    sections = [Section("changes", "What differs in the specs", {"changes": changes},
                        table(["step", "field", "A", "B"],
                              [(c["step"], c["field"], json.dumps(c["a"]), json.dumps(c["b"])) for c in changes])
                        if changes else "<p>The two specs have the same steps and settings.</p>")]
    fa, fb = funnel.compute(a), funnel.compute(b)
    if fa and fb:
        sections.append(_funnel_section(fa, fb, name_a, name_b))
    score_section = _scores_section(scores.compute(a), scores.compute(b))
    if score_section:
        sections.append(score_section)
    stats = {"format": "gristmill-report-compare/1", "a": location_a, "b": location_b,
             "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sections": {s.key: s.stats for s in sections}}
    html = page(f"{a.name} vs {b.name}", f"A = {location_a} · B = {location_b}", sections)
    if out is None:
        html_path = a.run.path("report", default_name(location_b) + ".html")
        fs = a.run.fs
    else:
        fs, html_path = open_filesystem(out)
    stats_path = html_path[:-5] + ".json" if html_path.endswith(".html") else html_path + ".json"
    write_atomic(fs, html_path, html.encode("utf-8"))
    write_atomic(fs, stats_path, (json.dumps(stats, indent=1) + "\n").encode())
    if out is None and "://" in a.run.location:  # name the remote pages by URI, not by bucket path
        html_path, stats_path = (a.run.uri(p[len(a.run.root) + 1:]) for p in (html_path, stats_path))
    return Comparison(html_path, stats_path, stats)
