"""The read-side verbs: ``status``, ``messages`` and ``show``.

They open the store read-only and work whether or not the daemon runs (SQLite WAL lets a reader
see every committed message next to the daemon's writer).  ``--json`` prints the same objects as
the admin API (DESIGN §3.6).
"""

from __future__ import annotations

import json
import sys

from engine.config import ConfigError
from engine.units import parse_duration


def add_search_arguments(parser) -> None:
    parser.add_argument("--channel")
    parser.add_argument("--status")
    parser.add_argument("--since", help="a duration back from now (1h, 30d) or an ISO time")
    parser.add_argument("--until", help="a duration back from now or an ISO time")
    parser.add_argument("--type", help="message type, e.g. ADT^A08 (ADT matches every trigger)")
    parser.add_argument("--control-id")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--text", help="a word in the message content")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--offset", type=int, default=0)


def open_store(path):
    from engine.cli_tools import CommandError
    from engine.store import Store

    from engine.checks import load

    try:
        config, _registry = load(path)
    except ConfigError as error:
        for problem in error.problems:
            print(str(problem), file=sys.stderr)
        raise CommandError(f"{len(error.problems)} problem(s) in the configuration") from None
    if not config.store.path.exists():
        raise CommandError(f"no message store at {config.store.path} yet (start the daemon once)")
    return config, Store.open_readonly(config.store.path)


def time_bound(value: str | None):
    """'1h' means one hour ago; anything else is passed on as an ISO time."""
    if value is None:
        return None
    from datetime import datetime, timedelta, timezone

    try:
        return datetime.now(timezone.utc) - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        from engine.cli_tools import CommandError

        raise CommandError(f"{value!r} is neither a duration (1h, 30d) nor an ISO time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def search_filters(args) -> dict:
    from engine.cli_tools import CommandError

    meta = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--meta takes KEY=VALUE, not {item!r}")
        meta[key] = value
    filters = {"channel": args.channel, "status": args.status, "since": time_bound(args.since),
               "until": time_bound(args.until), "type": args.type, "control_id": args.control_id,
               "meta": meta or None, "limit": args.limit, "offset": args.offset}
    if getattr(args, "text", None):
        filters["text"] = args.text
    return filters


def messages_command(args, path) -> int:
    from engine.cli_tools import CommandError

    _config, store = open_store(path)
    try:
        rows = store.search(**search_filters(args))
    except ValueError as error:
        raise CommandError(str(error)) from None
    finally:
        store.close_readers()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':>8}  {'RECEIVED':24}  {'CHANNEL':18} {'STATUS':11} {'TYPE':12} CONTROL ID")
    for row in rows:
        print(f"{row['id']:>8}  {row['received_at']:24}  {row['channel'][:18]:18} {row['status']:11} "
              f"{(row['type'] or '-')[:12]:12} {row['control_id'] or '-'}")
    return 0


def show_command(args, path) -> int:
    from engine.cli_tools import CommandError

    _config, store = open_store(path)
    try:
        message = store.get_message(args.id)
    finally:
        store.close_readers()
    if message is None:
        raise CommandError(f"no message with id {args.id}")
    if args.json:
        print(json.dumps(message, indent=2))
        return 0
    print(f"message {message['id']}  channel {message['channel']}  {message['status']}  "
          f"received {message['received_at']}")
    print(f"type {message['type'] or '-'}  control id {message['control_id'] or '-'}")
    for key, value in (message.get("meta") or {}).items():
        print(f"meta {key} = {value}")
    if message.get("error"):
        print(f"error: {message['error']}")
    _block("raw", message.get("raw"))
    _block("transformed", message.get("transformed"))
    for destination in message.get("destinations", []):
        print(f"destination {destination['name']}: {destination['status']}")
        if destination.get("error"):
            print(f"  error: {destination['error']}")
        for attempt in destination.get("attempts", []):
            outcome = "ok" if attempt["ok"] else f"failed: {attempt.get('error') or ''}"
            print(f"  attempt {attempt['at']} {outcome}")
        _block("  sent", destination.get("sent"))
        _block("  response", (destination.get("attempts") or [{}])[-1].get("response"))
    return 0


def _block(title: str, text: str | None) -> None:
    if text is None:
        return
    print(f"{title}:")
    indent = " " * (len(title) - len(title.lstrip()) + 2)
    print(indent + text.replace("\r", "\n").rstrip("\n").replace("\n", "\n" + indent))


def status_command(args, path) -> int:
    config, store = open_store(path)
    try:
        counts = store.channel_counts()
    finally:
        store.close_readers()
    names = [c.name for c in config.channels] + sorted(set(counts) - {c.name for c in config.channels})
    enabled = {c.name: c.enabled for c in config.channels}
    rows = []
    for name in names:
        row = {"name": name, "state": _state(name, enabled),
               **{k: counts.get(name, {}).get(k, 0) for k in ("received", "filtered", "queued", "sent", "errored")}}
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'CHANNEL':24} {'STATE':10} {'RECEIVED':>9} {'FILTERED':>9} {'QUEUED':>7} {'SENT':>8} {'ERRORED':>8}")
    for row in rows:
        print(f"{row['name'][:24]:24} {row['state']:10} {row['received']:>9} {row['filtered']:>9} "
              f"{row['queued']:>7} {row['sent']:>8} {row['errored']:>8}")
    return 0


def _state(name: str, enabled: dict) -> str:
    """Without the admin API (a later issue) the CLI knows the configured state, not the live one."""
    if name not in enabled:
        return "removed"
    return "enabled" if enabled[name] else "disabled"
