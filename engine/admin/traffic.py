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
    """An inline SVG of the three series (received, sent, errors) as lines, scaled to the busiest
    minute; a title per series gives its total for people who hover rather than read."""
    minutes = figures["minutes"]
    top = max([1] + [m[name] for m in minutes for name in SERIES])
    step = WIDTH / max(len(minutes) - 1, 1)
    lines = []
    for name in SERIES:
        points = " ".join(f"{index * step:.1f},{HEIGHT - 2 - m[name] * (HEIGHT - 4) / top:.1f}"
                          for index, m in enumerate(minutes))
        lines.append(f'<polyline class="series series-{name}" points="{points}">'
                     f'<title>{name}: {figures["totals"][name]}</title></polyline>')
    label = (f"last {len(minutes)} minutes: {figures['totals']['received']} received, "
             f"{figures['totals']['sent']} sent, {figures['totals']['errors']} errors; busiest minute {top}")
    return Markup(f'<svg class="traffic" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
                  f'role="img" aria-label="{label}"><title>{label}</title>'
                  f'<line class="axis" x1="0" y1="{HEIGHT - 1}" x2="{WIDTH}" y2="{HEIGHT - 1}"/>'
                  f'{"".join(lines)}</svg>')
