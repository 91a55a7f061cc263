"""The read-side verbs: ``status``, ``messages`` and ``show``.

They open the store read-only and work whether or not the daemon runs (SQLite WAL lets a reader
see every committed message next to the daemon's writer).  ``--json`` prints the same objects as
the admin API (DESIGN §3.6).
"""

from __future__ import annotations

import json
import sys

from engine.core.units import parse_duration


def add_search_arguments(parser) -> None:
    parser.add_argument("--channel")
    parser.add_argument("--status")
    parser.add_argument("--since", help="a duration back from now (1h, 30d) or an ISO time")
    parser.add_argument("--until", help="a duration back from now or an ISO time")
    parser.add_argument("--type", help="message type, e.g. ADT^A08 (ADT matches every trigger)")
    parser.add_argument("--control-id")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--text", help="words in the message content, all of them (JANE DOE, MRN0012*)")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--before-id", type=int, metavar="ID",
                        help="the messages listed after this one (next page: the last id shown)")


def open_store(path):
    """(config, the store read-only); CommandError when there is no store or it cannot be read."""
    from engine.cli.admin_verbs import open_config

    config = open_config(path)
    return config, _open_readonly(config)


def _open_readonly(config):
    from engine.cli.tool_verbs import CommandError
    from engine.store import StoreError, open_readonly

    if not config.store.path.exists():
        raise CommandError(f"no message store at {config.store.path} yet (start the daemon once)")
    try:
        return open_readonly(config.store.path)
    except StoreError as error:
        raise CommandError(str(error)) from None


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
        from engine.cli.tool_verbs import CommandError

        raise CommandError(f"{value!r} is neither a duration (1h, 30d) nor an ISO time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def search_filters(args) -> dict:
    from engine.cli.tool_verbs import CommandError

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
    if getattr(args, "before_id", None) is not None:
        filters["before_id"] = args.before_id
    return filters


def messages_command(args, path) -> int:
    from engine.cli.tool_verbs import CommandError

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
    from engine.cli.tool_verbs import CommandError

    if getattr(args, "original", False) and args.json:
        raise CommandError("--original writes the bytes themselves; it does not go with --json")
    _config, store = open_store(path)
    try:
        message = store.get_message(args.id)
        original = store.get_original(args.id) if message and message.get("original_bytes") else None
    finally:
        store.close_readers()
    if message is None:
        raise CommandError(f"no message with id {args.id}")
    if getattr(args, "original", False):
        return _write_original(message, original)
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
    if message.get("pruned"):
        print("content pruned: older than the retention window ([store] retention or switchboard prune);"
              " its record, metadata, statuses and attempts are kept")
    if original is not None:
        print(f"original bytes kept: {len(original):,} bytes (not valid {_codec_name(original)}; the text shows"
              f" U+FFFD for them; switchboard show {message['id']} --original writes them out)")
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


def _write_original(message: dict, original: bytes | None) -> int:
    """``show ID --original``: the exact bytes to stdout, nothing else (for ``> file``)."""
    from engine.cli.tool_verbs import CommandError

    if original is None:
        why = ("its content was pruned (older than the retention window)" if message.get("pruned") else
               "they were valid for its charset, so nothing was lost in decoding them (show prints the text)")
        raise CommandError(f"message {message['id']} has no original bytes kept: {why}")
    sys.stdout.flush()
    sys.stdout.buffer.write(original)
    sys.stdout.buffer.flush()
    return 0


def _codec_name(original: bytes) -> str:
    """The charset the bytes declare (BOM, else MSH-18, else UTF-8), as ``decode_frame`` read it."""
    from engine.hl7.charset import frame_codec

    codec = frame_codec(original)
    return "utf-8" if codec == "utf-8-sig" else codec


def _block(title: str, text: str | None) -> None:
    if text is None:
        return
    print(f"{title}:")
    indent = " " * (len(title) - len(title.lstrip()) + 2)
    print(indent + text.replace("\r", "\n").rstrip("\n").replace("\n", "\n" + indent))


def status_command(args, path) -> int:
    """Counts from the store; a broken channel file does not stop it (its problems are listed, with
    those of the running daemon's latest live reload: ``reload.json`` beside the store)."""
    from engine.runtime.reload import read_state

    config, store, problems = _open_store_leniently(path)
    try:
        counts = store.channel_counts()
    finally:
        store.close_readers()
    daemon = read_state(config) or {}
    reported = [p for p in daemon.get("problems", []) if isinstance(p, dict) and p.get("text")]
    texts = [p["text"] for p in reported]
    texts += [str(problem) for problem in problems if str(problem) not in texts]
    invalid = {p["channel"]: [] for p in reported if p.get("channel")}
    for problem in reported:
        if problem.get("channel"):
            invalid[problem["channel"]].append(problem["text"])
    configured = [c.name for c in config.channels]
    names = configured + [n for n in invalid if n not in configured]
    names += sorted(set(counts) - set(names))
    enabled = {c.name: c.enabled for c in config.channels}
    rows = []
    for name in names:
        row = {"name": name, "state": "invalid" if name in invalid else _state(name, enabled),
               **{k: counts.get(name, {}).get(k, 0) for k in ("received", "filtered", "queued", "sent", "errored")},
               "problems": invalid.get(name, [])}
        rows.append(row)
    unattached = [text for text in texts if not any(text in row["problems"] for row in rows)]
    if args.json:
        print(json.dumps(rows, indent=2))
        for text in unattached:
            print(f"problem: {text}", file=sys.stderr)
        return 0
    print(f"{'CHANNEL':24} {'STATE':10} {'RECEIVED':>9} {'FILTERED':>9} {'QUEUED':>7} {'SENT':>8} {'ERRORED':>8}")
    for row in rows:
        print(f"{row['name'][:24]:24} {row['state']:10} {row['received']:>9} {row['filtered']:>9} "
              f"{row['queued']:>7} {row['sent']:>8} {row['errored']:>8}")
    if texts:
        print("\nproblems in the configuration files (a running daemon keeps the previous version of a channel "
              "whose file has one):")
        for text in texts:
            print(f"  {text}")
    return 0


def _open_store_leniently(path):
    """(config without the channels whose files have problems, store, those problems)."""
    from engine.config.loading import plugins_dir_of
    from engine.cli.tool_verbs import CommandError
    from engine.core.plugins import PluginError, load_plugins
    from engine.runtime.reload_plan import load_lenient

    try:
        registry = load_plugins(plugins_dir_of(path))
    except PluginError as error:
        raise CommandError(str(error)) from None
    config, problems, _bad = load_lenient(path, registry)
    if config is None:
        for problem in problems:
            print(str(problem), file=sys.stderr)
        raise CommandError(f"{len(problems)} problem(s) in the configuration")
    return config, _open_readonly(config), problems


def _state(name: str, enabled: dict) -> str:
    """Without the admin API (a later issue) the CLI knows the configured state, not the live one."""
    if name not in enabled:
        return "removed"
    return "enabled" if enabled[name] else "disabled"
