"""Server-rendered SVG charts: pictures without scripts, so the strict CSP holds.

Colours are SVG presentation attributes (fill="..."), which a CSP without 'unsafe-inline' allows;
no style attributes are used.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from html import escape

from markupsafe import Markup

from firmware.operations import UsageRow

PALETTE = ["#2f6fb0", "#e07b39", "#3a9a5b", "#b8434e", "#7d5bb5", "#8c6d3f", "#c45fa0", "#5f8c99"]
OTHERS = "others"


def _nice_max(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value``: 3 → 5, 150 → 200."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def usage_chart(rows: list[UsageRow], names: dict[str, str], days: int = 30, today: dt.date | None = None,
                max_series: int = 6) -> Markup:
    """Stacked bars: signatures per day for the last ``days`` days, one colour per client.

    ``rows`` as firmware.operations.reports.usage() returns them.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    first = today - dt.timedelta(days=days - 1)
    per_client: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        if row.day >= first.isoformat():
            per_client[row.client_id][row.day] += row.signatures
    totals = sorted(per_client, key=lambda c: -sum(per_client[c].values()))
    series = totals[:max_series]
    if len(totals) > max_series:
        merged: dict[str, int] = defaultdict(int)
        for client in totals[max_series:]:
            for day, count in per_client[client].items():
                merged[day] += count
        per_client[OTHERS] = merged
        series.append(OTHERS)
    dates = [(first + dt.timedelta(days=i)).isoformat() for i in range(days)]
    day_totals = [sum(per_client[c].get(d, 0) for c in series) for d in dates]
    top = _nice_max(max([*day_totals, 1]))

    width, height, left, bottom, top_pad = 900, 240, 44, 24, 10
    plot_w, plot_h = width - left - 8, height - bottom - top_pad
    bar_w = plot_w / days
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="signatures per day and client, last {days} days" xmlns="http://www.w3.org/2000/svg">']
    for fraction in ((0, 0.5, 1) if top % 2 == 0 else (0, 1)):
        y = top_pad + plot_h * (1 - fraction)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}" stroke="#d0d5dc" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#555">'
                     f'{int(top * fraction)}</text>')
    for i, day in enumerate(dates):
        y = top_pad + plot_h
        for index, client in enumerate(series):
            count = per_client[client].get(day, 0)
            if not count:
                continue
            h = plot_h * count / top
            y -= h
            label = names.get(client, client) if client != OTHERS else OTHERS
            parts.append(
                f'<rect x="{left + i * bar_w + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[index % len(PALETTE)]}"><title>{escape(day)}: {escape(label)} {count}</title></rect>')
    for i in (0, days // 2, days - 1):
        x = left + i * bar_w + bar_w / 2
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" font-size="11" fill="#555">'
                     f'{dates[i][5:]}</text>')
    parts.append("</svg>")
    legend = "".join(
        f'<li><svg class="swatch" viewBox="0 0 10 10" aria-hidden="true"><rect width="10" height="10" '
        f'fill="{PALETTE[i % len(PALETTE)]}"/></svg>{escape(names.get(c, c) if c != OTHERS else OTHERS)} '
        f'<span class="muted">{sum(per_client[c].values())}</span></li>'
        for i, c in enumerate(series)
    )
    empty = '<p class="muted">No signatures in this period.</p>' if not series else ""
    return Markup("".join(parts) + (f'<ul class="legend">{legend}</ul>' if legend else "") + empty)
