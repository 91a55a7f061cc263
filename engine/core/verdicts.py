"""Which filter stopped a message, and why: written as an event when the message is processed, read
back by ``show``, ``show --json``, the admin API and the dashboard (``filtered_by``, DESIGN §3.6).

The channel records one ``filtered`` event per FILTERED message with the detail ``NAME: REASON``
(``Channel._record_verdicts``); the name is the filter's ``name`` key, by default ``filter[N]``
(a plugin filter: its plugin name), and the reason is PHI-free by the filter contract.
"""

from __future__ import annotations

FILTERED_EVENT = "filtered"
PASSED_EVENT = "filter_passed"


def verdict_detail(name: str, reason: str) -> str:
    return f"{name}: {reason}"


def parse_verdict(detail: str | None) -> dict:
    """``{"name", "reason"}`` from an event's detail (``NAME: REASON``)."""
    name, _sep, reason = (detail or "").partition(": ")
    return {"name": name, "reason": reason}


def with_filtered_by(store, message: dict | None) -> dict | None:
    """``message`` (a ``Store.get_message`` dict) with ``filtered_by``: ``{"name", "reason"}`` of the
    channel filter that stopped it when it is FILTERED (the latest verdict: a replay may have
    stopped it at another filter), else None.  Reads the store's events of that message."""
    if message is None:
        return None
    verdict = None
    if message.get("status") == "FILTERED":
        for event in store.recent_events(limit=50, message_id=message["id"]):   # newest first
            if event.get("kind") == FILTERED_EVENT:
                verdict = parse_verdict(event.get("detail"))
                break
    message["filtered_by"] = verdict
    return message
