"""The short summary ``gristmill run`` and ``gristmill report`` print: where the report is, the
funnel in one line, and the biggest removals with their main reasons."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipelines.report.builder import Report

TOP_REASONS = 3


def print_summary(console: Console, report: Report) -> None:
    sections = report.stats["sections"]
    funnel = sections.get("funnel")
    if funnel and funnel["read"]:
        console.print(f"[bold]funnel[/]: {funnel['read']:,} read → {funnel['kept']:,} kept "
                      f"({funnel['kept'] / funnel['read']:.1%}), {funnel['quarantined']:,} quarantined", highlight=False)
        reasons = sections.get("reasons", {})
        removals = sorted((s for s in funnel["steps"] if s["rejected"]), key=lambda s: -s["rejected"])
        if removals:
            table = Table(show_edge=False, box=None, padding=(0, 2))
            for col, justify in (("step", "left"), ("removed", "right"), ("of its input", "right"), ("main reasons", "left")):
                table.add_column(col, justify=justify, style="bold" if col == "step" else None)  # type: ignore[arg-type]
            for s in removals:
                top = list(reasons.get(s["step"], {}).items())[:TOP_REASONS]
                table.add_row(escape(s["step"]), f"{s['rejected']:,}", f"{s['rejected'] / s['in']:.1%}",
                              escape(", ".join(f"{r} {n:,}" for r, n in top)))
            console.print(table)
    langs = (sections.get("languages") or {}).get("languages") or []
    kept_langs = sorted(((r["lang"], r["kept"]) for r in langs if r["kept"]), key=lambda x: -x[1])[:5]
    if kept_langs:
        total = sum(r["kept"] for r in langs) or 1
        console.print("[bold]languages kept[/]: " + escape(", ".join(f"{lang} {n / total:.0%}" for lang, n in kept_langs)),
                      highlight=False)
    shards = sections.get("shards")
    if shards:
        parts = [f"{name} {s.get('tokens') or 0:,} tokens in {s.get('rows_in_files', 0):,} rows"
                 for name, s in shards["splits"].items()]
        console.print("[bold]shards[/]: " + escape("; ".join(parts)), highlight=False)
    training = sections.get("training")
    if training and not training.get("error"):
        final, run = training["final"], training.get("run") or {}
        parts = [f"step {final['step']:,.0f}" if "step" in final else "", f"loss {final['loss']:.4g}" if "loss" in final else "",
                 f"val loss {final['val_loss']:.4g}" if "val_loss" in final else "",
                 f"{run['tokens_seen']:,} tokens" if run.get("tokens_seen") is not None else "",
                 f"{len(run.get('checkpoints') or [])} checkpoint(s)"]
        console.print("[bold]training[/]: " + escape(", ".join(p for p in parts if p)), highlight=False)
    evaluation = sections.get("evaluation")
    if evaluation and not evaluation.get("error"):
        console.print(f"[bold]evaluation[/]: {len(evaluation['results'])} result(s) over "
                      f"{len(evaluation['checkpoints'])} checkpoint(s)", highlight=False)
    errors = [k for k, v in sections.items() if isinstance(v, dict) and "error" in v]
    if errors:
        console.print(f"[yellow]report sections that failed[/]: {escape(', '.join(errors))} (see the page)")
    console.print(f"[bold]report[/]: {escape(report.html_path)} ({report.seconds:.1f}s)", highlight=False)
