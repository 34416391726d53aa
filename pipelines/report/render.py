"""HTML for the report: a self-contained page (inline CSS and SVG, no script, no external request)
and the small building blocks sections use. Every value that came from data passes through
:func:`esc`, so document text such as ``<script>`` shows as text and never runs."""

from __future__ import annotations

from typing import Any, Sequence

from pipelines.report.section import Section
from pipelines.report.svg import esc, fmt_num

CSS = """
:root { --fg:#1d1d1f; --muted:#666; --line:#e3e3e8; --bg:#f6f7f9; --card:#fff; --kept:#2e7d32; --removed:#c62828; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { background:#20232a; color:#fff; padding:18px 28px; }
header h1 { margin:0; font-size:22px; font-weight:600; }
header .sub { color:#c9d1d9; margin-top:4px; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:8px 28px; position:sticky; top:0; z-index:1; }
nav a { color:#1565c0; text-decoration:none; margin-right:14px; white-space:nowrap; font-size:13px; }
main { max-width:1120px; margin:0 auto; padding:18px 28px 60px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:18px 0; }
section h2 { margin:0 0 10px; font-size:18px; }
h3 { font-size:15px; margin:16px 0 6px; }
.note { color:var(--muted); font-size:12.5px; margin:6px 0; }
.warn { color:#8a4b00; background:#fff4e0; border:1px solid #f3d39c; border-radius:6px; padding:6px 10px; }
table { border-collapse:collapse; margin:8px 0; font-size:13px; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { background:#fafafa; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tr:nth-child(even) td { background:#fcfcfd; }
.grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(480px, 1fr)); gap:12px 20px; }
figure { margin:6px 0; }
figure figcaption { font-size:12.5px; color:var(--muted); }
figure figcaption b { color:var(--fg); }
svg.chart { width:100%; height:auto; max-width:100%; }
.kv td:first-child { color:var(--muted); }
.doc { border:1px solid var(--line); border-radius:6px; padding:8px 10px; margin:8px 0; background:#fcfcfd; }
.doc.removed { border-left:4px solid var(--removed); }
.doc.kept { border-left:4px solid var(--kept); }
.doc pre { white-space:pre-wrap; word-break:break-word; margin:6px 0 0; font:12.5px/1.45 ui-monospace, Menlo, Consolas, monospace; max-height:14em; overflow:auto; }
.doc .meta { font-size:12px; color:var(--muted); }
.badge { display:inline-block; border-radius:10px; padding:0 8px; font-size:12px; margin-right:4px; }
.badge.removed { background:#fdecea; color:var(--removed); }
.badge.kept { background:#e8f5e9; color:var(--kept); }
.cols { display:grid; grid-template-columns:1fr 1fr; gap:12px 20px; }
details > summary { cursor:pointer; font-weight:600; margin:8px 0; }
.legend span { display:inline-block; width:10px; height:10px; margin:0 4px 0 12px; vertical-align:middle; }
"""


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = (),
          cls: str = "") -> str:
    """A table; cells are escaped, numbers formatted; columns in ``numeric`` are right-aligned."""
    head = "".join(f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = fmt_num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else ("" if v is None else v)
            cells.append(f'<td class="num">{esc(text)}</td>' if i in numeric else f"<td>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    c = f' class="{esc(cls)}"' if cls else ""
    thead = f"<thead><tr>{head}</tr></thead>" if headers else ""
    return f"<table{c}>{thead}<tbody>{''.join(body)}</tbody></table>"


def figure(svg: str, caption: str = "", caption_html: str = "") -> str:
    cap = caption_html or esc(caption)
    return f"<figure>{svg}<figcaption>{cap}</figcaption></figure>" if cap else f"<figure>{svg}</figure>"


def note(text: str, warn: bool = False) -> str:
    return f'<p class="{"note warn" if warn else "note"}">{esc(text)}</p>'


def pct(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    nav = "".join(f'<a href="#{esc(s.key)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{esc(s.key)}" data-section="{esc(s.key)}"><h2>{esc(s.title)}</h2>{s.html}</section>'
                   for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            # No script, no external fetch: the page must open from disk and never run document text.
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><div class=\"sub\">{esc(subtitle)}</div></header>"
            f"<nav>{nav}</nav><main>{body}</main></body></html>\n")
