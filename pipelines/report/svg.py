"""Inline SVG charts, drawn from numbers we already hold (no plotting library, no JavaScript).

Every string that reaches the SVG goes through :func:`esc`; every chart scales to its container
(``viewBox`` plus ``width: 100%`` in the page's CSS).
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

KEPT, REMOVED, NEUTRAL, MUTED = "#2e7d32", "#c62828", "#1565c0", "#9e9e9e"
LATER = "#ef9a9a"  # removed by a later step: the removed colour, lighter
RUN_A, RUN_B = "#1565c0", "#ef6c00"
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def fmt_int(n: float) -> str:
    return f"{int(n):,}"


def fmt_num(x: float | None) -> str:
    """Short and honest: integers as integers, otherwise three significant digits."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def fmt_compact(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return fmt_num(x)


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'style="max-width:{width}px" role="img" aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg" {FONT} font-size="12">'
            + "".join(body) + "</svg>")


def _text(x: float, y: float, s: object, anchor: str = "start", fill: str = "#333", size: int = 12,
          weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}" font-size="{size}" '
            f'font-weight="{weight}">{esc(s)}</text>')


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str = "", opacity: float = 1.0) -> str:
    tip = f"<title>{esc(title)}</title>" if title else ""
    op = f' fill-opacity="{opacity}"' if opacity < 1 else ""
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{fill}"{op}>{tip}</rect>'


def _short(label: str, n: int = 28) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


# ------------------------------------------------------------------------------------ bar charts


def funnel(rows: Sequence[tuple[str, int, int]], width: int = 760) -> str:
    """One bar per step: its input, split into kept (green) and removed by this step (red)."""
    if not rows:
        return ""
    top = max(r[1] for r in rows) or 1
    label_w, bar_h, gap = 170, 22, 10
    bar_w = width - label_w - 230
    height = len(rows) * (bar_h + gap) + gap + 18
    body = []
    for i, (label, n_in, n_out) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        removed = n_in - n_out
        w_in, w_out = bar_w * n_in / top, bar_w * n_out / top
        body.append(_text(label_w - 8, y + bar_h * 0.7, _short(label, 24), "end"))
        body.append(_rect(label_w, y, w_out, bar_h, KEPT, f"{label}: {n_out:,} of {n_in:,} continue"))
        body.append(_rect(label_w + w_out, y, w_in - w_out, bar_h, REMOVED, f"{label}: {removed:,} removed"))
        share = f" ({removed / n_in:.1%})" if n_in else ""
        body.append(_text(label_w + w_in + 8, y + bar_h * 0.7, f"{n_out:,} kept · −{removed:,}{share}", fill="#444"))
    y = height - 8
    body.append(_rect(label_w, y - 9, 10, 10, KEPT) + _text(label_w + 14, y, "continues to the next step"))
    body.append(_rect(label_w + 190, y - 9, 10, 10, REMOVED) + _text(label_w + 204, y, "removed by this step"))
    return _svg(width, height, body, "funnel: documents per step")


def hbars(items: Sequence[tuple[str, float]], color: str = NEUTRAL, width: int = 760, label_w: int = 220,
          value_fmt=fmt_int, title: str = "bars") -> str:
    if not items:
        return ""
    top = max(v for _, v in items) or 1
    bar_h, gap = 16, 6
    bar_w = width - label_w - 90
    height = len(items) * (bar_h + gap) + gap
    body = []
    for i, (label, value) in enumerate(items):
        y = gap + i * (bar_h + gap)
        body.append(_text(label_w - 8, y + bar_h * 0.75, _short(str(label), 32), "end"))
        body.append(_rect(label_w, y, bar_w * value / top, bar_h, color, f"{label}: {value_fmt(value)}"))
        body.append(_text(label_w + bar_w * value / top + 6, y + bar_h * 0.75, value_fmt(value), fill="#444"))
    return _svg(width, height, body, title)


def split_bars(items: Sequence[tuple[str, int, int]], width: int = 760, label_w: int = 220,
               title: str = "kept and removed") -> str:
    """Per label, kept (green) and removed (red) side by side in one bar, with the keep rate."""
    if not items:
        return ""
    top = max(k + r for _, k, r in items) or 1
    bar_h, gap = 16, 6
    bar_w = width - label_w - 130
    height = len(items) * (bar_h + gap) + gap
    body = []
    for i, (label, kept, removed) in enumerate(items):
        y = gap + i * (bar_h + gap)
        wk, wr = bar_w * kept / top, bar_w * removed / top
        body.append(_text(label_w - 8, y + bar_h * 0.75, _short(str(label), 32), "end"))
        body.append(_rect(label_w, y, wk, bar_h, KEPT, f"{label}: {kept:,} kept"))
        body.append(_rect(label_w + wk, y, wr, bar_h, REMOVED, f"{label}: {removed:,} removed"))
        rate = kept / (kept + removed) if kept + removed else 0
        body.append(_text(label_w + wk + wr + 6, y + bar_h * 0.75, f"{kept + removed:,} · {rate:.0%} kept", fill="#444"))
    return _svg(width, height, body, title)


# ------------------------------------------------------------------------------------ histograms


def _round_tick(value: float, span: float) -> float:
    """A tick label with the precision the axis needs (0.000001 on a 0–1 axis reads as 0)."""
    if span <= 0 or not math.isfinite(span):
        return value
    digits = max(0, 2 - math.floor(math.log10(span)))
    return round(value, digits)


def _position(x: float, edges: Sequence[float], log: bool) -> float | None:
    """Where ``x`` falls, in bin units (0 = left edge of the first bin); None outside the bins."""
    if not edges or x < edges[0] or x > edges[-1]:
        return None
    f = (lambda v: math.log1p(max(v, 0))) if log else (lambda v: v)
    for i in range(len(edges) - 1):
        lo, hi = edges[i], edges[i + 1]
        if lo <= x <= hi:
            span = f(hi) - f(lo)
            return i + ((f(x) - f(lo)) / span if span else 0.5)
    return None


