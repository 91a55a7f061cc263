"""``switchboard store copy --to URL|PATH``: copy the configured store, ids, statuses and queues
kept, into an empty PostgreSQL database (``--to postgresql://...``) or a new SQLite file
(``--to PATH``), e.g. before switching ``[store]`` from ``path`` to ``url``. Stop the daemon
first: the copy reads the store as it is when each table is read. See ``engine/store/copy.py``."""

from __future__ import annotations

import json
import sys

from engine.cli.common import CommandError, open_config


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="store_action", required=True, metavar="ACTION")
    copy = actions.add_parser("copy", help="copy the store into an empty PostgreSQL database or a new SQLite file",
                              description="copy the store into an empty PostgreSQL database or a new SQLite file")
    copy.add_argument("--to", required=True, metavar="URL|PATH",
                      help="postgresql://user@host:5432/db, or the path of a new SQLite file")
    copy.add_argument("--json", action="store_true", help="print the rows copied per table as JSON")


def command(args, path) -> int:
    from engine.store import StoreError
    from engine.store.copy import copy_store

    config = open_config(path)
    source = config.store.url or config.store.path
    if not config.store.url and not config.store.path.exists():
        raise CommandError(f"no message store at {config.store.path} yet (start the daemon once)")
    try:
        copied = copy_store(source, args.to)
    except StoreError as error:
        raise CommandError(str(error)) from None
    if args.json:
        print(json.dumps(copied, sort_keys=True))
    else:
        for table, count in copied.items():
            print(f"{table:>14}  {count}")
        print("copied; point [store] at the new store and start the daemon", file=sys.stderr)
    return 0
