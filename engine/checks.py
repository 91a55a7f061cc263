"""``switchboard check``: every problem in the config, channels, templates and plugins, at once.

``engine.config`` finds what is wrong in the TOML (keys, types, ports, names).  This module then
goes one step further, as buildbot's checkconfig does: it loads the plugins, compiles every
``when`` expression and template and builds every destination connector, collecting each failure
with the file and key it belongs to.  Nothing listens and nothing is stored.
"""

from __future__ import annotations

from engine.config import ConfigError, Problem, load_config
from engine.pipeline import ChannelPipeline, PipelineError
from engine.plugins import PluginError, load_plugins


def check(path, *, environ=None):
    """Return (config or None, list of Problem)."""
    try:
        config = load_config(path, environ=environ)
    except ConfigError as error:
        return None, list(error.problems)
    try:
        registry = load_plugins(config.engine.plugins_dir)
    except PluginError as error:
        return config, [Problem(str(config.engine.plugins_dir), "plugins", str(error))]
    from engine.service import ConnectorContext, build_templates

    templates = build_templates(config, registry)
    problems: list[Problem] = []
    for channel in config.channels:
        where = str(channel.file)
        if channel.source.type not in registry.sources:
            problems.append(Problem(where, "source.type", f"no source type {channel.source.type!r}"))
        try:
            ChannelPipeline(channel, registry, templates)
        except PipelineError as error:
            problems.extend(Problem(where, key, reason) for key, reason in error.problems)
        for destination in channel.destinations:
            cls = registry.destinations.get(destination.type)
            key = f"destination[{destination.name}]"
            if cls is None:
                problems.append(Problem(where, f"{key}.type", f"no destination type {destination.type!r}"))
                continue
            try:
                cls(destination, ConnectorContext(channel.name, templates, None), None)
            except Exception as error:  # a connector refusing its options: report, don't crash
                problems.append(Problem(where, key, f"{type(error).__name__}: {error}"))
    return config, problems
