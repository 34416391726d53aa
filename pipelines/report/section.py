"""A report section: what it contributes to ``stats.json`` and to ``index.html``.

Each section module has ``build(ctx: RunContext) -> Section | None`` and returns None when the run
directory holds none of its data (no url column, no dedup stats, no shards ...). Adding a section
(training, eval) is one module plus one line in :data:`pipelines.report.sections.SECTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Section:
    key: str  # anchor in the page and key in stats.json
    title: str
    stats: dict[str, Any]
    html: str
