"""Deduplication: cluster sizes and duplicate rates per source, from the statistics each dedup step
writes as data (``dedup/<step>/cluster_sizes.parquet``: ``cluster_size``, ``clusters``;
``dedup/<step>/source_rates.parquet``: ``source``, ``documents``, ``duplicates``)."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.report.context import RunContext
from pipelines.report.render import figure, pct, table
from pipelines.report.section import Section
from pipelines.report.svg import NEUTRAL, esc, hbars

KEY, TITLE = "dedup", "Deduplication"
MAX_SIZES = 20


def _read(ctx: RunContext, rel: str, columns: list[str]):
    if not ctx.run.exists(rel):
        return None
    return pq.read_table(ctx.run.path(rel), columns=columns, filesystem=ctx.run.fs)


def build(ctx: RunContext) -> Section | None:
    stats, body = {}, []
    for step in ctx.run.list_dirs("dedup"):
        sizes = _read(ctx, f"dedup/{step}/cluster_sizes.parquet", ["cluster_size", "clusters"])
        rates = _read(ctx, f"dedup/{step}/source_rates.parquet", ["source", "documents", "duplicates"])
        if sizes is None and rates is None:
            continue
        entry: dict = {}
        body.append(f"<h3>{esc(step)}</h3>")
        if sizes is not None:
            # Several rows per size are allowed (one per writer); sum them.
            grouped = sizes.group_by("cluster_size").aggregate([("clusters", "sum")]).sort_by("cluster_size")
            pairs = list(zip(grouped.column("cluster_size").to_pylist(), grouped.column("clusters_sum").to_pylist()))
            docs = sum(s * c for s, c in pairs)
            dup_clusters = [(s, c) for s, c in pairs if s > 1]
            entry["cluster_sizes"] = [{"cluster_size": s, "clusters": c} for s, c in pairs]
            entry["clusters"] = sum(c for _, c in pairs)
            entry["documents_in_duplicate_clusters"] = sum(s * c for s, c in dup_clusters)
            entry["duplicates_removed"] = sum((s - 1) * c for s, c in dup_clusters)
            shown = dup_clusters[:MAX_SIZES]
            tail = dup_clusters[MAX_SIZES:]
            items = [(f"size {s}", c) for s, c in shown] + ([(f"size > {shown[-1][0]}", sum(c for _, c in tail))] if tail else [])
            body.append(figure(hbars(items, NEUTRAL, label_w=120, title=f"cluster sizes of {step}"),
                               f"{entry['clusters']:,} clusters over {docs:,} documents; "
                               f"{len(dup_clusters) and sum(c for _, c in dup_clusters):,} clusters with duplicates; "
                               f"{entry['duplicates_removed']:,} duplicates removed (all but one per cluster)"))
        if rates is not None:
            grouped = rates.group_by("source").aggregate([("documents", "sum"), ("duplicates", "sum")])
            grouped = grouped.sort_by([("duplicates_sum", "descending"), ("source", "ascending")])
            rows = [{"source": s, "documents": d, "duplicates": u, "rate": u / d if d else 0.0}
                    for s, d, u in zip(grouped.column("source").to_pylist(), grouped.column("documents_sum").to_pylist(),
                                       grouped.column("duplicates_sum").to_pylist())]
            entry["sources"] = rows
            entry["documents"] = int(pc.sum(grouped.column("documents_sum")).as_py() or 0)
            entry["duplicates"] = int(pc.sum(grouped.column("duplicates_sum")).as_py() or 0)
            body.append(table(["source", "documents", "duplicates", "duplicate rate"],
                              [(r["source"], r["documents"], r["duplicates"], pct(r["duplicates"], r["documents"]))
                               for r in rows[:30]], numeric=(1, 2, 3)))
        stats[step] = entry
    if not stats:
        return None
    return Section(KEY, TITLE, stats, "".join(body))
