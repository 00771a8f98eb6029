"""The built-in dashboard: one HTML page with server-rendered SVG charts.

No JavaScript and nothing fetched from the internet: every chart is drawn here as SVG from the
analytics views (the same ones analysts query) and from the worker's live counters. The page
reloads itself every few seconds, so the charts move while the pipeline runs.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.journey.decisions import Status

PALETTE = ("#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777",
           "#65a30d", "#ea580c", "#4b5563", "#0d9488")  # fmt: skip
STATUS_COLOURS = {
    Status.EMITTED: "#16a34a",
    Status.SUPPRESSED: "#f59e0b",
    Status.EXPIRED: "#9ca3af",
    Status.CANCELLED: "#dc2626",
}


@dataclass
class Series:
    name: str
    values: Sequence[float]
    colour: str


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: float) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:.1f}"


def nice_ceiling(value: float) -> float:
    """A round top for an axis whose quarters are round too (4, 60, 800, 1200 ...)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for multiplier in (1, 1.2, 2, 4, 6, 8, 10):
        if value <= multiplier * magnitude:
            return float(multiplier * magnitude)
    return float(10 * magnitude)


def label_every(labels: Sequence[str], slot_width: float, char_width: float = 6.2) -> int:
    """Show every n-th axis label so that none overlaps the next: a label is about
    ``char_width`` px per character at the tick font size, plus a gap."""
    widest = max((len(label) for label in labels), default=0) * char_width + 8
    return max(1, math.ceil(widest / max(slot_width, 1e-9)))


def _frame(width: int, height: int, body: str, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{_esc(title)}">{body}</svg>'
    )


def _axis(left: int, top: int, width: int, height: int, top_value: float) -> str:
    lines = []
    for i in range(5):
        y = top + height - height * i / 4
        value = top_value * i / 4
        lines.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{_fmt(value)}</text>"
        )
    return "".join(lines)


def _legend(series: Sequence[Series], x: int, y: int) -> str:
    parts = []
    for s in series:
        parts.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{s.colour}"/>'
            f'<text x="{x + 14}" y="{y}" class="legend">{_esc(s.name)}</text>'
        )
        x += 24 + 8 * len(s.name)
    return "".join(parts)


def bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    title: str,
    stacked: bool = False,
    width: int = 640,
    height: int = 260,
) -> str:
    """Grouped (or stacked) vertical bars, one group per label."""
    if not labels:
        return empty(title)
    left, top, right, bottom = 52, 28, 12, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    if stacked:
        top_value = max(sum(s.values[i] for s in series) for i in range(len(labels)))
    else:
        top_value = max(max(s.values, default=0) for s in series)
    top_value = nice_ceiling(max(top_value, 1) * 1.05)
    group_w = plot_w / len(labels)
    every = label_every(labels, group_w)
    bar_w = group_w * 0.8 / (1 if stacked else len(series))
    body = [_axis(left, top, plot_w, plot_h, top_value)]
    for i, label in enumerate(labels):
        x0 = left + i * group_w + group_w * 0.1
        base = 0.0
        for j, s in enumerate(series):
            value = s.values[i]
            h = plot_h * value / top_value
            x = x0 if stacked else x0 + j * bar_w
            y = top + plot_h - h - (plot_h * base / top_value if stacked else 0)
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{s.colour}"><title>{_esc(s.name)} {_esc(label)}: '
                f"{_fmt(value)}</title></rect>"
            )
            if stacked:
                base += value
        if i % every == 0:
            body.append(
                f'<text x="{x0 + group_w * 0.4:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                f'class="tick">{_esc(label)}</text>'
            )
    body.append(_legend(series, left, height - 10))
    return _frame(width, height, "".join(body), title)


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    title: str,
    width: int = 640,
    height: int = 260,
    floor: float | None = 0.0,
    ceiling: float | None = None,
) -> str:
    if not labels:
        return empty(title)
    left, top, right, bottom = 52, 28, 12, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series for v in s.values]
    low = floor if floor is not None else min(values)
    high = ceiling if ceiling is not None else nice_ceiling(max(max(values), low + 1) * 1.05)
    span = max(high - low, 1e-9)
    step = plot_w / max(len(labels) - 1, 1)
    body = []
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{_fmt(low + span * i / 4)}</text>"
        )
    for s in series:
        points = " ".join(
            f"{left + i * step:.1f},{top + plot_h - plot_h * (v - low) / span:.1f}"
            for i, v in enumerate(s.values)
        )
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{s.colour}" stroke-width="2.5"/>'
        )
        for i, v in enumerate(s.values):
            x, y = left + i * step, top + plot_h - plot_h * (v - low) / span
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s.colour}">'
                f"<title>{_esc(labels[i])}: {_fmt(v)}</title></circle>"
            )
    every = label_every(labels, step)
    for i, label in enumerate(labels):
        if i % every == 0:
            body.append(
                f'<text x="{left + i * step:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                f'class="tick">{_esc(label)}</text>'
            )
    body.append(_legend(series, left, height - 10))
    return _frame(width, height, "".join(body), title)