def histogram(edges: Sequence[float], series: Sequence[tuple[str, Sequence[float], str]], *,
              stacked: bool = True, markers: Sequence[tuple[float, str]] = (), log: bool = False,
              integer: bool = False, width: int = 520, height: int = 190, title: str = "histogram",
              y_label: str = "documents") -> str:
    """Bars per bin: ``series`` stacked (kept on removed) or overlaid as outlines (two runs).
    ``markers`` draw a dashed vertical line at each threshold."""
    nbins = len(edges) - 1
    if nbins <= 0:
        return ""
    left, right, top_pad, bottom = 52, 26, 14, 40
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    totals = [sum(s[1][i] for s in series) for i in range(nbins)] if stacked else \
        [max(s[1][i] for s in series) for i in range(nbins)]
    top = max(totals) or 1
    bw = plot_w / nbins
    body = [f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="#999"/>']
    for frac in (0.5, 1.0):
        y = top_pad + plot_h * (1 - frac)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        body.append(_text(left - 6, y + 4, fmt_compact(top * frac), "end", "#666", 11))
    body.append(_text(12, top_pad + plot_h / 2, y_label, "middle", "#666", 11).replace(
        "<text ", f'<text transform="rotate(-90 12 {top_pad + plot_h / 2:.1f})" ', 1))
    for i in range(nbins):
        x = left + i * bw
        lo, hi = edges[i], edges[i + 1]
        rng = f"{fmt_num((lo + hi) / 2)}" if integer and hi - lo == 1 else f"{fmt_num(lo)} – {fmt_num(hi)}"
        base = 0.0
        for name, counts, color in series:
            c = counts[i]
            if not c:
                continue
            h = plot_h * c / top
            if stacked:
                body.append(_rect(x + 0.5, top_pad + plot_h - base - h, bw - 1, h, color, f"{rng}: {c:,} {name}"))
                base += h
            else:
                y = top_pad + plot_h - h
                body.append(f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bw - 1, 0):.1f}" height="{h:.1f}" '
                            f'fill="{color}" fill-opacity="0.25" stroke="{color}" stroke-width="1.5">'
                            f'<title>{esc(f"{rng}: {c:.3g} {name}")}</title></rect>')
    # x ticks: about five, at bin edges
    step = max(1, nbins // 5)
    for i in range(0, nbins + 1, step):
        x = left + i * bw
        if integer and edges[1] - edges[0] == 1:
            if i == nbins:
                continue
            x, value = x + bw / 2, (edges[i] + edges[i + 1]) / 2
        else:
            value = edges[i]
        body.append(f'<line x1="{x:.1f}" y1="{top_pad + plot_h}" x2="{x:.1f}" y2="{top_pad + plot_h + 4}" stroke="#999"/>')
        body.append(_text(x, top_pad + plot_h + 16, fmt_compact(_round_tick(value, edges[-1] - edges[0])), "middle", "#555", 11))
    if log:
        body.append(_text(left + plot_w, top_pad + plot_h + 32, "log scale", "end", "#888", 10))
    for value, label in markers:
        pos = _position(value, edges, log)
        if pos is None:
            continue
        x = left + pos * bw
        body.append(f'<line x1="{x:.1f}" y1="{top_pad - 4}" x2="{x:.1f}" y2="{top_pad + plot_h}" stroke="#111" '
                    f'stroke-width="1.5" stroke-dasharray="4 3"><title>{esc(label)}</title></line>')
        anchor = "end" if pos > nbins * 0.7 else "start"
        body.append(_text(x + (-4 if anchor == "end" else 4), top_pad + 6, label, anchor, "#111", 11, "bold"))
    return _svg(width, height, body, title)


# ------------------------------------------------------------------------------------ lines


def line_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float], str]], *, width: int = 760,
               height: int = 260, x_label: str = "step", y_label: str = "", title: str = "line chart") -> str:
    points = [(x, y) for _, xs, ys, _ in series for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    if not points:
        return ""
    left, right, top_pad, bottom = 60, 16, 16, 42
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + plot_w * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return top_pad + plot_h * (1 - (y - y0) / (y1 - y0))

    body = [f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="#999"/>',
            f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#999"/>']
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        body.append(f'<line x1="{left}" y1="{sy(yv):.1f}" x2="{left + plot_w}" y2="{sy(yv):.1f}" stroke="#eee"/>')
        # three significant digits, not three decimals: a learning rate of 3e-4 must not read 0
        body.append(_text(left - 6, sy(yv) + 4, fmt_num(float(f"{yv:.3g}")), "end", "#666", 11))
        xv = x0 + (x1 - x0) * k / 4
        body.append(_text(sx(xv), top_pad + plot_h + 16, fmt_compact(round(xv)), "middle", "#555", 11))
    body.append(_text(left + plot_w / 2, height - 6, x_label, "middle", "#666", 11))
    for i, (name, xs, ys, color) in enumerate(series):
        pts = [(sx(x), sy(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
        if not pts:
            continue
        if len(pts) == 1:
            body.append(f'<circle cx="{pts[0][0]:.1f}" cy="{pts[0][1]:.1f}" r="3" fill="{color}"/>')
        else:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            body.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.8"/>')
        lx = left + 10 + i * 150
        body.append(f'<line x1="{lx}" y1="{top_pad + 4}" x2="{lx + 18}" y2="{top_pad + 4}" stroke="{color}" stroke-width="3"/>')
        body.append(_text(lx + 22, top_pad + 8, name, fill="#333", size=11))
    return _svg(width, height, body, title)
