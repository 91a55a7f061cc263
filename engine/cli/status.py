"""``switchboard status``: per channel its state and counts, from the store and the daemon's state files."""

from __future__ import annotations

import json
import sys


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


def _state(name: str, enabled: dict) -> str:
    """Without the admin API (a later issue) the CLI knows the configured state, not the live one."""
    if name not in enabled:
        return "removed"
    return "enabled" if enabled[name] else "disabled"
