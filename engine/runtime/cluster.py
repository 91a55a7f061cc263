"""Several nodes on one PostgreSQL store (DESIGN §4): what runs on one node at a time, under a lease.

Every node runs the same channels; their listeners take messages everywhere (each message is
committed before its ACK, on whichever node took it). What must run on ONE node at a time is held
under a lease in the store (``engine/store/postgres/leases.py``): each destination queue
(``queue:CHANNEL/DESTINATION``), each file or SFTP poller (``poller:CHANNEL``: a source whose
class says ``leased = True``) and retention (``retention``). ``Cluster`` renews this node's
leases every ``lease / 3``, takes what is free or expired, and runs exactly what it holds:

- a held queue is started (it loads its QUEUED deliveries from the store, in message order, the
  other nodes' included); while it is held it refills from the store whenever its window drains,
  and when idle looks every ``poll`` seconds, so deliveries other nodes committed reach it. A
  queue not held only stores: its node does not send.
- a held poller is started (it scans its folder or remote path at once); on the other nodes the
  channel is "started" but its poller idles. Two nodes polling one folder would both read a file
  before either moved it; the store's idempotency keys would keep its messages once, but the
  lease keeps the reading (and the move, and the X12 answer) to one node.
- a queue whose lease this node lost (another node took it, or this node could not renew it for
  ``lease`` seconds on its own monotonic clock) stops sending at once; its SENT and ERROR records
  carry the lease's fencing token, which the store checks, so a node that lost a lease without
  knowing it cannot record over the new holder's work.
- when a queue changes holder, the new holder sends from the oldest QUEUED delivery, so the
  destination's order holds; a delivery the old holder had sent but not yet recorded SENT is sent
  again (at-least-once); the first ``RESEND_WINDOW`` deliveries at the head of a queue taken over
  from another holder are recorded ``possible_duplicate`` when next attempted.

Timing: expiry is the database's clock (``clock_timestamp()``), never a node's wall clock; a
node's own view of "I may have lost it" uses ``time.monotonic`` (``reactor.seconds`` under a
``task.Clock`` in tests). So a takeover happens within ``lease`` of the holder's last renewal,
and the first delivery follows within one retry interval of the queue's start.

Readiness (``ready``): the last lease round succeeded less than ``lease`` ago, so the store is
reachable and the leases renewed; the admin server's ``/readyz`` answers 200 or 503 from it, for
a load balancer's health check.
"""

from __future__ import annotations

import socket
import time

from twisted.internet import defer, task, threads
from twisted.logger import Logger

log = Logger(namespace="switchboard.cluster")

RETENTION = "retention"
# After a takeover, how many deliveries at the head of the queue may have been sent by the node that
# held it before without being recorded (it records its SENTs once per reactor turn through the group
# commit): their next attempt is recorded as a possible duplicate.
RESEND_WINDOW = 256


def queue_resource(channel: str, destination: str) -> str:
    return f"queue:{channel}/{destination}"


def poller_resource(channel: str) -> str:
    return f"poller:{channel}"


def holders(nodes: list[dict]) -> dict[str, str]:
    """``{resource: node}`` from the store's ``nodes()`` (each node's unexpired leases)."""
    return {resource: node["name"] for node in nodes for resource in node.get("holds", [])}


def channel_holders(found: dict[str, str], channel: str, destinations, polled: bool) -> dict[str, str | None]:
    """What of ``channel`` runs under a lease and which node holds each (None: nobody right now,
    e.g. during a takeover): its poller when ``polled`` (a file or SFTP source), each queue."""
    resources = ([poller_resource(channel)] if polled else []) + [queue_resource(channel, d) for d in destinations]
    return {resource: found.get(resource) for resource in resources}


def default_node_name() -> str:
    return socket.gethostname() or "node"


class HeldPart:
    """A part of the daemon that runs only while this node holds ``resource`` (retention)."""

    def __init__(self, part, cluster: "Cluster", resource: str) -> None:
        self.part, self.cluster, self.resource, self.active = part, cluster, resource, False
        cluster.parts[resource] = self

    def start(self) -> None:
        """Started by the daemon: runs once the cluster holds the lease."""

    def activate(self) -> None:
        if not self.active:
            self.active = True
            d = defer.maybeDeferred(self.part.start)
            d.addErrback(self._start_failed)

    def _start_failed(self, failure) -> None:
        self.active = False
        log.error("cluster: {resource} could not start on node {node}: {error}", resource=self.resource,
                  node=self.cluster.node, error=failure.getErrorMessage())

    def deactivate(self):
        if self.active:
            self.active = False
            return self.part.stop()
        return None

    def stop(self):
        return self.deactivate()

    def __getattr__(self, name):
        return getattr(self.part, name)


