"""``switchboard prune``: clear the content of messages older than the retention window, through a
connection of its own beside a running daemon (the same batches as the daemon's retention)."""

from __future__ import annotations

import time

from engine.cli.common import CommandError, open_store
from engine.core.units import parse_age
from engine.store import StoreError, prunable_statuses
from engine.store.sqlite.schema import iso_utc


def add_prune_arguments(parser) -> None:
    parser.add_argument("--older-than", metavar="DURATION",
                        help="prune messages received longer ago than this, e.g. 30d (default: [store] retention)")
    parser.add_argument("--include-errors", action="store_true",
                        help="prune ERROR messages too (QUEUED and RECEIVED ones are never pruned)")
    parser.add_argument("--dry-run", action="store_true", help="count what would be pruned; change nothing")


def prune_command(args, path) -> int:
    """``switchboard prune``: the same batches as the daemon's, through a connection of its own."""
    config, store = open_store(path)
    try:
        if args.older_than is not None:
            try:
                older_than = parse_age(args.older_than, "--older-than")
            except ValueError as error:
                raise CommandError(str(error)) from None
        else:
            older_than = config.store.retention
            if older_than <= 0:
                print("[store] retention is 0 (keep everything): nothing pruned; give --older-than to prune by hand")
                return 0
        now = time.time()
        cutoff = iso_utc(now - older_than)
        if args.dry_run:
            return _report_dry_run(store.count_prunable(cutoff, args.include_errors), cutoff, args.include_errors)
    finally:
        store.close_readers()
    try:
        pruned, before, after = store.prune_offline(config.store.url or config.store.path, cutoff, args.include_errors, now)
    except StoreError as error:
        raise CommandError(str(error)) from None
    print(f"pruned the content of {pruned} message(s) received before {cutoff}; "
          f"store {before / 2**20:,.1f} MB -> {after / 2**20:,.1f} MB")
    return 0


def _report_dry_run(counts: dict, cutoff: str, include_errors: bool) -> int:
    pruned = prunable_statuses(include_errors)
    would = sum(counts[s] for s in pruned) - counts.get("ERROR_QUEUED", 0)
    kept = {s: n for s, n in counts.items() if s not in pruned and s != "ERROR_QUEUED" and n}
    if counts.get("ERROR_QUEUED"):
        kept["ERROR (a destination still QUEUED)"] = counts["ERROR_QUEUED"]
    print(f"would prune the content of {would} message(s) received before {cutoff} (dry run: nothing changed)")
    for status in pruned:
        print(f"  {status:12} {counts[status]}")
    if kept:
        print("kept: " + ", ".join(f"{n} {s}" for s, n in kept.items()))
    return 0
