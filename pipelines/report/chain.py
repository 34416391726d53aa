"""One report for a ``kind: pipeline`` run: a chain overview (stages, status, wall time, and the path
from documents read to tokens, final losses and evaluation scores), then every stage's own sections
under a heading of its own. The stage sections are the single-run sections unchanged, each built
from the stage's run directory (``<run>/stages/<name>/``); only their anchors get the stage's name.

Writes ``<run>/report/index.html`` and ``<run>/report/stats.json`` (``stats["stages"][name]`` holds
each stage's section stats as a single-run report's ``stats["sections"]``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.markup import escape

from pipelines.report.builder import Report, _json_default, build_sections
from pipelines.report.context import RunContext
from pipelines.report.render import note, page, table
from pipelines.report.section import Section
from pipelines.report.svg import esc, fmt_num, hbars
from pipelines.rundir import RunDir

FORMAT = "gristmill-pipeline-report/1"
# A stage's sections sit inside its card: flatter, so the stage card stays the visible unit.
STAGE_CSS = "<style>section.stage-part { margin:14px 0 0; border-color:#eceef2; background:#fcfcfd; }</style>"


def build_chain_report(location: str) -> Report:
    started = time.time()
    run = RunDir.open(location)
    if not run.exists("manifest.json"):
        raise FileNotFoundError(f"{location} is not a run directory (no manifest.json)")
    manifest = run.read_json("manifest.json")
    if manifest.get("kind") != "pipeline":
        raise FileNotFoundError(f"{location} holds a {manifest.get('kind')} run, not a pipeline")
    stages: dict[str, Any] = {}
    stage_sections: list[Section] = []
    for number, record in enumerate(manifest.get("stages") or [], start=1):
        name = record["id"]
        ctx = RunContext.open(run.uri(record.get("run_dir") or f"stages/{name}"))
        sections = build_sections(ctx) if ctx.run.exists("manifest.json") else []
        stages[name] = {"kind": record.get("kind"), "status": record.get("status"), "seconds": record.get("seconds"),
                        "headline": record.get("headline") or {}, "sections": {s.key: s.stats for s in sections}}
        stage_sections.append(_stage_section(number, record, ctx, sections))
    chain = chain_overview(manifest, stages)
    overview = Section("chain", "Chain", chain, STAGE_CSS + _overview_html(manifest, chain))
    seconds = round(time.time() - started, 3)
    stats = {"format": FORMAT, "run": manifest.get("name"), "kind": "pipeline",
             "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": seconds,
             "sections": {"chain": chain}, "stages": stages}
    html = page(f"{manifest.get('name')} — pipeline report",
                f"gristmill pipeline run · {run.location} · " + " → ".join(stages), [overview, *stage_sections])
    run.write_bytes("report/index.html", html.encode("utf-8"))
    run.write_bytes("report/stats.json", (json.dumps(stats, indent=1, default=_json_default) + "\n").encode())
    return Report(location, run.path("report/index.html"), run.path("report/stats.json"), stats, seconds)


def chain_overview(manifest: dict[str, Any], stages: dict[str, Any]) -> dict[str, Any]:
    """Per stage: status and wall time; along the chain: documents read → kept, tokens written, each
    training stage's final losses and each evaluation's scores (from the stages' section stats)."""
    out: dict[str, Any] = {"status": manifest.get("status"), "stages": [], "documents": [], "tokens": [],
                           "training": [], "evaluation": []}
    for name, stage in stages.items():
        out["stages"].append({"stage": name, "kind": stage["kind"], "status": stage["status"], "seconds": stage["seconds"]})
        sections = stage["sections"]
        funnel = sections.get("funnel")
        if funnel and not funnel.get("error"):
            out["documents"].append({"stage": name, "read": funnel.get("read"), "kept": funnel.get("kept"),
                                     "quarantined": funnel.get("quarantined")})
        shards = sections.get("shards")
        if shards and not shards.get("error"):
            splits = shards.get("splits") or {}
            out["tokens"].append({"stage": name, "vocab_size": shards.get("vocab_size"), "seq_len": shards.get("seq_len"),
                                  **{f"{s}_tokens": (splits.get(s) or {}).get("tokens") for s in ("train", "val")}})
        training = sections.get("training")
        if training and not training.get("error"):
            final = training.get("final") or {}
            out["training"].append({"stage": name, "kind": stage["kind"], "step": final.get("step"), "loss": final.get("loss"),
                                    "val_loss": final.get("val_loss"), "val_ppl": final.get("val_ppl")})
        evaluation = sections.get("evaluation")
        if evaluation and not evaluation.get("error"):
            for result in evaluation.get("results") or []:
                for metric, value in (result.get("metrics") or {}).items():
                    if isinstance(value, (int, float)) and not metric.endswith("_stderr"):
                        out["evaluation"].append({"stage": name, "checkpoint": result.get("checkpoint"),
                                                  "task": result.get("task"), "metric": metric, "value": value})
    return out


def _overview_html(manifest: dict[str, Any], chain: dict[str, Any]) -> str:
    from pipelines.pipeline_run import format_headline

    records = manifest.get("stages") or []
    body = [table(["stage", "kind", "status", "wall seconds", "headline"],
                  [(r["id"], r.get("kind"), r.get("status"), r.get("seconds"),
                    format_headline(r.get("headline")) if r.get("status") == "done" else r.get("error") or "")
                   for r in records], numeric=(3,))]
    timed = [(r["id"], float(r["seconds"])) for r in records if isinstance(r.get("seconds"), (int, float))]
    if timed:
        body.append(hbars(timed, value_fmt=lambda v: f"{v:.1f}s", title="wall time per stage"))
        body.append(note(f"{sum(s for _, s in timed):.1f}s of stage wall time in all (each stage's time when it "
                         "last ran; skipped stages keep theirs)"))
    steps = []
    for d in chain["documents"]:
        share = f" ({d['kept'] / d['read']:.1%})" if d.get("read") else ""
        steps.append(("documents", d["stage"], f"{fmt_num(d.get('read'))} read → {fmt_num(d.get('kept'))} kept{share}"))
    for t in chain["tokens"]:
        steps.append(("tokens", t["stage"], f"train {fmt_num(t.get('train_tokens'))}, val {fmt_num(t.get('val_tokens'))} "
                                            f"(vocabulary {fmt_num(t.get('vocab_size'))}, rows of {fmt_num(t.get('seq_len'))})"))
    for t in chain["training"]:
        parts = [f"step {fmt_num(t['step'])}" if t.get("step") is not None else "",
                 f"loss {t['loss']:.4g}" if t.get("loss") is not None else "",
                 f"val loss {t['val_loss']:.4g}" if t.get("val_loss") is not None else ""]
        steps.append((f"{t['kind']} losses", t["stage"], ", ".join(p for p in parts if p)))
    for e in chain["evaluation"]:
        steps.append(("evaluation", e["stage"], f"{e['checkpoint']} · {e['task']} · {e['metric']} {e['value']:.4g}"))
    if steps:
        body.append("<h3>Along the chain</h3>" + table(["what", "stage", "value"], steps))
    return "".join(body)


def _stage_section(number: int, record: dict[str, Any], ctx: RunContext, sections: list[Section]) -> Section:
    """The stage's heading card with its own report sections inside it (the page's navigation lists
    the chain and the stages; each stage card links to its sections)."""
    from pipelines.pipeline_run import format_headline

    name = record["id"]
    rows = [("kind", record.get("kind")), ("status", record.get("status")), ("wall seconds", record.get("seconds")),
            ("started", record.get("started")), ("finished", record.get("finished")),
            ("run directory", ctx.run.location), ("hash", record.get("hash"))]
    if record.get("upstream"):
        rows.append(("uses", ", ".join(record["upstream"])))
    body = table([], rows, cls="kv") + note(format_headline(record.get("headline")) if record.get("status") == "done"
                                            else record.get("error") or "not finished")
    if not sections:
        body += note("no report data for this stage yet", warn=True)
    else:
        body += "<p>" + " · ".join(f'<a href="#{esc(name)}-{esc(s.key)}">{esc(s.title)}</a>' for s in sections) + "</p>"
        body += "".join(f'<section id="{esc(name)}-{esc(s.key)}" data-section="{esc(s.key)}" class="stage-part">'
                        f"<h2>{esc(name)} · {esc(s.title)}</h2>{s.html}</section>" for s in sections)
    return Section(f"stage-{name}", f"Stage {number}: {name} ({record.get('kind')})", {}, body)


def print_chain_summary(console: Console, report: Report) -> None:
    chain = report.stats["sections"]["chain"]
    for d in chain["documents"]:
        console.print(f"[bold]{escape(d['stage'])}[/]: {d['read'] or 0:,} documents read → {d['kept'] or 0:,} kept",
                      highlight=False)
    for t in chain["tokens"]:
        console.print(f"[bold]{escape(t['stage'])}[/]: {t.get('train_tokens') or 0:,} train / {t.get('val_tokens') or 0:,} "
                      "val tokens", highlight=False)
    for t in chain["training"]:
        loss = f"loss {t['loss']:.4g}" if t.get("loss") is not None else "no loss logged"
        val = f", val loss {t['val_loss']:.4g}" if t.get("val_loss") is not None else ""
        console.print(f"[bold]{escape(t['stage'])}[/]: {loss}{val}", highlight=False)
    for e in chain["evaluation"]:
        console.print(f"[bold]{escape(e['stage'])}[/]: {escape(str(e['task']))} {escape(e['metric'])} {e['value']:.4g}",
                      highlight=False)
    console.print(f"[bold]report[/]: {escape(report.html_path)} ({report.seconds:.1f}s)", highlight=False)
