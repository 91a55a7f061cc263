"""The channels' Twisted services: ``Engine`` (a MultiService) -> one ``ChannelService`` each.

Reconfiguration follows buildbot's pattern: live reload (engine/runtime/reload.py) only prepares a
validated plan; ``Engine.reconfigure`` reconciles its children with it by name (removes, adds) and
asks each changed ``ChannelService`` to ``reconfigure`` itself, which swaps its own parts.

Start order (the store is already open: engine/app.py): build every channel (pipeline compiled,
connectors made), start the destination queues (recovering QUEUED entries), process messages left
RECEIVED, then open the sources.  Stop order is the reverse and graceful: sources stop accepting,
in-flight messages get their answers (their commits finish), queues stop after the send in
progress.  One channel failing to start (its port taken, say) is logged and marked
``failed``; the others serve on.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from engine.core.channel import Channel
from engine.core.events import Events
from engine.core.plugins import Registry, load_plugins
from engine.core.queue import DestinationQueue
from engine.connectors.listener import ListeningSource
from engine.runtime.assembly import Built, build_channel, build_templates
from engine.store.sqlite.store import Store

log = Logger(namespace="switchboard.engine")


class ChannelStateError(Exception):
    """An admin request that does not fit the channel's state (pausing a stopped channel)."""


