"""What every listening source shares: bind (TCP or TLS), report the address, stop gracefully,
and decide who may connect.

A subclass sets ``self.factory`` (with ``connections`` and ``drain()``, which fires once no
connection waits for an answer) and ``self.options`` (``listen``, optional ``tls``).  Stopping is
the same for MLLP and HTTP: stop accepting, let in-flight messages get their answers (bounded),
then close what is left.

``ConnectionGate`` holds a listener's open connections by peer address and enforces two caps: the
listener's ``max_connections`` and ``max_connections_per_address``, so that sockets from one
address (a scanner, a broken client opening a connection per message) cannot take every slot of
a channel's real sender.  When a cap is reached the gate may make room by closing the open
connection that is *evictable* (the protocol says: for MLLP, one that never had a message
accepted and waits for no answer) and idle the longest; otherwise the newcomer is refused.
Refusals and evictions are logged by ``RefusalLog``: the first one at once, then one summary line
per minute while they go on -- never a line per connection (a flood made 1,900 lines a second).
"""

from __future__ import annotations

import time
from collections import Counter

from twisted.internet import defer
from twisted.logger import Logger

log = Logger(namespace="switchboard.listener")

SUMMARY_SECONDS = 60.0


def peer_host(transport) -> str:
    """The peer's address without its port ('?' when the transport has none: a test's)."""
    peer = transport.getPeer() if transport is not None else None
    return str(getattr(peer, "host", "?"))


class RefusalLog:
    """One line for the first refused (or evicted) connection, then one summary per minute.

    ``note(address, reason)`` counts; the first note of a quiet period is logged at once and opens
    a ``SUMMARY_SECONDS`` window; at its end the window's count (by reason, with the busiest
    addresses) is logged in one line if there was any, and a new window opens; a window with
    none closes the period.  At most two lines a minute per listener, whatever the flood."""

    def __init__(self, label: str, reactor=None, *, window: float = SUMMARY_SECONDS) -> None:
        self.label = label
        self.reactor = reactor
        self.window = window
        self.reasons: Counter = Counter()
        self.addresses: Counter = Counter()
        self.timer = None
        self.total = 0

    def note(self, address: str, kind: str, detail: str = "") -> None:
        """``kind``: a short label summed in the summary; ``detail``: the first line's sentence."""
        self.total += 1
        if self.timer is None:
            log.warn("{label}: connection from {address} {detail}; further refusals are summed up every "
                     "{window:.0f}s", label=self.label, address=address, detail=detail or kind, window=self.window)
            self._open()
            return
        self.reasons[kind] += 1
        self.addresses[address] += 1

    def _open(self) -> None:
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        self.timer = reactor.callLater(self.window, self._summary)

    def _summary(self) -> None:
        self.timer = None
        if not self.reasons:
            return
        count = sum(self.reasons.values())
        reasons = "; ".join(f"{n} {reason}" for reason, n in self.reasons.most_common())
        busiest = ", ".join(f"{address} ({n})" for address, n in self.addresses.most_common(3))
        log.warn("{label}: {count} more connections refused or evicted in the last {window:.0f}s: {reasons}; "
                 "from {busiest}", label=self.label, count=count, window=self.window, reasons=reasons,
                 busiest=busiest)
        self.reasons.clear()
        self.addresses.clear()
        self._open()

    def stop(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class ConnectionGate:
    """A listener's open connections, by peer address, under two caps (see the module docstring).

    A connection object given to ``admit`` needs ``gate_address`` (set here), and, for eviction,
    ``evictable()`` (True when closing it loses nothing), ``last_active`` (a monotonic time) and
    ``evict()`` (close it now).  ``connections`` is the set of admitted connections."""

    def __init__(self, label: str, *, max_connections: int, per_address: int | None,
                 reactor=None, evict: bool = False) -> None:
        self.max_connections = max_connections
        self.per_address = per_address
        self.evict = evict
        self.connections: set = set()
        self.by_address: dict[str, set] = {}
        self.refusals = RefusalLog(label, reactor)

    def admit(self, connection, address: str) -> bool:
        """Take ``connection`` (from ``address``), making room by eviction if allowed; False: refuse it."""
        mine = self.by_address.get(address, ())
        if self.per_address and len(mine) >= self.per_address:
            if not self._make_room(mine, address, f"over max_connections_per_address = {self.per_address}"):
                self.refusals.note(address, "refused (max_connections_per_address)",
                                   f"refused: {self.per_address} connections already open from that address "
                                   f"(max_connections_per_address)")
                return False
        if len(self.connections) >= self.max_connections:
            if not self._make_room(self.connections, address, f"at max_connections = {self.max_connections}"):
                self.refusals.note(address, "refused (max_connections)",
                                   f"refused: {self.max_connections} connections already open (max_connections)")
                return False
        self.add(connection, address)
        return True

    def add(self, connection, address: str) -> None:
        connection.gate_address = address
        self.connections.add(connection)
        self.by_address.setdefault(address, set()).add(connection)

    def release(self, connection) -> None:
        self.connections.discard(connection)
        address = getattr(connection, "gate_address", None)
        mine = self.by_address.get(address)
        if mine is not None:
            mine.discard(connection)
            if not mine:
                del self.by_address[address]

    def take_from(self, other: "ConnectionGate") -> list:
        """Adopt ``other``'s open connections (live reload keeps the port and its connections)."""
        moved = list(other.connections)
        for connection in moved:
            other.release(connection)
            self.add(connection, getattr(connection, "gate_address", "?"))
        return moved

    def _make_room(self, among, address: str, why: str) -> bool:
        if not self.evict:
            return False
        candidates = [c for c in among if c.evictable()]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: c.last_active)
        self.release(victim)
        self.refusals.note(victim.gate_address, "evicted (idle, no message accepted)",
                           f"closed to make room: idle {time.monotonic() - victim.last_active:.1f}s and no message "
                           f"accepted on it, while a new connection from {address} came {why}")
        victim.evict()
        return True

    def stop(self) -> None:
        self.refusals.stop()

