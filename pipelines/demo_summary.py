"""The short summary `make demo` prints after the run: what the chain did, in a screenful.

    python -m pipelines.demo_summary runs/demo

It reads only what the run already wrote (small JSON and CSV files, never the data): the pipeline
manifest (per-stage wall time), the chain report's ``report/stats.json`` (tokens, final losses,
evaluation scores; written by ``gristmill run`` / ``gristmill report``), each curate stage's manifest
(the per-step funnel), and the eval stage's ``results.json`` (one generation sample per checkpoint).
`gristmill status` shows the stage table; this adds the funnel step by step, the scores of every
checkpoint side by side, a sample, and the total.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipelines.rundir import RunDir


def _read_json(run: RunDir, rel: str) -> Any | None:
    return run.read_json(rel) if run.exists(*rel.split("/")) else None


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def funnel_lines(name: str, stage_manifest: dict[str, Any]) -> list[str]:
    """``read → step −removed → … → kept`` from the curate stage's totals (one line per few steps)."""
    totals = stage_manifest.get("totals") or {}
    read, kept = totals.get("read") or 0, totals.get("kept") or 0
    removed = [f"{s['step']} −{s['rejected']:,}" for s in totals.get("steps") or []
               if s.get("step") != "_ingest" and s.get("rejected")]
    share = f" ({kept / read:.1%})" if read else ""
    lines = [f"  {name}: {read:,} documents read, {totals.get('quarantined', 0):,} quarantined → {kept:,} kept{share}"]
    for start in range(0, len(removed), 5):
        lines.append("    removed by " + ", ".join(removed[start:start + 5]))
    return lines


def eval_table(results: dict[str, Any]) -> list[str]:
    """One row per (task, metric), one column per checkpoint; standard errors left out."""
    checkpoints = results.get("checkpoints") or []
    labels = [c.get("label", "?") for c in checkpoints]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for checkpoint in checkpoints:
        for task, result in (checkpoint.get("tasks") or {}).items():
            for metric, value in (result.get("metrics") or {}).items():
                if isinstance(value, (int, float)) and not metric.endswith("_stderr"):
                    rows.setdefault((task, metric), {})[checkpoint.get("label", "?")] = value
    if not rows:
        return []
    first = max(len(f"{t} {m}") for t, m in rows) + 2
    widths = [max(len(label), 8) + 2 for label in labels]
    out = ["  " + "".ljust(first) + "".join(label.rjust(w) for label, w in zip(labels, widths))]
    for (task, metric), values in rows.items():
        out.append("  " + f"{task} {metric}".ljust(first)
                   + "".join(_num(values.get(label)).rjust(w) for label, w in zip(labels, widths)))
    return out


def first_sample(run: RunDir, results: dict[str, Any]) -> list[str]:
    """The first greedy sample of the last checkpoint (the fine-tuned one in the demo)."""
    for checkpoint in reversed(results.get("checkpoints") or []):
        for task, result in (checkpoint.get("tasks") or {}).items():
            rel = result.get("samples_file")
            if result.get("kind") != "generate" or not rel:
                continue
            try:
                line = run.read_bytes(rel).decode("utf-8").splitlines()[0]
            except (FileNotFoundError, IndexError):
                continue
            sample = json.loads(line)
            prompt, text = sample.get("prompt", ""), sample.get("completion", sample.get("text", ""))
            return [f"  {checkpoint.get('label')} ({task}): {prompt!r} → {text!r}"]
    return []


def summary(location: str) -> list[str]:
    run = RunDir.open(location)
    manifest = _read_json(run, "manifest.json")
    if manifest is None:
        raise FileNotFoundError(f"{location} is not a run directory (no manifest.json)")
    records = manifest.get("stages") or []
    lines = [f"Gristmill demo: {manifest.get('name')} ({manifest.get('status')}) in {location}"]

    curate = [r for r in records if r.get("kind") == "curate"]
    if curate:
        lines.append("funnel")
        for record in curate:
            stage_manifest = _read_json(run, f"{record.get('run_dir')}/manifest.json") or {}
            lines += funnel_lines(record["id"], stage_manifest)

    stats = _read_json(run, "report/stats.json") or {}
    chain = (stats.get("sections") or {}).get("chain") or {}
    for t in chain.get("tokens") or []:
        lines.append(f"tokens ({t['stage']}): {_num(t.get('train_tokens'))} train / {_num(t.get('val_tokens'))} val, "
                     f"vocabulary {_num(t.get('vocab_size'))}, rows of {_num(t.get('seq_len'))} tokens")
    if chain.get("training"):
        lines.append("training (final)")
        for t in chain["training"]:
            lines.append(f"  {t['stage']} ({t.get('kind')}): step {_num(t.get('step'))}, train loss {_num(t.get('loss'))}, "
                         f"val loss {_num(t.get('val_loss'))} (perplexity {_num(t.get('val_ppl'))})")

    for record in records:
        if record.get("kind") == "eval" and record.get("status") == "done":
            results = _read_json(run, f"{record.get('run_dir')}/eval/results.json") or {}
            table = eval_table(results)
            if table:
                lines.append(f"evaluation ({record['id']})")
                lines += table
            sample = first_sample(RunDir.open(run.uri(record.get("run_dir"))), results)
            if sample:
                lines.append("sample")
                lines += sample

    lines.append("wall time per stage")
    total = 0.0
    for record in records:
        seconds = record.get("seconds")
        if isinstance(seconds, (int, float)):
            total += seconds
        lines.append(f"  {record['id']:<16} {record.get('kind', ''):<11} {record.get('status', ''):<8} "
                     + (f"{seconds:8.1f} s" if isinstance(seconds, (int, float)) else ""))
    lines.append(f"  {'total':<16} {'':<11} {'':<8} {total:8.1f} s  (stages only; Ray start-up and the report not included)")
    report = run.path("report/index.html") if run.exists("report", "index.html") else None
    lines.append(f"report: {report}" if report else f"report: not built; run `gristmill report {location}`")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo_summary", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    try:
        print("\n".join(summary(args.run_dir)))
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
