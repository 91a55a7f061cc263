"""The composition root: the daemon's service tree, built from a checked config in one place.

Twisted's ``MultiService`` starts its children in order and stops them in reverse, which is the
whole start-up and shutdown sequence:

1. ``StoreService``: opens (and migrates) the message store; closed last, after its writer drained.
2. ``retention``: prunes content older than ``[store] retention``; its batch in flight commits
   before the store closes.  With several nodes also ``cluster`` (the leases) and ``recovery``
   (what a dead node stored but never processed), before it.
3. ``Engine``: every channel built (``runtime.assembly``) and started: queues resume, messages
   left RECEIVED are processed, then sources open.  One channel failing to start is marked failed;
   the others serve on.
4. ``admin``: the admin API, dashboard, metrics, audit and alerts (started in the same reactor
   turn as the sources, so the metrics see every message).  With ``[engine] workers`` > 1 only
   worker 1 serves it (its reads come from the shared store); the other workers run the rest.
5. ``reloader``: live reload, once every channel has started (a reload never races a first start).

Lower layers never import this module or the admin side: the engine does not know who watches it.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from engine.admin.server import AdminServer
from engine.core.plugins import Registry
from engine.runtime.facade import Runtime
from engine.runtime.cluster import RETENTION, Cluster, HeldPart, default_node_name
from engine.runtime.recovery import RECOVERY, Recovery
from engine.runtime.reload import Reloader
from engine.runtime.retention import Retention
from engine.runtime.services import Engine
from engine.store import open_store
from engine.store.sqlite.store import Store, StoreError

log = Logger(namespace="switchboard.engine")


class StoreService(service.Service):
    name = "store"

    def __init__(self, config, reactor) -> None:
        self.config, self.reactor, self.store = config, reactor, None

    def startService(self) -> None:
        path = self.config.store.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.config.store.url and path.exists():
            self._refuse_a_damaged_store(path)
        self.store = open_store(self.config.store, reactor=self.reactor)
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        return self.store.close() if self.store is not None else None

    @staticmethod
    def _refuse_a_damaged_store(path) -> None:
        """SQLite's quick check before the first write: a store with damaged pages would take
        messages (and ACK them AA) into a file that may lose them, or fail them with a misleading
        reason ("FOREIGN KEY constraint failed").  The start stops with the recovery steps."""
        findings = Store.quick_check(path)
        if findings:
            more = f" (and {len(findings) - 3} more)" if len(findings) > 3 else ""
            raise StoreError(f"the store is damaged: SQLite's quick_check says: {'; '.join(findings[:3])}{more}. "
                             f"Nothing was received. To recover: {Store.recovery_steps(path)}")


class PartService(service.Service):
    """A part of the daemon made when it starts (it needs the open store and the built channels)
    and kept on the engine under ``name`` for the parts that talk to it."""

    def __init__(self, name: str, engine: Engine, make, *, after: defer.Deferred | None = None) -> None:
        self.name, self.engine, self.make, self.after, self.part = name, engine, make, after, None

    def startService(self) -> None:
        service.Service.startService(self)
        if self.after is None:
            self._start()
        else:
            self.after.addCallback(lambda result: (self._start() if self.running else None, result)[1])

    def _start(self) -> None:
        self.part = self.make(self.engine)
        setattr(self.engine, self.name, self.part)
        if self.part is not None:
            self.part.start()

    def stopService(self):
        service.Service.stopService(self)
        part, self.part = self.part, None
        return part.stop() if part is not None else None


class Daemon(service.MultiService):
    def stopService(self):
        """Every part stops (together, as ``MultiService`` stops them), then the store: the parts'
        last writes need it open (the cluster giving its leases up, so the other nodes need not
        wait ``lease`` for them)."""
        service.Service.stopService(self)
        store = self.namedServices.get("store")
        parts = [part for part in reversed(list(self)) if part is not store]
        d = defer.DeferredList([defer.maybeDeferred(part.stopService) for part in parts])
        if store is not None:
            d.addCallback(lambda _: store.stopService())
        d.addCallback(lambda _: log.info("switchboard stopped"))
        return d


def _retention(engine: Engine):
    retention = Retention(engine.store, engine.config.store.retention, engine.reactor)
    return retention if engine.cluster is None else HeldPart(retention, engine.cluster, RETENTION)


def _recovery(engine: Engine):
    """Several nodes: what a dead node stored but never processed, on one node at a time."""
    return HeldPart(Recovery(engine, engine.config.store.lease, engine.reactor), engine.cluster, RECOVERY)


def _cluster(engine: Engine) -> Cluster | None:
    """Several nodes on one PostgreSQL store: this node's leases (engine/runtime/cluster.py)."""
    return engine.cluster


def _admin(engine: Engine, relay=None) -> AdminServer | None:
    try:
        return AdminServer(Runtime(engine, relay=relay))
    except Exception:  # noqa: BLE001 - the channels serve on; the API stays closed, never open
        log.failure("admin API, metrics, audit and alerts not started")
        return None


def _reloader(engine: Engine) -> Reloader | None:
    try:
        return Reloader(engine)
    except Exception:  # noqa: BLE001 - the daemon serves on without live reload
        log.failure("live reload not started")
        return None


def node_name(config, worker: int | None = None) -> str:
    """This node's name in the cluster: ``[cluster] node`` (default the host name), and ``NODE-I``
    for worker I of several, so ``switchboard nodes`` and ``held_by`` tell the workers apart."""
    node = config.store.node or default_node_name()
    return f"{node}-{worker}" if worker else node


def build(config, *, reactor=None, registry: Registry | None = None, worker: int | None = None,
          relay=None) -> tuple[service.MultiService, Engine]:
    """The daemon's service tree for ``config`` (already checked) and its engine.

    ``worker``: this process is worker I of ``[engine] workers`` (engine/runtime/workers.py): its
    node name says so and only worker 1 serves the admin API.  ``relay(channel, action)``: what the
    admin API calls after a channel start/stop/pause, so the other workers do the same."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    root = Daemon()
    store = StoreService(config, reactor)
    store.setServiceParent(root)
    engine = Engine(config, store_service=store, reactor=reactor, registry=registry)
    if config.store.url:
        engine.cluster = Cluster(engine, node_name(config, worker), config.store.lease, reactor)
        PartService("cluster", engine, _cluster).setServiceParent(root)
        PartService("recovery", engine, _recovery).setServiceParent(root)
    PartService("retention", engine, _retention).setServiceParent(root)
    engine.setServiceParent(root)
    if worker in (None, 1):
        PartService("admin", engine, lambda engine: _admin(engine, relay)).setServiceParent(root)
    PartService("reloader", engine, _reloader, after=engine.started).setServiceParent(root)
    return root, engine
