"""Document length before and after: characters of every document that entered the pipeline (kept
plus removed; quarantined input has no text) against those kept."""

from __future__ import annotations

import numpy as np

from pipelines.report.context import RunContext
from pipelines.report.render import figure, table
from pipelines.report.scan import LENGTH_EDGES
from pipelines.report.section import Section
from pipelines.report.svg import KEPT, REMOVED, fmt_num, histogram

KEY, TITLE = "lengths", "Document length"


def _quantile(counts: np.ndarray, q: float) -> float | None:
    """Upper edge of the bin holding the q-quantile (bins are powers of two: an upper bound)."""
    total = counts.sum()
    if not total:
        return None
    i = int(np.searchsorted(np.cumsum(counts), q * total))
    return float(LENGTH_EDGES[min(i + 1, len(LENGTH_EDGES) - 1)])


def build(ctx: RunContext) -> Section | None:
    folders = ctx.all_folders()
    if not any("text" in s.columns for _, s in folders):
        return None
    kept = ctx.kept().length.copy()
    removed = np.zeros_like(kept)
    chars_all = docs_all = 0
    for label, s in folders:
        chars_all += s.chars
        docs_all += s.rows - s.null_text
        if label is not None:  # a rejected folder
            removed += s.length
    entering = kept + removed
    used = np.nonzero(entering)[0]
    lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
    edges = [float(e) for e in LENGTH_EDGES[lo:hi + 1]]
    if edges[-1] == np.inf:
        edges[-1] = edges[-2] * 2
    k = ctx.kept()
    stats = {"edges": [float(e) if np.isfinite(e) else None for e in LENGTH_EDGES], "entering": entering.tolist(),
             "kept": kept.tolist(), "entering_docs": docs_all, "entering_chars": chars_all,
             "kept_docs": k.rows - k.null_text, "kept_chars": k.chars,
             "entering_mean": chars_all / docs_all if docs_all else None,
             "kept_mean": k.chars / (k.rows - k.null_text) if k.rows - k.null_text else None,
             "entering_median_bin_upper": _quantile(entering, 0.5), "kept_median_bin_upper": _quantile(kept, 0.5)}
    svg = histogram(edges, [("kept", kept[lo:hi].tolist(), KEPT), ("removed", removed[lo:hi].tolist(), REMOVED)],
                    log=True, title="document length (characters)")
    body = figure(svg, "Characters per document, in power-of-two bins: the whole bar is every document that "
                       "entered, green the ones kept.")
    body += table(["", "documents", "characters", "mean chars", "median ≤"],
                  [("entering", docs_all, chars_all, fmt_num(stats["entering_mean"]), stats["entering_median_bin_upper"]),
                   ("kept", stats["kept_docs"], k.chars, fmt_num(stats["kept_mean"]), stats["kept_median_bin_upper"])],
                  numeric=(1, 2, 3, 4))
    return Section(KEY, TITLE, stats, body)