def funnel_chart(steps: Sequence[tuple[str, float]], title: str, width: int = 640) -> str:
    """Horizontal bars, each step as a share of the first."""
    if not steps or not steps[0][1]:
        return empty(title)
    row, left = 40, 150
    height = row * len(steps) + 20
    first = steps[0][1]
    body = []
    for i, (name, value) in enumerate(steps):
        w = (width - left - 130) * value / first
        y = 10 + i * row
        body.append(
            f'<text x="{left - 8}" y="{y + 20}" text-anchor="end" class="label">{_esc(name)}</text>'
            f'<rect x="{left}" y="{y}" width="{max(w, 1):.1f}" height="28" rx="3" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + 19}" class="value">{_fmt(value)} '
            f"({100 * value / first:.0f}%)</text>"
        )
    return _frame(width, height, "".join(body), title)


def empty(title: str) -> str:
    return _frame(
        640, 80, '<text x="320" y="45" text-anchor="middle" class="muted">no data yet</text>', title
    )


CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0;
       background: #f3f4f6; color: #111827; }
header { background: #111827; color: #f9fafb; padding: 14px 24px; display: flex;
         align-items: baseline; gap: 24px; }
header h1 { font-size: 20px; margin: 0; }
header span { color: #9ca3af; font-size: 13px; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px;
       padding: 16px 24px; }
section { background: white; border-radius: 8px; padding: 12px 16px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); min-width: 0; overflow-x: auto; }
section h2 { font-size: 15px; margin: 4px 0 8px; }
section p.note { color: #6b7280; font-size: 12px; margin: 4px 0 0; }
.kpis { display: flex; gap: 12px; flex-wrap: wrap; }
.kpi { background: #f9fafb; border-radius: 6px; padding: 8px 12px; min-width: 110px; }
.kpi b { display: block; font-size: 22px; }
.kpi span { color: #6b7280; font-size: 12px; }
table { border-collapse: collapse; font-size: 12px; width: 100%; }
td, th { padding: 3px 6px; text-align: right; border-bottom: 1px solid #f3f4f6; }
td:first-child, th:first-child { text-align: left; }
svg .tick { font-size: 10px; fill: #6b7280; }
svg .legend, svg .label { font-size: 12px; fill: #374151; }
svg .value { font-size: 12px; fill: #111827; font-weight: 600; }
svg .muted { font-size: 14px; fill: #9ca3af; }
"""


def section(title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{_esc(note)}</p>' if note else ""
    return f"<section><h2>{_esc(title)}</h2>{body}{note_html}</section>"


def kpis(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="kpis">'
        + "".join(
            f'<div class="kpi"><b>{_esc(v)}</b><span>{_esc(k)}</span></div>' for k, v in items
        )
        + "</div>"
    )


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{_esc(_fmt(v) if isinstance(v, int | float) else v)}</td>" for v in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, subtitle: str, sections: Sequence[str], refresh_seconds: int = 5) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{refresh_seconds}">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_esc(title)}</h1><span>{_esc(subtitle)}</span>"
        f"<span>updated {now}, refreshes every {refresh_seconds}s</span></header>"
        f"<main>{''.join(sections)}</main></body></html>"
    )


# --- Latest emails (the reference sender's outbox; streams/sender/) ----------------------------


def emails_section(emails: Sequence[Any]) -> str:
    """What customers would have received: the newest emails the sender rendered and sent.

    ``emails``: ``streams.sender.outbox.SentEmail`` rows, newest first."""
    if not emails:
        body = (
            '<p class="note">No email sent yet. <code>make run</code> runs the reference sender '
            "against a local SMTP server; elsewhere run <code>journey sender</code>.</p>"
        )
    else:
        body = "".join(
            "<details class=mail><summary>"
            f"<b>{_esc(mail.subject)}</b> <span>{_esc(mail.trigger_type)} · {_esc(mail.locale)} · "
            f"to {_esc(mail.recipient)} · {_esc(mail.status)}</span></summary>"
            f"<pre>{_esc(mail.body)}</pre></details>"
            for mail in emails
        )
    return section(
        "Latest emails",
        f"<style>{MAIL_CSS}</style>{body}",
        "Rendered by journey sender from journey.triggers (templates per trigger type, en/nl).",
    )


MAIL_CSS = """
details.mail { border-bottom: 1px solid #f3f4f6; padding: 4px 0; font-size: 13px; }
details.mail summary span { color: #6b7280; font-size: 12px; }
details.mail pre { white-space: pre-wrap; font-size: 12px; background: #f9fafb; padding: 8px; }
"""
