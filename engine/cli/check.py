"""``switchboard check``: validate config, channels, templates and plugins; exit 1 listing every problem.

``--store`` also runs SQLite's full ``integrity_check`` on the message store (the daemon runs the
quicker ``quick_check`` at every start) and prints the recovery steps when it fails.
"""

from __future__ import annotations

import sys

from engine.cli.common import CommandError, checked_config, open_config


def check_command(args, path) -> int:
    if getattr(args, "store", False):
        return _check_store(path)
    config = checked_config(path)
    print(f"{path}: ok ({len(config.channels)} channel(s))")
    return 0


def _check_store(path) -> int:
    from engine.runtime.check import check_store

    config = open_config(path, lenient=True)     # a broken channel file must not hide the store's state
    problems = check_store(config)
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        raise CommandError(f"the message store {config.store.path} is damaged (see above)")
    state = "ok" if config.store.path.exists() else "not created yet (nothing to check)"
    print(f"{config.store.path}: {state} (integrity_check)")
    return 0
