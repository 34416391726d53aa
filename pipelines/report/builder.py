"""Build a run's report: every section from the run directory, then ``report/index.html`` and
``report/stats.json`` (written atomically, like everything in a run directory)."""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from typing import Any

from pipelines.report.context import RunContext
from pipelines.report.render import note, page
from pipelines.report.section import Section
from pipelines.report.sections import SECTIONS

FORMAT = "gristmill-report/1"


@dataclass
class Report:
    location: str  # the run directory
    html_path: str
    stats_path: str
    stats: dict[str, Any]
    seconds: float


def build_sections(ctx: RunContext) -> list[Section]:
    """Every section that has data. A section that fails is shown as a failure (with the error in
    stats.json) rather than losing the whole report at the end of a long run."""
    out = []
    for build in SECTIONS:
        try:
            section = build(ctx)
        except Exception as exc:  # noqa: BLE001 - reported in the page and in stats.json
            key = build.__module__.rsplit(".", 1)[-1]
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            section = Section(key, key.replace("_", " ").title(), {"error": detail},
                              note(f"this section could not be built: {detail}", warn=True))
        if section is not None:
            out.append(section)
    return out


def build_report(location: str) -> Report:
    started = time.time()
    ctx = RunContext.open(location)
    if not ctx.run.exists("manifest.json"):
        raise FileNotFoundError(f"{location} is not a run directory (no manifest.json)")
    sections = build_sections(ctx)
    seconds = round(time.time() - started, 3)
    stats = {"format": FORMAT, "run": ctx.name, "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "build_seconds": seconds, "sections": {s.key: s.stats for s in sections}}
    kind = ctx.manifest.get("kind") or "run"
    title = "data-quality report" if kind in ("curate", "run") else f"{kind} report"
    html = page(f"{ctx.name} — {title}", f"gristmill {kind} run · {ctx.run.location}", sections)
    ctx.run.write_bytes("report/index.html", html.encode("utf-8"))
    ctx.run.write_bytes("report/stats.json", (json.dumps(stats, indent=1, default=_json_default) + "\n").encode())
    # uri(): s3://bucket/… for a remote run directory (a bare bucket path would read as a local one)
    return Report(location, ctx.run.uri("report/index.html"), ctx.run.uri("report/stats.json"), stats, seconds)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
