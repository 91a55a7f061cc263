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