class ChannelService(service.Service):
    """One channel: its source, its pipeline and its destination queues."""

    def __init__(self, engine: "Engine", config) -> None:
        self.engine = engine
        self.config = config
        self.name = config.name
        self.state = "stopped"
        self.start_error: str | None = None   # why the latest start failed (PHI-free: the source's error)
        self.channel: Channel | None = None
        self.source = None
        self.queues: dict[str, DestinationQueue] = {}
        self._started_once = False
        self._transitions = defer.DeferredLock()   # admin start/stop/pause, one at a time
        self.fingerprint = None   # what live reload compares (engine/runtime/reload_plan.py)

    def build(self, store) -> None:
        engine = self.engine
        built = build_channel(self.config, registry=engine.registry, templates=engine.templates, store=store,
                              events=engine.events, reactor=engine.reactor, find_channel=engine.channels.get)
        self.channel, self.source, self.queues = built.channel, built.source, built.queues
        self.channel.on_stalled = self._stalled

    def change(self, action: str) -> defer.Deferred:
        """The admin API's start | stop | pause, serialized per channel."""
        return self._transitions.run({"start": self.start_channel, "stop": self.stop_channel,
                                      "pause": self.pause}[action])

    def exclusive(self, function, *args) -> defer.Deferred:
        """Run ``function`` while no start, stop, pause or other redeploy runs on this channel."""
        return self._transitions.run(function, *args)

    def reconfigure(self, config, pipeline, fingerprint) -> defer.Deferred:
        """Take a new version of this channel in place, this service object staying (live reload).

        The new ``Channel`` and pipeline take over as the source's sink.  The source is kept when
        its options did not change; a listener whose address and TLS did not change is handed over
        open connections included; only a new address is bound afresh.  An unchanged destination
        keeps its queue; a changed one gets a new queue once the old one has the outcome of its
        send in progress, and the new queue loads the QUEUED rows: nothing lost or sent twice."""
        return self.exclusive(self._reconfigure, config, pipeline, fingerprint)

    @defer.inlineCallbacks
    def _reconfigure(self, config, pipeline, fingerprint):
        engine = self.engine
        old_channel, old_source, old_queues, state = self.channel, self.source, self.queues, self.state
        running = Built(self.config, old_channel, old_source, old_queues, [])
        built = build_channel(config, registry=engine.registry, templates=engine.templates, store=engine.store,
                              events=engine.events, reactor=engine.reactor, find_channel=engine.channels.get,
                              pipeline=pipeline, running=running)
        source, restart = built.source, False
        if source is old_source:
            how = "source kept"
        else:
            how = "source rebuilt"
            if state == "started":
                if isinstance(source, ListeningSource) and source.take_over(old_source):
                    how = "listener kept"
                else:
                    yield self._stop_source(old_source)
                    restart, how = True, "listener rebound"
            restart = restart or state == "failed"
        self.config, self.channel, self.source, self.queues = config, built.channel, source, built.queues
        self.fingerprint = fingerprint
        self.channel.on_stalled = self._stalled
        engine.channels[self.name] = self.channel
        if state == "stopped":
            self._started_once = False     # a stopped channel loads its new queues at its next start
        engine.channel_added(self)
        yield old_channel.wait_idle()          # what the old version took is stored and queued
        retired = [queue for name, queue in old_queues.items() if built.queues.get(name) is not queue]
        yield defer.DeferredList([queue.stop_after_send() for queue in retired], consumeErrors=True)
        if state in ("started", "paused", "failed"):
            for queue in built.fresh:
                self._start_queue(queue)       # loads every QUEUED row, the old queue's leftovers first
        if restart:
            try:
                yield self._start_source(source)
            except Exception as error:  # noqa: BLE001 - e.g. the new port is taken: the channel reports it
                self.state = "failed"
                log.error("channel {channel} failed to start its {type} source: {error}", channel=config.name,
                          type=config.source.type, error=str(error))
                return
            self.state = "started"
        self._log_redeployed(how)

    def _log_redeployed(self, how: str) -> None:
        """The line the daemon writes for a redeployed channel (tests parse it for the port)."""
        if self.state != "started":
            log.info("channel {channel} redeployed ({state}; {how})", channel=self.name, state=self.state, how=how)
            return
        log.info("channel {channel} started: {type} source{where}, {n} destination(s) (redeployed; {how})",
                 channel=self.name, type=self.config.source.type, where=self._where(), n=len(self.queues), how=how)

    def _where(self) -> str:
        address = getattr(self.source, "address", None)
        try:
            return f" on {address[0]}:{address[1]}" if address else ""
        except Exception:  # noqa: BLE001 - a listener without a port
            return ""

    def _stalled(self, count: int, seconds: float) -> None:
        """The channel's pipeline held the reactor (and so every channel) too long, ``count``
        messages in a row (engine/core/channel.py, STALL_SECONDS): pause it.  What it stored stays and
        its queues keep delivering; an operator resumes it once the template or plugin is fixed."""
        log.error("channel {channel} paused: its filters and transforms held the engine {seconds:.1f}s or "
                  "more on {n} messages in a row (a template loop or a slow plugin step), and every "
                  "channel waits meanwhile; fix it, then resume: POST /api/channels/{channel}/start or the "
                  "dashboard", channel=self.name, seconds=seconds, n=count)
        self.engine.reactor.callLater(0, self._pause_after_stall)

    def _pause_after_stall(self) -> None:
        d = self.change("pause")
        d.addErrback(lambda failure: log.error("channel {channel} could not be paused: {error}",
                                               channel=self.name, error=failure.getErrorMessage()))

    @defer.inlineCallbacks
    def start_channel(self):
        """Start the channel, or start it again after a pause, a stop or a failed start.

        The first start loads each queue from the store and processes messages left RECEIVED; a
        later one resumes the queues as they are in memory (their window still holds their head)
        and does not recover again: a message whose processing is still in flight would be
        processed twice."""
        if self.state == "started":
            return
        first, self._started_once = not self._started_once, True
        for queue in self.queues.values():
            self._start_queue(queue, first)
        # with several nodes, the recovery lease's holder does it (engine/runtime/recovery.py)
        recovered = self.channel.recover() if first and self.engine.cluster is None else 0
        if recovered:
            log.info("channel {channel}: processing {n} message(s) stored before the last stop",
                     channel=self.name, n=recovered)
        try:
            yield self._start_source(self.source)
        except Exception as error:
            self.state = "failed"
            self.start_error = str(error)
            log.error("channel {channel} failed to start its {type} source: {error}", channel=self.name,
                      type=self.config.source.type, error=str(error))
            return
        self.state, self.start_error = "started", None
        log.info("channel {channel} started: {type} source{where}, {n} destination(s)", channel=self.name,
                 type=self.config.source.type, where=self._where(), n=len(self.queues))

    def _start_queue(self, queue, first: bool = True) -> None:
        """Start a queue (``first``: load it from the store) or resume it; with several nodes on
        one store it sends only on the node holding its lease (engine/runtime/cluster.py)."""
        if self.engine.cluster is not None:
            self.engine.cluster.adopt(self.name, queue, first)
        elif first:
            queue.start()
        elif not queue.running:
            queue.running = True
            queue.kick()

    def _start_source(self, source) -> defer.Deferred:
        """Open the source; with several nodes on one store, a poller (file, SFTP: ``leased``)
        polls only on the node holding its lease (engine/runtime/cluster.py)."""
        if self.engine.cluster is not None and getattr(source, "leased", False):
            self.engine.cluster.run_source(self.name, source)
            return defer.succeed(None)
        return defer.maybeDeferred(source.start)

    def _stop_source(self, source) -> defer.Deferred:
        if self.engine.cluster is not None and getattr(source, "leased", False):
            return self.engine.cluster.drop_source(self.name, source)
        return defer.maybeDeferred(source.stop)

    @defer.inlineCallbacks
    def pause(self):
        """Stop the source (nothing new comes in); the queues keep delivering what is stored."""
        if self.state == "paused":
            return
        if self.state != "started":
            raise ChannelStateError(f"channel {self.name} is {self.state}; only a started channel can be paused")
        yield self._stop_source(self.source)
        yield self.channel.wait_idle()
        self.state = "paused"
        log.info("channel {channel} paused: source stopped, {n} destination queue(s) still sending",
                 channel=self.name, n=len(self.queues))

    @defer.inlineCallbacks
    def stop_channel(self):
        """Stop the source and the queues; QUEUED deliveries wait in the store. The daemon runs on."""
        if self.state == "stopped":
            return
        if self.state == "started":
            yield self._stop_source(self.source)
        yield self.channel.wait_idle()
        yield defer.DeferredList([queue.stop() for queue in self.queues.values()])
        self.state = "stopped"
        log.info("channel {channel} stopped; the daemon runs on", channel=self.name)

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        if self.source is not None and self.state == "started":
            yield self._stop_source(self.source)
        if self.channel is not None:
            yield self.channel.wait_idle()
        yield defer.DeferredList([queue.stop() for queue in self.queues.values()])
        self.state = "stopped"
        log.info("channel {channel} stopped", channel=self.name)