class Cluster:
    """This node's leases and what it runs under them. ``start``/``stop`` by the daemon."""

    def __init__(self, engine, node: str, lease: float, reactor, *, poll: float = 0.5, clock=None) -> None:
        self.engine, self.node, self.lease, self.reactor = engine, node, float(lease), reactor
        self.poll = min(poll, self.lease / 3)
        self.clock = clock or time.monotonic
        self.queues: dict[str, object] = {}       # resource -> DestinationQueue
        self.parts: dict[str, HeldPart] = {}
        self.held: dict[str, int] = {}            # resource -> fencing token
        self.active: set[str] = set()             # queues running here
        self.takeovers: list[dict] = []           # {"resource", "at"}: for the status and the tests
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self._round = None
        self._poller = None
        self._in_round = False
        self._stopped = False
        self._round_waiters: list[defer.Deferred] = []

    # -- the daemon's side ------------------------------------------------------------------
    def adopt(self, channel: str, queue, first: bool = True) -> None:
        """A channel's queue (new, or resumed after a stop): it runs here only while this node
        holds its lease."""
        resource = queue_resource(channel, queue.name)
        if self.queues.get(resource) is not queue:
            self.active.discard(resource)   # a live reload replaced the queue: the new one starts
        self.queues[resource] = queue
        if resource not in self.held:
            return
        if first or resource not in self.active:
            self.active.discard(resource)
            self._activate_queue(resource)
        elif not queue.running:
            queue.running = True
            queue.kick()

    def run_source(self, channel: str, source) -> None:
        """A channel's poller (started, resumed, or replaced by a live reload): it polls here only
        while this node holds ``poller:CHANNEL``; the next lease round takes it if it is free."""
        resource = poller_resource(channel)
        current = self.parts.get(resource)
        if current is not None and current.part is source:
            if resource in self.held:
                current.activate()
            return
        if current is not None:
            current.deactivate()
        part = HeldPart(source, self, resource)
        if resource in self.held:
            part.activate()

    def drop_source(self, channel: str, source=None):
        """The channel stops or pauses (or a reload replaces its poller): stop polling here and give
        the lease up at the next round. A Deferred, fired once the poller stopped."""
        resource = poller_resource(channel)
        part = self.parts.get(resource)
        if part is None or (source is not None and part.part is not source):
            return defer.succeed(None)
        del self.parts[resource]
        return defer.maybeDeferred(part.deactivate)

    def running_here(self) -> list[str]:
        """What this node runs under its leases now (queues sending, pollers polling, retention)."""
        active = set(self.active) | {r for r, part in self.parts.items() if part.active}
        return sorted(active)

    def holds(self, channel: str, destination: str) -> bool:
        return queue_resource(channel, destination) in self.active

    @property
    def ready(self) -> bool:
        return self.last_ok is not None and self.clock() - self.last_ok < self.lease

    def start(self) -> None:
        self._stopped = False
        self._round = task.LoopingCall(self._tick)
        self._round.clock = self.reactor
        self._round.start(self.lease / 3, now=True).addErrback(
            lambda f: log.failure("cluster: lease rounds stopped", f))
        self._poller = task.LoopingCall(self._poll_idle)
        self._poller.clock = self.reactor
        self._poller.start(self.poll, now=False)

    @defer.inlineCallbacks
    def stop(self):
        self._stopped = True
        for loop in (self._round, self._poller):
            if loop is not None and loop.running:
                loop.stop()
        yield self._round_finished()
        yield defer.DeferredList([d for d in (self._deactivate(r) for r in list(self.active)) if d is not None])
        for resource in list(self.parts):
            yield self.parts[resource].deactivate()
        store = self.engine.store
        if store is not None and hasattr(store, "release_leases"):
            yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), store.release_leases, self.node)

    def status(self) -> dict:
        return {"node": self.node, "ready": self.ready, "holds": sorted(self.held), "lease_seconds": self.lease,
                "last_error": self.last_error}

    # -- the lease round --------------------------------------------------------------------
    def _wanted(self) -> list[str]:
        return sorted(set(self.queues) | set(self.parts))

    def _tick(self):
        if self._in_round or self._stopped:   # stopped: a look scheduled for a lease's expiry
            return None
        self._in_round = True
        store = self.engine.store
        wanted = self._wanted()
        d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), store.lease_tick,
                                      self.node, wanted, self.lease)
        d.addCallbacks(self._renewed, self._failed)
        d.addBoth(self._round_done)
        return None

    def _round_done(self, result):
        self._in_round = False
        for waiter in self._round_waiters:
            waiter.callback(None)
        self._round_waiters = []
        return None

    def _round_finished(self) -> defer.Deferred:
        """Fires once no lease round is in flight: a round committing after ``release_leases``
        would take the leases again and make the other nodes wait ``lease`` for them."""
        if not self._in_round:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._round_waiters.append(waiter)
        return waiter

    def _renewed(self, result) -> None:
        held, soonest = result
        self.last_ok, self.last_error = self.clock(), None
        if soonest is not None and soonest < self.lease / 3:
            # another node's lease on something wanted runs out before the next round: look then
            self.reactor.callLater(soonest + 0.05, self._tick)
        previous, self.held = self.held, dict(held)
        self._fence()
        for resource in self._wanted():
            if resource in held and resource not in previous:
                log.info("cluster: node {node} now holds {resource}", node=self.node, resource=resource)
                self.takeovers.append({"resource": resource, "at": self.clock()})
                if held[resource] > 1 and resource in self.queues:   # someone held it before
                    self._suspect_head(resource)
            if resource in held:
                self._activate(resource)
            else:
                self._deactivate(resource)

    def _failed(self, failure) -> None:
        self.last_error = str(failure.value)
        log.warn("cluster: lease round failed: {error}", error=self.last_error)
        if self.last_ok is None or self.clock() - self.last_ok >= self.lease:
            # another node may hold them now: stop before it starts
            for resource in list(self.held):
                self._deactivate(resource)
            self.held = {}
            self._fence()

    def _fence(self) -> None:
        store = self.engine.store
        if store is None or not hasattr(store, "fences"):
            return
        fences = {}
        for resource, token in self.held.items():
            if resource.startswith("queue:"):
                channel, _, destination = resource[len("queue:"):].partition("/")
                fences[(channel, destination)] = (resource, self.node, token)
        store.fences = fences

    def _suspect_head(self, resource: str) -> None:
        store = self.engine.store
        if not hasattr(store, "suspect"):
            return
        channel, _, destination = resource[len("queue:"):].partition("/")
        try:
            head = store.next_queued(channel, destination, limit=RESEND_WINDOW)
        except Exception as error:  # noqa: BLE001 - the queue still starts; only the flag is lost
            log.warn("cluster: could not read the head of {resource}: {error}", resource=resource, error=str(error))
            return
        store.suspect(row["id"] for row in head)

    def _activate(self, resource: str) -> None:
        if resource in self.parts:
            self.parts[resource].activate()
        elif resource in self.queues:
            self._activate_queue(resource)

    def _activate_queue(self, resource: str) -> None:
        if resource in self.active:
            return
        queue = self.queues[resource]
        self.active.add(resource)
        queue.start()   # loads every QUEUED delivery from the store, in order

    def _deactivate(self, resource: str):
        if resource in self.parts:
            return self.parts[resource].deactivate()
        if resource not in self.active:
            return None
        self.active.discard(resource)
        queue = self.queues.get(resource)
        if queue is None:
            return None
        log.info("cluster: node {node} no longer holds {resource}; its queue stops here", node=self.node,
                 resource=resource)
        return queue.stop()

    def _poll_idle(self) -> None:
        """Deliveries committed by the other nodes (whose listeners stored them) reach the holder
        through the store: a held queue is kept "spilled", so once its window drains it refills
        from the store in message order (new local ones included), and an idle one looks now."""
        for resource in list(self.active):
            queue = self.queues.get(resource)
            if queue is None or not queue.running or queue.refilling:
                continue
            queue.spilled = True
            if not queue.pending and not queue.outstanding:
                queue.kick()