from engine.connectors.send_at_once import send_at_once
from engine.connectors.tls import server_endpoint


class ListeningSource:
    factory = None
    options: dict = {}
    reactor = None
    port = None

    @defer.inlineCallbacks
    def start(self):
        host, port = self.options["listen"]
        endpoint = server_endpoint(self.reactor, host, port, self.options.get("tls"))
        self.port = yield endpoint.listen(self.factory)
        send_at_once(self.port)

    def retarget(self, sink) -> None:
        """What arrives from now on, on open connections too, goes to ``sink`` (live reload)."""
        self.factory.sink = sink

    def take_over(self, old: "ListeningSource") -> bool:
        """Take ``old``'s listening port and open connections (same address and TLS); False if not.

        The port keeps listening (its factory, or the TLS wrapper's inner factory, is swapped) and
        each open connection's protocol is pointed at our factory, so its next frame or request
        reaches the new channel; what it sent before is answered by the old one."""
        if not isinstance(old, ListeningSource) or old.port is None or type(old) is not type(self):
            return False
        if (old.options.get("listen"), old.options.get("tls")) != (self.options.get("listen"), self.options.get("tls")):
            return False
        port = old.port
        outer = port.factory
        if getattr(outer, "wrappedFactory", None) is old.factory:
            outer.wrappedFactory = self.factory
        elif outer is old.factory:
            port.factory = self.factory
        else:
            return False
        self.factory.doStart()
        old.factory.doStop()
        for connection in self.factory.gate.take_from(old.factory.gate):
            connection.factory = self.factory
        old.factory.gate.stop()
        self.port, old.port = port, None
        return True

    @property
    def address(self) -> tuple[str, int]:
        bound = self.port.getHost()
        return bound.host, bound.port

    @defer.inlineCallbacks
    def stop(self, timeout: float = 10.0):
        """Stop listening, answer what was already taken (at most ``timeout``), close connections."""
        if self.port is not None:
            yield self.port.stopListening()
            self.port = None
        drained = self.factory.drain()
        timer = self.reactor.callLater(timeout, lambda: drained.called or drained.callback(None))
        yield drained
        if timer.active():
            timer.cancel()
        self.factory.gate.stop()
        for connection in list(self.factory.connections):
            if connection.transport is not None:
                shut = getattr(connection, "shut", None)
                shut() if shut is not None else connection.transport.loseConnection()
