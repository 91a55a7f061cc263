"""``switchboard check``: validate config, channels, templates and plugins; exit 1 listing every problem."""

from __future__ import annotations

from engine.cli.common import checked_config


def check_command(args, path) -> int:
    config = checked_config(path)
    print(f"{path}: ok ({len(config.channels)} channel(s))")
    return 0
