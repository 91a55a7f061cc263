"""A channel's traffic per minute over a recent window: the JSON of
``GET /api/channels/{name}/stats?window=1h`` and the small SVG chart the channel list draws from
the same figures (server-rendered: no script, nothing the CSP would have to allow).

The counts come from ``Store.traffic_by_minute`` (engine/store/sqlite/stats.py): messages
received each minute, and how many of those are now SENT and ERROR.  Minutes without messages
are filled with zeros here, so the chart and the JSON always have one point per minute.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from markupsafe import Markup

from engine.core.units import parse_duration

MAX_WINDOW = 24 * 3600
DEFAULT_WINDOW = "1h"
SERIES = ("received", "sent", "errors")
WIDTH, HEIGHT = 240, 48


def window_seconds(text: str | None) -> int:
    """``1h``, ``30m``, ``6h``...: whole minutes from 1 minute to 24 hours (ValueError: a sentence)."""
    text = (text or DEFAULT_WINDOW).strip()
    try:
        seconds = parse_duration(text) if re.fullmatch(r"\d{1,5}\s*[smhd]?", text) else -1
    except ValueError:
        seconds = -1
    if not 60 <= seconds <= MAX_WINDOW:
        raise ValueError(f"window must be a duration from 1m to 24h, like 1h or 30m (got {text[:20]!r})")
    return int(seconds // 60 * 60)


def traffic(store, channel: str, seconds: int, now: datetime | None = None) -> dict:
    """``{"channel", "window_seconds", "since", "minutes": [{"minute", "received", "sent",
    "errors"}], "totals"}``: one entry per minute, oldest first, the current minute last.
    Runs in a thread (it reads the store)."""
    now = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
    count = seconds // 60
    first = now - timedelta(minutes=count - 1)
    found = store.traffic_by_minute(channel, first)
    minutes = []
    for step in range(count):
        at = first + timedelta(minutes=step)
        key = at.strftime("%Y-%m-%dT%H:%M")
        minutes.append({"minute": key + "Z", **{name: found.get(key, {}).get(name, 0) for name in SERIES}})
    totals = {name: sum(m[name] for m in minutes) for name in SERIES}
    return {"channel": channel, "window_seconds": seconds, "since": first.strftime("%Y-%m-%dT%H:%MZ"),
            "minutes": minutes, "totals": totals}


def chart(figures: dict) -> Markup:
    """An inline SVG, one slot per minute: a bar of the messages received, inside it a narrower bar
    of those sent and a narrower one of the errors, scaled to the busiest minute (a lone minute of
    traffic stays visible); a title per minute gives its figures for people who hover."""
    minutes = figures["minutes"]
    top = max([1] + [m[name] for m in minutes for name in SERIES])
    slot = WIDTH / max(len(minutes), 1)
    widths = {"received": slot * 0.9, "sent": slot * 0.55, "errors": slot * 0.3}
    bars = []
    for index, m in enumerate(minutes):
        if not m["received"]:
            continue
        parts = []
        for name in SERIES:
            if m[name]:
                height = max(1.0, m[name] * (HEIGHT - 4) / top)
                x = index * slot + (slot - widths[name]) / 2
                parts.append(f'<rect class="bar series-{name}" x="{x:.2f}" y="{HEIGHT - 1 - height:.2f}" '
                             f'width="{widths[name]:.2f}" height="{height:.2f}"/>')
        bars.append(f'<g><title>{m["minute"]}: {m["received"]} received, {m["sent"]} sent, {m["errors"]} errors'
                    f'</title>{"".join(parts)}</g>')
    label = (f"last {len(minutes)} minutes: {figures['totals']['received']} received, "
             f"{figures['totals']['sent']} sent, {figures['totals']['errors']} errors; busiest minute {top}")
    return Markup(f'<svg class="traffic" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
                  f'role="img" aria-label="{label}"><title>{label}</title>'
                  f'<line class="axis" x1="0" y1="{HEIGHT - 1}" x2="{WIDTH}" y2="{HEIGHT - 1}"/>'
                  f'{"".join(bars)}</svg>')


DAY_SERIES = ("sent", "filtered", "errors", "queued")
DAY_WIDTH, DAY_HEIGHT = 720, 140


def day_chart(days: dict[str, dict[str, int]]) -> Markup:
    """Stacked bars per UTC day (sent, filtered, errors, queued), scaled to the busiest day; a
    title per bar gives the day's figures.  Days are those given (the report's window)."""
    if not days:
        return Markup('<p class="empty">No messages in this window.</p>')
    ordered = sorted(days)
    top = max(1, max(days[day]["received"] for day in ordered))
    slot = DAY_WIDTH / len(ordered)
    width = max(1.0, slot * 0.8)
    bars = []
    for index, day in enumerate(ordered):
        figures = days[day]
        x, y = index * slot + (slot - width) / 2, float(DAY_HEIGHT - 16)
        label = (f"{day}: {figures['received']} received, {figures['sent']} sent, {figures['filtered']} filtered, "
                 f"{figures['errors']} errors, {figures['queued']} queued")
        parts = []
        for name in DAY_SERIES:
            height = figures[name] * (DAY_HEIGHT - 20) / top
            if height > 0:
                y -= height
                parts.append(f'<rect class="bar bar-{name}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}"/>')
        bars.append(f'<g class="day" data-day="{day}"><title>{label}</title>{"".join(parts)}</g>')
    first, last = ordered[0], ordered[-1]
    return Markup(f'<svg class="days" viewBox="0 0 {DAY_WIDTH} {DAY_HEIGHT}" width="{DAY_WIDTH}" height="{DAY_HEIGHT}" '
                  f'role="img" aria-label="messages per day from {first} to {last}, busiest day {top}">'
                  f'<line class="axis" x1="0" y1="{DAY_HEIGHT - 15}" x2="{DAY_WIDTH}" y2="{DAY_HEIGHT - 15}"/>'
                  f'{"".join(bars)}<text class="tick" x="0" y="{DAY_HEIGHT - 2}">{first}</text>'
                  f'<text class="tick" x="{DAY_WIDTH}" y="{DAY_HEIGHT - 2}" text-anchor="end">{last}</text></svg>')
