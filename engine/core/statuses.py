"""The status words of DESIGN §3.4 and the one rule that derives a message's status from its
destinations', shared by the pipeline (what a message becomes) and the store (what it records)."""

from __future__ import annotations

from typing import Iterable

MESSAGE_STATUSES = ("RECEIVED", "FILTERED", "TRANSFORMED", "QUEUED", "SENT", "ERROR")
DELIVERY_STATUSES = ("FILTERED", "QUEUED", "SENT", "ERROR")


def normalize_status(value: str, allowed: tuple[str, ...] = MESSAGE_STATUSES) -> str:
    """Status words are case-insensitive on input (§3.4); stored and shown upper-case."""
    word = str(value).strip().upper()
    if word not in allowed:
        raise ValueError(f"unknown status {value!r}; expected one of {', '.join(allowed)}")
    return word


def derive_status(
    delivery_statuses: Iterable[str], *, filtered: bool = False, error: bool = False
) -> str:
    """A processed message's status from its destinations' statuses (DESIGN §3.4).

    ``filtered``: a channel filter stopped the message. ``error``: its channel transform failed.
    Otherwise: any destination ERROR -> ERROR; any QUEUED -> QUEUED; every destination that was
    not filtered SENT -> SENT; no destination took it (none, or all filtered) -> TRANSFORMED."""
    if filtered:
        return "FILTERED"
    if error:
        return "ERROR"
    statuses = [normalize_status(s, DELIVERY_STATUSES) for s in delivery_statuses]
    if "ERROR" in statuses:
        return "ERROR"
    if "QUEUED" in statuses:
        return "QUEUED"
    if any(s == "SENT" for s in statuses):
        return "SENT"
    return "TRANSFORMED"


