"""Retention: prune message content older than ``[store] retention`` (DESIGN §3.1), while the
daemon runs (``Retention``) and by hand (``switchboard prune``).

What pruning clears and what it keeps is the store's business (``engine/store/sqlite/retention.py``);
this module decides when. The daemon checks every ``interval`` seconds (the retention / 1000,
between 1 s and 60 s: a 30-day window is checked every minute) and prunes batch after batch, each
one write through the store's writer sent once the last one committed, on a later reactor turn, so
pruning shares the writer with live traffic instead of holding it. The CLI prunes through a
connection of its own beside a running daemon (``Store.prune_offline``).
"""

from __future__ import annotations

import time

from twisted.internet import defer, task
from twisted.logger import Logger

from engine.store import PRUNE_BATCH as BATCH
from engine.store.sqlite.schema import iso_utc

log = Logger(namespace="switchboard.retention")


def check_interval(retention: float) -> float:
    return min(60.0, max(1.0, retention / 1000.0))


class Retention:
    """The daemon's pruning loop: every ``interval`` seconds, prune batches until none is left.

    ``start()`` after the store opened, ``stop()`` (a Deferred: the batch in flight commits)
    before it closes. ``retention`` <= 0 keeps everything and starts nothing."""

    def __init__(self, store, retention: float, reactor, *, batch: int = BATCH,
                 interval: float | None = None, clock=time.time) -> None:
        self.store = store
        self.retention = float(retention)
        self.reactor = reactor
        self.batch = batch
        self.interval = check_interval(self.retention) if interval is None else interval
        self.clock = clock
        self.pruned_total = 0
        self._loop: task.LoopingCall | None = None
        self._pass: defer.Deferred | None = None
        self._stopping = False

    def start(self) -> None:
        if self.retention <= 0 or self._loop is not None:
            return
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)
        log.info("retention: pruning content older than {seconds:.0f} s, checked every {interval:.0f} s",
                 seconds=self.retention, interval=self.interval)

    def _tick(self) -> defer.Deferred:
        self._pass = self.run_pass()
        return self._pass

    @defer.inlineCallbacks
    def run_pass(self):
        """Prune batch after batch (each on a later reactor turn) until a batch comes back short.
        Never fails: a store error is logged and the next check tries again."""
        pruned = 0
        if self.retention <= 0:  # "0" keeps everything
            return pruned
        cutoff = iso_utc(self.clock() - self.retention)
        try:
            while not self._stopping:
                n = yield self.store.prune_batch(cutoff, limit=self.batch)
                pruned += n
                if n < self.batch:
                    break
                yield task.deferLater(self.reactor, 0, lambda: None)
            if pruned:
                yield self.store.record_pruned(pruned, cutoff, by="retention", now=self.clock())
        except Exception as error:
            log.error("retention: pruning stopped after {n} message(s): {error}", n=pruned, error=str(error))
        if pruned:
            self.pruned_total += pruned
            log.info("retention: pruned the content of {n} message(s) received before {cutoff}",
                     n=pruned, cutoff=cutoff)
        return pruned

    def stop(self) -> defer.Deferred:
        """Stop checking; the Deferred fires once the batch in flight (if any) has committed."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        running = self._pass
        if running is None or running.called:
            return defer.succeed(None)
        done = defer.Deferred()
        running.addBoth(lambda result: (done.callback(None), result)[1])
        return done
