"""``switchboard check``: every problem at once, as buildbot's checkconfig does.

It loads the configuration as the daemon does (``engine.config.loading``), then compiles every
channel through ``engine.runtime.assembly.compile_channel`` -- the same code the daemon builds
with -- collecting each failure with the file and key it belongs to.  Nothing listens and nothing
is stored.
"""

from __future__ import annotations

from engine.config.loader import ConfigError, Problem
from engine.config.loading import load, open_webhook
from engine.runtime.assembly import build_templates, compile_channel


def check(path, *, environ=None):
    """Return (config or None, registry or None, list of Problem)."""
    try:
        config, registry = load(path, environ=environ)
    except ConfigError as error:
        return None, None, list(error.problems)
    templates = build_templates(config, registry)
    problems: list[Problem] = []
    for channel in config.channels:
        where = str(channel.file)
        problems.extend(open_webhook(channel, where))
        for key, reason in compile_channel(channel, registry, templates).problems:
            problem = Problem(where, key, reason)
            if problem not in problems:
                problems.append(problem)
    return config, registry, problems


def check_store(config) -> list[str]:
    """``switchboard check --store``: SQLite's full ``integrity_check`` of the configured store
    (every page, every index against its table).  [] when sound; else the findings, then the
    recovery steps as the last line.  A store that does not exist yet is sound (nothing to check)."""
    from engine.store.sqlite.store import Store

    path = config.store.path
    if not path.exists():
        return []
    findings = Store.integrity_check(path)
    if not findings:
        return []
    return [f"{path}: {finding}" for finding in findings] + [f"to recover: {Store.recovery_steps(path)}"]
