"""Run summary: the spec (name, kind, inputs, steps), per-stage status and timings from the manifest,
the Ray cluster the run used (recorded by the runner), and the headline counts from the data."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from pipelines.report.context import RunContext
from pipelines.report.render import table
from pipelines.report.section import Section
from pipelines.report.svg import fmt_num

KEY, TITLE = "summary", "Run summary"


def _inputs(ctx: RunContext) -> list[dict[str, Any]]:
    listed = ctx.manifest.get("inputs") or []
    out = []
    for i, entry in enumerate(ctx.spec.get("input") or []):
        files = [f for f in listed if f.get("input") == i]
        paths = entry.get("paths") or entry.get("seeds") or []
        out.append({"format": entry.get("format"), "paths": paths, "files": len(files),
                    "bytes": sum(f.get("size") or 0 for f in files)})
    return out


def _rows(ctx: RunContext, output_dir: str | None) -> int | None:
    """Rows in a stage's output folder (``stages/<id>/`` or ``data/``), from Parquet footers; None
    where the folder is gone (an intermediate output moved, or a sink's folders)."""
    if not output_dir or not ctx.run.exists(output_dir):
        return None
    files = ctx.files(output_dir)
    if not files:  # checkpoints/, eval/: outputs that are not rows
        return None
    return sum(pq.ParquetFile(f, filesystem=ctx.run.fs).metadata.num_rows for f in files)


def build(ctx: RunContext) -> Section | None:
    m, spec = ctx.manifest, ctx.spec
    if not m and not spec:
        return None
    kept = ctx.kept()
    read = kept.rows + sum(ctx.rejected(label).rows for label in ctx.step_order)
    stages = [{"id": s.get("id"), "kind": s.get("kind"), "steps": s.get("steps") or [], "status": s.get("status"),
               "seconds": s.get("seconds"), "started": s.get("started"), "finished": s.get("finished"),
               "output_dir": s.get("output_dir"), "rows_out": _rows(ctx, s.get("output_dir"))}
              for s in m.get("stages") or []]
    stats = {"name": ctx.name, "kind": m.get("kind") or spec.get("kind"), "description": spec.get("description"),
             "status": m.get("status"), "created": m.get("created"), "updated": m.get("updated"),
             "spec_hash": m.get("spec_hash"), "inputs": _inputs(ctx), "steps": [s.label for s in ctx.steps],
             "stages": stages, "seconds": round(sum(s["seconds"] or 0 for s in stages), 3),
             "ray": m.get("ray"), "documents_read": read, "documents_kept": kept.rows, "chars_kept": kept.chars}
    ray = m.get("ray") or {}
    cluster = (f"{ray.get('nodes', '?')} node(s), {fmt_num(ray.get('cpus'))} CPUs"
               + (f", {fmt_num(ray['gpus'])} GPUs" if ray.get("gpus") else "")
               + (f", {ray['memory_gb']:.0f} GiB" if ray.get("memory_gb") else "")
               + (" (embedded local Ray)" if ray.get("local") else f" ({ray.get('address')})" if ray.get("address") else "")
               if ray else "not recorded")
    kv = [("spec", f"{stats['name']} (kind {stats['kind']})"), ("description", stats["description"] or ""),
          ("status", stats["status"]), ("started", stats["created"]), ("finished", stats["updated"]),
          ("spec hash", stats["spec_hash"]), ("steps", ", ".join(stats["steps"]) or "none"),
          ("Ray cluster", cluster),
          ("documents", f"{read:,} read → {kept.rows:,} kept ({kept.rows / read:.1%})" if read else "none")]
    if not stats["inputs"] and not read:  # pretrain / finetune / eval: no documents; their sections say what ran
        kv = [(k, v) for k, v in kv[:-1] if not (k == "steps" and not stats["steps"])]
    body = table([], [(k, v) for k, v in kv if v not in ("", None)], cls="kv")
    if stats["inputs"]:
        body += "<h3>Inputs</h3>" + table(["format", "paths", "files", "bytes"],
                                      [(i["format"], ", ".join(map(str, i["paths"][:4])) + (" …" if len(i["paths"]) > 4 else ""),
                                        i["files"], i["bytes"]) for i in stats["inputs"]], numeric=(2, 3))
    if stages:
        body += "<h3>Stages</h3>" + table(["stage", "kind", "steps", "status", "seconds", "output", "rows out"],
                                          [(s["id"], s["kind"], ", ".join(s["steps"]) or "read + write", s["status"],
                                            s["seconds"], s["output_dir"], s["rows_out"]) for s in stages],
                                          numeric=(4, 6))
    return Section(KEY, TITLE, stats, body)
