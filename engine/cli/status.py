"""``switchboard status``: per channel the running daemon's state (its admin API), counts (the store),
each destination's last error and the problems of the latest live reload; with several nodes on one
PostgreSQL store also each node and which node holds each channel's poller and queues (DESIGN §4)."""

from __future__ import annotations

import json
import sys


def status_command(args, path) -> int:
    """Counts from the store; a broken channel file does not stop it (its problems are listed, with
    those of the running daemon's latest live reload: ``reload.json`` beside the store)."""
    from engine.admin.states import describe_state
    from engine.runtime.reload import read_state

    config, store, problems = _open_store_leniently(path)
    try:
        counts = store.channel_counts()
        nodes = _nodes(config, store)
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
    live, daemon_note = _live_channels(config)
    configured = [c.name for c in config.channels]
    names = configured + [n for n in invalid if n not in configured]
    names += sorted(set(counts) - set(names))
    enabled = {c.name: c.enabled for c in config.channels}
    rows = []
    for name in names:
        view = live.get(name) if live is not None else None
        running = live is not None and name in live
        row = {"name": name, "state": "invalid" if name in invalid and not running else _state(name, enabled, live),
               **{k: counts.get(name, {}).get(k, 0) for k in ("received", "filtered", "queued", "sent", "errored")},
               "problems": invalid.get(name, []),
               "destinations": [{"name": d.get("name"), "target": d.get("target"), "state": d.get("state", "ok"),
                                 "state_since": d.get("state_since"), "depth": d.get("depth", 0),
                                 "last_error": d.get("last_error")}
                                for d in (view or {}).get("destinations", [])]}
        if nodes is not None:
            row["held_by"] = _held_by(config, name, nodes)
        rows.append(row)
    tables = _table_problems(config, live is not None)
    unattached = [text for text in texts if not any(text in row["problems"] for row in rows)]
    unattached += [f"code table {text}" for text in tables]
    if args.json:
        print(json.dumps(rows, indent=2))
        for text in unattached:
            print(f"problem: {text}", file=sys.stderr)
        return 0
    print(daemon_note)
    if nodes is not None:
        _print_nodes(config, nodes)
    print(f"{'CHANNEL':24} {'STATE':10} {'RECEIVED':>9} {'FILTERED':>9} {'QUEUED':>7} {'SENT':>8} {'ERRORED':>8}")
    for row in rows:
        print(f"{row['name'][:24]:24} {row['state']:10} {row['received']:>9} {row['filtered']:>9} "
              f"{row['queued']:>7} {row['sent']:>8} {row['errored']:>8}")
        if row.get("held_by"):
            print("  held by: " + ", ".join(f"{resource} on {node or 'no node (free or being taken over)'}"
                                            for resource, node in row["held_by"].items()))
        for destination in row["destinations"]:
            if destination["last_error"]:
                print(f"  destination {destination['name']}: last error: {destination['last_error']} "
                      f"-- {describe_state(destination)} (sends to {destination['target']})")
    if tables:
        print("\ncode tables that did not load (the daemon keeps using their last good version):")
        for text in tables:
            print(f"  {text}")
    if texts:
        print("\nproblems in the configuration files (a running daemon keeps the previous version of a channel "
              "whose file has one):")
        for text in texts:
            print(f"  {text}")
    return 0


def _nodes(config, store) -> list[dict] | None:
    """With several nodes on one PostgreSQL store ([store] url): each node and what it holds
    (``switchboard nodes``); None with SQLite (one node, nothing leased)."""
    if not config.store.url or not hasattr(store, "nodes"):
        return None
    return store.nodes()


def _held_by(config, name: str, nodes: list[dict]) -> dict:
    """The channel's leases (its poller, each queue) and the node holding each (None: nobody now)."""
    from engine.runtime.cluster import channel_holders, holders

    channel = next((c for c in config.channels if c.name == name), None)
    if channel is None:
        return {}
    found = holders(nodes)
    polled = channel.source.type in ("file", "sftp") or f"poller:{name}" in found
    return channel_holders(found, name, [d.name for d in channel.destinations], polled)


def _print_nodes(config, nodes: list[dict]) -> None:
    if not nodes:
        print("nodes: none has started on this store yet")
    for node in nodes:
        alive = "" if node["seconds_ago"] < config.store.lease else " (silent: its leases expire)"
        holds = ", ".join(node["holds"]) or "nothing"
        print(f"node {node['name']}: last seen {node['seconds_ago']:.0f}s ago{alive}; holds {holds}")


def _table_problems(config, daemon_running: bool) -> list[str]:
    """Broken code tables: the running daemon's view (``GET /api/reload``: what its last load or
    reload could not read), else the files as they are on disk."""
    if daemon_running:
        from engine.cli.common import AdminClient, CommandError

        try:
            state = AdminClient.for_config(config).call("GET", "/api/reload", timeout=LIVE_TIMEOUT)
            if isinstance(state, dict) and isinstance(state.get("lookups"), list):
                return [str(text) for text in state["lookups"]]
        except CommandError:
            pass
    directory = config.engine.lookups_dir
    if directory is None or not directory.is_dir():
        return []
    from engine.core.lookups import load_tables

    _tables, problems = load_tables(directory)
    return [f"{file}{f' line {line}' if line else ''}: {reason}" for file, line, reason in problems]


def _open_store_leniently(path):
    """(config without the channels whose files have problems, store, those problems)."""
    from engine.cli.common import CommandError
    from engine.config.loading import plugins_dir_of
    from engine.core.plugins import PluginError, load_plugins
    from engine.runtime.reload_plan import load_lenient
    from engine.cli.common import open_readonly_store

    try:
        registry = load_plugins(plugins_dir_of(path))
    except PluginError as error:
        raise CommandError(str(error)) from None
    config, problems, _bad = load_lenient(path, registry)
    if config is None:
        for problem in problems:
            print(str(problem), file=sys.stderr)
        raise CommandError(f"{len(problems)} problem(s) in the configuration")
    return config, open_readonly_store(config), problems


LIVE_TIMEOUT = 3.0


def _live_channels(config) -> tuple[dict | None, str]:
    """The running daemon's view of its channels (``GET /api/channels``: the state each channel is
    in -- started, paused, stopped, failed -- and each destination's last error), keyed by name,
    with a line saying where the states come from.  None when no daemon answers."""
    from engine.cli.common import AdminClient, CommandError

    try:
        client = AdminClient.for_config(config)
        views = client.call("GET", "/api/channels", timeout=LIVE_TIMEOUT)
    except CommandError as error:
        return None, f"daemon: not reachable ({error}); channels shown as stopped"
    if not isinstance(views, list):
        return None, "daemon: its admin API gave an unexpected answer; channels shown as stopped"
    return ({view["name"]: view for view in views if isinstance(view, dict) and view.get("name")},
            f"daemon: running (admin API at {client.where})")


def _state(name: str, enabled: dict, live: dict | None) -> str:
    """The running daemon's state of the channel (started | paused | stopped | failed, as the API and
    dashboard say); ``stopped`` when no daemon runs; ``disabled`` (enabled = false in its file) and
    ``removed`` (stored messages, no file) for channels the daemon does not run."""
    if name not in enabled:
        return "removed"
    if not enabled[name]:
        return "disabled"
    if live is None:
        return "stopped"
    view = live.get(name)
    return view.get("state", "stopped") if view else "stopped"
