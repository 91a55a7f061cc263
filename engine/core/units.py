"""The small value languages of the config files: durations, sizes and host:port addresses.

Why here and not in config.py: the CLI parses the same notations (`--since 1h`, `prune --older-than
30d`, `send HOST:PORT`), so they live in one place with one wording for their errors.

Every parser raises ValueError with a short reason a person can act on; the reason quotes the text
it was given, so callers that parse a secret (a ${VAR} value) must not show it (config.py doesn't).
"""
from __future__ import annotations

import ipaddress
import math
import re

DURATION_HINT = "use e.g. 500ms, 10s, 5m, 2h, 30d"
SIZE_HINT = "use e.g. 100B, 512KB, 1MB, 1GB"
ADDRESS_HINT = "use host:port, e.g. 127.0.0.1:2575 or [::1]:2575"

# Units are lower case on purpose: "5M" could be read as months or megabytes.
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Sizes are binary (1KB = 1024 bytes), as max_message_size has always meant in HL7 engines.
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
}
_NUMBER_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")
_PORT = re.compile(r"[0-9]{1,6}")
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
MAX_PORT = 65535


def _plain_number(value: object) -> float | None:
    """A TOML int/float (never a bool, which is an int in Python) as a float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_duration(text: str | int | float) -> float:
    """Seconds from "500ms", "10s", "5m", "2h", "30d", "1.5h"; a bare number is seconds ("0" -> 0.0)."""
    number = _plain_number(text)
    if number is None:
        if not isinstance(text, str):
            raise ValueError(f"{text!r} is not a duration; {DURATION_HINT}")
        match = _NUMBER_UNIT.fullmatch(text)
        if not match or match.group(2) not in _DURATION_UNITS:
            raise ValueError(f"{text!r} is not a duration; {DURATION_HINT}")
        number = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{text!r} is not a duration (it must be 0 or more); {DURATION_HINT}")
    return number


def parse_size(text: str | int | float) -> int:
    """Bytes from "100B", "512KB", "1MB", "1GB" (KB = 1024; K/KiB accepted too); a bare number is bytes."""
    number = _plain_number(text)
    if number is None:
        if not isinstance(text, str):
            raise ValueError(f"{text!r} is not a size; {SIZE_HINT}")
        match = _NUMBER_UNIT.fullmatch(text)
        unit = match.group(2).lower() if match else None
        if unit not in _SIZE_UNITS:
            raise ValueError(f"{text!r} is not a size; {SIZE_HINT}")
        number = float(match.group(1)) * _SIZE_UNITS[unit]
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{text!r} is not a size (it must be 0 or more); {SIZE_HINT}")
    return round(number)


def parse_address(text: str) -> tuple[str, int]:
    """(host, port) from "host:port" or "[v6]:port". Port 0 is allowed: it asks for an ephemeral port."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an address; {ADDRESS_HINT}")
    stripped = text.strip()
    if stripped.startswith("["):
        host, bracket, rest = stripped[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not an address; {ADDRESS_HINT}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = stripped.rpartition(":")
        if not colon:
            raise ValueError(f"{text!r} has no port; {ADDRESS_HINT}")
        if ":" in host:
            raise ValueError(f"{text!r}: an IPv6 address goes in brackets, e.g. [::1]:2575")
        if not host:
            raise ValueError(f"{text!r} has no host; {ADDRESS_HINT} (0.0.0.0 listens on every interface)")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} in {text!r} is not a host name or IP address")
    if not _PORT.fullmatch(port_text):
        raise ValueError(f"port {port_text!r} in {text!r} is not a number; {ADDRESS_HINT}")
    port = int(port_text)
    if port > MAX_PORT:
        raise ValueError(f"port {port} is out of range (0-{MAX_PORT})")
    return host, port


def format_address(address: tuple[str, int]) -> str:
    """The inverse of parse_address, for messages: ("::1", 2575) -> "[::1]:2575"."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# The largest value SQLite's INTEGER holds: message ids, offsets and counts past it cannot exist.
MAX_INTEGER = 2**63 - 1
# The longest age a search or prune may reach back: older than this predates any store.
MAX_AGE_SECONDS = 100 * 366 * 86400.0
MAX_AGE_TEXT = "36600d (100 years)"
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _shown(text: object, limit: int = 40) -> str:
    """A value quoted in an error, cut short: a 5,000-digit number must not fill the terminal."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[:limit] + "...'"


def parse_int(value, what: str, *, minimum: int = 0, maximum: int = MAX_INTEGER) -> int:
    """A whole number from a CLI argument or an API parameter, range-checked.

    ASCII digits only (``'²'`` passes ``str.isdigit`` but is no number here), an optional sign, and
    ``minimum <= n <= maximum`` (``maximum`` defaults to SQLite's INTEGER limit).  ValueError with one
    sentence naming ``what`` ("limit", "message id"...) otherwise; the digits are checked before
    ``int()`` so a 5,000-digit value costs nothing."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a whole number, not {value!r}")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"{what} must be a whole number, not {_shown(value)}")
        digits = text.lstrip("+-").lstrip("0")
        if len(digits) > len(str(max(abs(minimum), abs(maximum)))) + 1:
            raise ValueError(f"{what} must be between {minimum} and {maximum}; {_shown(value)} is out of range")
        number = int(text)
    if not minimum <= number <= maximum:
        raise ValueError(f"{what} must be between {minimum} and {maximum}; {_shown(value)} is out of range")
    return number


def parse_message_id(value, what: str = "message id") -> int:
    """A message (or audit entry) id: a whole number from 1 to SQLite's INTEGER limit."""
    return parse_int(value, what, minimum=1)


def parse_age(value, what: str = "age") -> float:
    """A duration reaching back from now (``prune --older-than``, a retention): more than 0 and at
    most ``MAX_AGE_SECONDS``, so the cutoff it gives is a real date (not the year -273788674)."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{what} must be more than 0; {DURATION_HINT}")
    if seconds > MAX_AGE_SECONDS:
        raise ValueError(f"{what} {_shown(value)} reaches back further than {MAX_AGE_TEXT}")
    return seconds


def parse_time_bound(value, now=None):
    """A time bound of a search or replay: ``1h`` means one hour before ``now``; anything else is
    an ISO 8601 time (naive means UTC).  Returned as an aware UTC datetime inside the calendar
    (years 1-9999 once in UTC), so every later conversion (to UTC, to ISO text, to a timestamp)
    holds.  ValueError with one sentence when it is neither, or out of range (``99999999999d``,
    ``9999-12-31T23:59:59-14:00``, which is past the year 9999 in UTC)."""
    from datetime import datetime, timedelta, timezone

    now = now or datetime.now(timezone.utc)
    text = str(value).strip()
    try:
        seconds = parse_duration(text)
    except ValueError:
        pass
    else:
        if seconds > MAX_AGE_SECONDS:
            raise ValueError(f"{_shown(text)} reaches back further than {MAX_AGE_TEXT}")
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{_shown(text)} is neither a duration (1h, 30d) nor an ISO time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{_shown(text)} is out of range (in UTC it falls outside the years 1-9999)") from None
