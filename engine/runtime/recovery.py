"""With several nodes on one store: messages a dead node stored (and ACKed) but never processed.

A single daemon processes what it left RECEIVED when it starts again.  With several nodes that is
wrong: the RECEIVED messages of a channel include the ones the *other* nodes stored a moment ago
and are processing now, and processing one twice makes two deliveries of it (the second node's
write batch then fails on the store's unique delivery row, with everything else in it).  So under
a cluster, recovery runs on one node at a time, under the ``recovery`` lease, and takes only
messages that stayed RECEIVED for at least ``lease`` seconds: a live node processes what it stored
long before that (the lease is, by definition, the longest pause a live node may take).  No
node's wall clock is compared: a message is an orphan when two scans ``lease`` apart on this node's
monotonic clock both saw it RECEIVED.

A message is processed within ``lease`` to ``1.5 x lease`` of the holder seeing it (plus a lease
takeover when the dead node held ``recovery``).
"""

from __future__ import annotations

import time

from twisted.internet import defer, task, threads
from twisted.logger import Logger

log = Logger(namespace="switchboard.recovery")

RECOVERY = "recovery"


class Recovery:
    def __init__(self, engine, lease: float, reactor, *, clock=time.monotonic) -> None:
        self.engine, self.lease, self.reactor, self.clock = engine, float(lease), reactor, clock
        self.first_seen: dict[int, float] = {}     # message id -> when a scan first saw it RECEIVED
        self.loop = None
        self.scanning: defer.Deferred | None = None

    def start(self) -> None:
        self.first_seen = {}
        self.loop = task.LoopingCall(self.scan)
        self.loop.clock = self.reactor
        self.loop.start(self.lease / 2, now=True).addErrback(
            lambda failure: log.failure("recovery: scans stopped", failure))

    def stop(self):
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        scanning, self.scanning = self.scanning, None
        return scanning

    def scan(self):
        if self.scanning is not None:
            return None
        channels = {name: service.channel for name, service in self.engine.channel_services.items()
                    if service.channel is not None}
        store = self.engine.store
        self.scanning = d = threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), lambda: {name: store.unprocessed(name) for name in channels})
        d.addCallback(self._found, channels)
        d.addErrback(lambda failure: log.warn("recovery: scan failed: {error}", error=failure.getErrorMessage()))
        d.addBoth(self._done)
        return None

    def _done(self, result):
        self.scanning = None
        return None

    def _found(self, found: dict[str, list[int]], channels: dict) -> None:
        now = self.clock()
        still = {message_id for ids in found.values() for message_id in ids}
        self.first_seen = {message_id: self.first_seen.get(message_id, now) for message_id in still}
        for name, ids in found.items():
            orphans = [message_id for message_id in ids if now - self.first_seen[message_id] >= self.lease]
            if not orphans or self.loop is None or not self.loop.running:
                continue
            log.info("recovery: channel {channel}: processing {n} message(s) stored but left unprocessed "
                     "(a node stopped before processing them)", channel=name, n=len(orphans))
            for message_id in orphans:
                del self.first_seen[message_id]
            channels[name].recover(orphans)
