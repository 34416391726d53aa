"""Top domains (host of ``url``, lower-cased, without ``www.``) and the share of each domain's
documents that was kept."""

from __future__ import annotations

from pipelines.report.context import RunContext
from pipelines.report.render import figure, note, table
from pipelines.report.section import Section
from pipelines.report.svg import split_bars

KEY, TITLE = "domains", "Top domains"
TOP = 25


def build(ctx: RunContext) -> Section | None:
    folders = ctx.all_folders()
    if not any("url" in s.columns for _, s in folders):
        return None
    kept = dict(ctx.kept().domains)
    removed: dict[str, int] = {}
    for label, s in folders[1:]:
        for host, n in s.domains.items():
            removed[host] = removed.get(host, 0) + n
    with_url = sum(s.with_url for _, s in folders)
    docs = sum(s.rows for _, s in folders)
    pruned = any(s.domains_pruned for _, s in folders)
    hosts = sorted(set(kept) | set(removed), key=lambda h: (-(kept.get(h, 0) + removed.get(h, 0)), h))
    rows = [{"domain": h, "kept": kept.get(h, 0), "removed": removed.get(h, 0),
             "keep_rate": kept.get(h, 0) / (kept.get(h, 0) + removed.get(h, 0))} for h in hosts[:TOP]]
    stats = {"top": rows, "distinct": len(hosts), "documents_with_url": with_url, "documents": docs,
             "approximate": pruned}
    body = [figure(split_bars([(r["domain"], r["kept"], r["removed"]) for r in rows], title="top domains"),
                   f"{len(hosts):,} distinct domains; {with_url:,} of {docs:,} documents have a URL")]
    body.append(table(["domain", "documents", "kept", "removed", "keep rate"],
                      [(r["domain"], r["kept"] + r["removed"], r["kept"], r["removed"], f"{r['keep_rate']:.1%}")
                       for r in rows], numeric=(1, 2, 3, 4)))
    if pruned:
        body.append(note("More distinct domains than the report keeps in memory: the long tail was pruned while "
                         "scanning, so counts of domains near the cut may be low.", warn=True))
    return Section(KEY, TITLE, stats, "".join(body))
