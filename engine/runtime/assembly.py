"""The one place a channel is built from its config.

Start, live reload, ``switchboard check``, the dry run (``switchboard test``) and replay all build
channels here, so what ``check`` accepts is exactly what the daemon runs.  Two depths:

* ``compile_channel``: the pipeline (``when`` expressions, templates, plugin filters and steps,
  metadata) and each destination connector built once without a reactor (so it cannot connect
  anywhere), every problem collected as ``(key, reason)``.  ``check``, the reload plan, the dry run
  and replay stop here.
* ``build_channel``: the running parts on top: the ``Channel`` with its store and events, one
  ``DestinationQueue`` per destination (an unchanged destination may keep its running queue), and
  the source pointed at the channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from datetime import datetime

from engine.core.channel import Channel
from engine.core.lookups import load_tables, lookup_helpers
from engine.core.message import Message
from engine.core.pipeline import ChannelPipeline, PipelineError
from engine.core.plugins import Registry
from engine.core.queue import DestinationQueue
from engine.core.templates import Templates


def _no_channels(_name: str):
    return None


@dataclass
class ConnectorContext:
    """What a destination connector may use of the engine, and no more: its channel's name, the
    templates, and a way to find a running channel by name (the channel destination)."""

    channel_name: str
    templates: Templates
    find_channel: Callable[[str], Channel | None] = _no_channels
    running: bool = True            # False while ``check`` builds it: no peer is ever contacted
    message_for: Callable[[int], Message | None] | None = None   # a stored message by id (filename templates)


def build_templates(config, registry: Registry, previous: Templates | None = None) -> Templates:
    """The sandboxed templates with the plugins' helpers and the code tables of ``lookups_dir``
    (``lookup(table, key, default=...)`` and the ``|lookup`` filter).  A table that does not load
    keeps its ``previous`` version (live reload) and its problems stay on ``lookup_problems``."""
    tables, problems = {}, []
    directory = config.engine.lookups_dir
    if directory is not None and Path(directory).is_dir():
        tables, problems = load_tables(directory)
        if previous is not None:
            for file, _line, _reason in problems:
                name = Path(file).stem
                if name not in tables and name in previous.lookups:
                    tables[name] = previous.lookups[name]
    lookup_filters, lookup_globals = lookup_helpers(tables)
    templates = Templates(config.engine.transforms_dir, filters={**registry.template_filters, **lookup_filters},
                          globals={**registry.template_globals, **lookup_globals},
                          memory=config.engine.template_memory)
    templates.lookups, templates.lookup_problems = tables, problems
    return templates


@dataclass
class Compiled:
    """A channel compiled without I/O: its pipeline, or the problems that prevent one."""

    config: object
    pipeline: ChannelPipeline | None
    problems: list[tuple[str, str]] = field(default_factory=list)


def compile_channel(channel_config, registry: Registry, templates: Templates) -> Compiled:
    problems: list[tuple[str, str]] = []
    pipeline = None
    used = tables_used(channel_config)
    for file, line, reason in templates.lookup_problems:
        if Path(file).stem in used:
            problems.append(("lookups", f"{file}{f' line {line}' if line else ''}: {reason}"))
    try:
        pipeline = ChannelPipeline(channel_config, registry, templates)
    except PipelineError as error:
        problems.extend(error.problems)
    if registry.sources.get(channel_config.source.type) is None:
        problems.append(("source.type", f"no source type {channel_config.source.type!r}"))
    context = ConnectorContext(channel_config.name, templates, running=False)
    for destination in channel_config.destinations:
        cls = registry.destinations.get(destination.type)
        key = f"destination[{destination.name}]"
        if cls is None:
            problems.append((f"{key}.type", f"no destination type {destination.type!r}"))
            continue
        try:
            cls(destination, context, None)
        except Exception as error:  # noqa: BLE001 - a connector refusing its options: reported, never a crash
            problems.append((key, f"{type(error).__name__}: {error}"))
    return Compiled(channel_config, None if problems else pipeline, problems)


def tables_used(channel_config) -> set[str]:
    """The code tables the channel's edit steps ``map`` through (check, and reload's fingerprint)."""
    steps = list(channel_config.transforms) + [s for d in channel_config.destinations for s in d.transforms]
    return {op["table"] for step in steps if step.edit for op in step.edit if op.get("table")}


def stored_message(store, channel_config, message_id: int) -> Message | None:
    """A stored message as the channel's templates see it (None when unknown or pruned).  Any thread."""
    row = store.get_message(message_id)
    if row is None or row.get("raw") is None:
        return None
    received_at = row.get("received_at")
    if isinstance(received_at, str):
        try:
            received_at = datetime.fromisoformat(received_at.replace("Z", "+00:00"))
        except ValueError:
            pass
    return Message(row["raw"], row.get("inbound") or channel_config.inbound, id=message_id,
                   channel=channel_config.name, received_at=received_at)




@dataclass
class Built:
    """A channel's running parts; ``fresh`` are the queues made new (to be started)."""

    config: object
    channel: Channel
    source: object
    queues: dict[str, DestinationQueue]
    fresh: list[DestinationQueue]


def build_channel(channel_config, *, registry: Registry, templates: Templates, store, events, reactor,
                  find_channel: Callable[[str], Channel | None], pipeline: ChannelPipeline | None = None,
                  running=None) -> Built:
    """Build the running parts of a channel.

    ``running``: the parts of the version this one replaces (live reload).  A destination whose
    config and connector type did not change keeps its queue (and its connection); the source is
    kept when its options did not change, pointed at the new channel (``retarget``)."""
    pipeline = pipeline or ChannelPipeline(channel_config, registry, templates)
    channel = Channel(channel_config, store=store, pipeline=pipeline, events=events, reactor=reactor)
    context = ConnectorContext(channel_config.name, templates, find_channel,
                               message_for=lambda message_id: stored_message(store, channel_config, message_id))
    old_destinations = {d.name: d for d in running.config.destinations} if running else {}
    queues, fresh = {}, []
    for destination in channel_config.destinations:
        cls = registry.destinations[destination.type]
        queue = running.queues.get(destination.name) if running else None
        if queue is None or old_destinations.get(destination.name) != destination or type(queue.connector) is not cls:
            queue = DestinationQueue(channel_config.name, destination, cls(destination, context, reactor), store,
                                     events, reactor)
            fresh.append(queue)
        queues[destination.name] = queue
    channel.queues = queues
    cls = registry.sources[channel_config.source.type]
    source = None
    if running is not None and type(running.source) is cls and \
            (running.config.source, running.config.inbound) == (channel_config.source, channel_config.inbound):
        source = running.source
        source.retarget(channel)
    if source is None:
        source = cls(channel_config, channel, reactor)
    return Built(channel_config, channel, source, queues, fresh)
