"""``switchboard nodes [--json]``: the nodes sharing this PostgreSQL store, each one's last
heartbeat and what it holds (DESIGN §4; engine/runtime/cluster.py). Reads the store, so it works
from any node, and with no node running."""

from __future__ import annotations

import json

from engine.cli.common import CommandError, open_store


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help='[{"name", "last_seen", "holds": [...]}]')


def command(args, path) -> int:
    config, store = open_store(path)
    try:
        if not config.store.url:
            raise CommandError("nodes need a shared PostgreSQL store ([store] url); this one is SQLite, one node")
        found = store.nodes()
    finally:
        store.close_readers()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no node has started on this store yet")
    for node in found:
        holds = ", ".join(node["holds"]) or "nothing"
        print(f"{node['name']}  last seen {node['last_seen']} ({node['seconds_ago']:.0f}s ago)  holds: {holds}")
    return 0
