"""The admin side's one door into the running engine.

The admin API, dashboard, metrics and alerts read and act through ``Runtime`` only, so the
engine's insides (its services dict, its event bus, its registry) can change without the admin
side noticing, and what the admin side may do is listed here in one place.
"""

from __future__ import annotations

from typing import Callable


class Runtime:
    def __init__(self, engine, *, relay: Callable[[str, str], None] | None = None) -> None:
        self._engine = engine
        self._replayer = None
        self._relay = relay

    # -- what the daemon is -----------------------------------------------------------------
    @property
    def config(self):
        return self._engine.config

    @property
    def reactor(self):
        return self._engine.reactor

    @property
    def store(self):
        """The store's public interface (reads, audit, replay records)."""
        return self._engine.store

    @property
    def cluster(self):
        """This node's leases with several nodes on one PostgreSQL store (runtime/cluster.py), else None."""
        return self._engine.cluster

    def lease_holders(self) -> dict[str, str]:
        """With several nodes: ``{resource: node}`` for every lease held in the cluster (any node's;
        ``queue:CHANNEL/DESTINATION``, ``poller:CHANNEL``, ``retention``); ``{}`` with one node.
        Blocking (reads the store): call it in a thread."""
        store = self._engine.store
        if self._engine.cluster is None or not hasattr(store, "nodes"):
            return {}
        from engine.runtime.cluster import holders

        return holders(store.nodes())

    def channel_holders(self, found: dict[str, str], channel_config) -> dict[str, str | None]:
        """The leases of one channel (its poller, each queue) and the node holding each, from
        ``lease_holders()``."""
        from engine.runtime.cluster import channel_holders

        service = self._engine.channel_services.get(channel_config.name)
        polled = bool(getattr(getattr(service, "source", None), "leased", False))
        return channel_holders(found, channel_config.name, [d.name for d in channel_config.destinations], polled)

    @property
    def hook(self):
        """The plugin hooks (alerts call ``hook.alert``)."""
        return self._engine.registry.hook

    def lookup_problems(self) -> list[str]:
        """Code tables (``lookups_dir``) that did not load, as "FILE line N: reason"; a live reload
        keeps the last good version of such a table (engine/runtime/assembly.py)."""
        found = getattr(self._engine.templates, "lookup_problems", None) or []
        return [f"{file}{f' line {line}' if line else ''}: {reason}" for file, line, reason in found]

    # -- channels ---------------------------------------------------------------------------
    def channels(self) -> dict:
        """Running channel services by name: ``state``, ``config``, ``queues``, ``source``."""
        return self._engine.channel_services

    def channel(self, name: str):
        return self._engine.channel_services.get(name)

    # -- observing --------------------------------------------------------------------------
    def observe(self, listener: Callable) -> None:
        """Call ``listener(event)`` for every message event, in the reactor thread."""
        self._engine.events.listeners.append(listener)

    def on_channel_added(self, listener: Callable) -> None:
        """Call ``listener(service)`` when live reload deploys a channel (new or redeployed)."""
        self._engine.channel_listeners.append(listener)

    # -- acting -----------------------------------------------------------------------------
    def channel_changed(self, name: str, action: str) -> None:
        """A channel was started, stopped or paused through the API: with several workers, tell
        the others (engine/runtime/workers.py), so an operator's pause holds on every one."""
        if self._relay is not None:
            self._relay(name, action)

    @property
    def reloader(self):
        """Live reload (its state and problems, ``reload(trigger)``), or None when not running."""
        return getattr(self._engine, "reloader", None)

    @property
    def replayer(self):
        if self._replayer is None:
            from engine.runtime.replay import Replayer

            self._replayer = Replayer(self._engine)
        return self._replayer
