"""``switchboard messages``: search stored messages (read-only, beside a running daemon)."""

from __future__ import annotations

import json

from engine.cli.common import message_id, open_store, time_bound, whole_number


MAX_LIMIT = 100_000      # the store's own cap on one page (and on limit + offset)


def add_search_arguments(parser) -> None:
    parser.add_argument("--channel")
    parser.add_argument("--status")
    parser.add_argument("--since", help="a duration back from now (1h, 30d) or an ISO time")
    parser.add_argument("--until", help="a duration back from now or an ISO time")
    parser.add_argument("--type", help="message type, e.g. ADT^A08 (ADT matches every trigger)")
    parser.add_argument("--control-id")
    parser.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--text", help="words in the message content, all of them (JANE DOE, MRN0012*)")
    parser.add_argument("--limit", default="100")
    parser.add_argument("--offset", default="0")
    parser.add_argument("--before-id", metavar="ID",
                        help="the messages listed after this one (next page: the last id shown)")


def search_filters(args) -> dict:
    from engine.cli.common import CommandError

    meta = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--meta takes KEY=VALUE, not {item!r}")
        meta[key] = value
    filters = {"channel": args.channel, "status": args.status, "since": time_bound(args.since),
               "until": time_bound(args.until), "type": args.type, "control_id": args.control_id,
               "meta": meta or None, "limit": whole_number(args.limit, "--limit", minimum=1, maximum=MAX_LIMIT),
               "offset": whole_number(args.offset, "--offset", maximum=MAX_LIMIT)}
    if getattr(args, "text", None):
        filters["text"] = args.text
    if getattr(args, "before_id", None) is not None:
        filters["before_id"] = message_id(args.before_id, "--before-id")
    return filters


def messages_command(args, path) -> int:
    from engine.cli.common import CommandError

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
