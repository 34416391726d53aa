"""Language distribution from ``langid.lang``: kept and removed documents per language."""

from __future__ import annotations

from pipelines.report.context import RunContext
from pipelines.report.render import figure, table
from pipelines.report.section import Section
from pipelines.report.svg import split_bars

KEY, TITLE = "languages", "Languages"
TOP = 20


def build(ctx: RunContext) -> Section | None:
    kept: dict[str, int] = dict(ctx.kept().langs)
    removed: dict[str, int] = {}
    seen = "langid.lang" in ctx.kept().columns
    for label, stats in ctx.all_folders()[1:]:
        seen = seen or "langid.lang" in stats.columns
        for lang, n in stats.langs.items():
            removed[lang] = removed.get(lang, 0) + n
    if not seen:
        return None
    langs = sorted(set(kept) | set(removed), key=lambda lang: (-(kept.get(lang, 0) + removed.get(lang, 0)), lang))
    rows = [{"lang": lang, "kept": kept.get(lang, 0), "removed": removed.get(lang, 0)} for lang in langs]
    stats = {"languages": rows, "distinct": len(langs)}
    body = figure(split_bars([(r["lang"], r["kept"], r["removed"]) for r in rows[:TOP]], label_w=120,
                             title="languages"),
                  f"{len(langs)} languages; '(none)' = not identified (removed before langid ran, or empty text)")
    if len(rows) > TOP:
        body += table(["language", "kept", "removed"], [(r["lang"], r["kept"], r["removed"]) for r in rows],
                      numeric=(1, 2))
    return Section(KEY, TITLE, stats, body)