class Engine(service.MultiService):
    """The daemon: the store, the plugin registry, the templates and every enabled channel."""

    def __init__(self, config, *, store_service, reactor=None, registry: Registry | None = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.store_service = store_service
        self.registry = registry or load_plugins(config.engine.plugins_dir)
        self.templates = build_templates(config, self.registry)
        self.events = Events(self.registry.hook)
        self.channels: dict[str, Channel] = {}
        self.channel_services: dict[str, ChannelService] = {}
        self.admin = None        # set by engine/app.py: the admin API, metrics, audit log and alerts
        self.reloader = None     # set by engine/app.py: live reload on file changes and SIGHUP
        self.retention = None    # set by engine/app.py: pruning by [store] retention
        self.cluster = None      # set by engine/app.py with [store] url: leases (engine/runtime/cluster.py)
        self.channel_listeners: list = []    # called with each channel service live reload deploys
        self.started: defer.Deferred = defer.Deferred()
        for channel_config in config.channels:
            if channel_config.enabled:
                child = ChannelService(self, channel_config)
                child.setServiceParent(self)
                self.channel_services[channel_config.name] = child

    @property
    def store(self) -> Store | None:
        """The store the store service opened (None before it starts): one source, never stale."""
        return self.store_service.store

    def channel_added(self, channel_service) -> None:
        for listener in self.channel_listeners:
            listener(channel_service)

    def startService(self) -> None:
        service.Service.startService(self)
        for child in self.channel_services.values():
            child.build(self.store)
            self.channels[child.name] = child.channel
        d = defer.DeferredList([c.start_channel() for c in self.channel_services.values()])
        for child in self.channel_services.values():
            service.Service.startService(child)
        d.addCallback(lambda _: log.info("switchboard started: {n} channel(s), store {path}",
                                         n=len(self.channel_services), path=str(self.config.store.path)))
        d.addCallback(lambda _: self.started.callback(self))

    def stopService(self):
        d = service.MultiService.stopService(self)
        d.addCallback(lambda _: log.info("channels stopped"))
        return d

    # -- live reload (buildbot's reconfig: reconcile the children by name) ----------------------
    @defer.inlineCallbacks
    def reconfigure(self, plan, outcome: dict):
        """Take a validated reload plan (engine/runtime/reload_plan.py): remove the channels it no
        longer has, let each changed one reconfigure itself, add the new ones.  A channel whose file
        has a problem keeps running as it is.  ``outcome`` gets the names under removed,
        redeployed, added, kept and unchanged; one channel's failure never stops the others."""
        new = plan.config
        wanted = {channel.name: channel for channel in new.channels if channel.enabled}
        removals, changed = [], []
        for name, child in list(self.channel_services.items()):
            if Path(child.config.file).resolve() in plan.bad_files:
                outcome["kept"].append(name)
            elif name not in wanted:
                removals.append(name)
            elif plan.fingerprints[name] != child.fingerprint:
                changed.append(name)
            else:
                outcome["unchanged"].append(name)
        additions = [name for name in wanted if name not in self.channel_services]
        if plan.registry_changed:
            self.registry = plan.registry
            self.events.hook = plan.registry.hook
        self.templates = plan.templates
        results = yield defer.DeferredList([self.remove_channel(name) for name in removals], consumeErrors=True)
        self._record(outcome, "removed", removals, results, "could not be stopped")
        results = yield defer.DeferredList(
            [self.channel_services[name].reconfigure(wanted[name], plan.pipelines[name], plan.fingerprints[name])
             for name in changed], consumeErrors=True)
        self._record(outcome, "redeployed", changed, results, "could not be redeployed")
        results = yield defer.DeferredList(
            [self.add_channel(wanted[name], plan.fingerprints[name]) for name in additions], consumeErrors=True)
        self._record(outcome, "added", additions, results, "could not be added")
        kept = [self.channel_services[name].config for name in outcome["kept"]]
        named = {channel.name for channel in new.channels}
        channels = sorted(list(new.channels) + [c for c in kept if c.name not in named], key=lambda c: str(c.file))
        self.config = replace(self.config, channels=tuple(channels))

    @staticmethod
    def _record(outcome: dict, word: str, names: list, results, failed: str) -> None:
        for name, (ok, result) in zip(names, results):
            if ok:
                outcome[word].append(name)
            else:
                log.failure("reload: channel {channel} " + failed, result, channel=name)

    @defer.inlineCallbacks
    def add_channel(self, config, fingerprint=None):
        """Build, attach and start a channel the running daemon did not have."""
        child = ChannelService(self, config)
        child.fingerprint = fingerprint
        child.build(self.store)
        self.channels[config.name] = child.channel
        self.channel_services[config.name] = child
        child.setServiceParent(self)
        self.channel_added(child)
        yield child.exclusive(child.start_channel)

    @defer.inlineCallbacks
    def remove_channel(self, name: str):
        """Stop and detach a channel; its stored messages stay."""
        child = self.channel_services[name]
        yield child.exclusive(lambda: defer.maybeDeferred(child.disownServiceParent))
        self.channel_services.pop(name, None)
        self.channels.pop(name, None)
        log.info("channel {channel} removed: its file is gone or says enabled = false; its stored messages stay",
                 channel=name)
