"""One destination's durable, ordered queue: send the head, retry it with backoff, move on.

The store is the queue (delivery rows with status QUEUED); memory holds a window of it so the hot
path never reads SQLite.  While the window has room, newly queued deliveries are appended to it;
once it is full (a peer is down and work piles up) the queue "spills": new entries stay only in
the store and the window is refilled from the store, in order, when it drains.

Order: one send at a time, the head first.  A transient failure holds the line (the head is
retried after ``interval * backoff**n`` capped at ``max_interval``, or the peer's Retry-After);
a permanent failure marks the head ERROR and the line moves on.  ``attempts = 0`` retries until
success; ``attempts = N`` turns the Nth transient failure into ERROR.

SENT is recorded without waiting for its commit before the next send: a crash between the peer's
ACK and that commit re-sends the message at the next start (at-least-once, DESIGN §2).

Depth warning: the queue counts its QUEUED deliveries (the store's count at start when the queue
spilled, then +1 per push, -1 per SENT or ERROR) and logs one warning when the count reaches the
destination's ``queue_warning`` (default 10,000), and one "back under" line once it has fallen to
half of it -- the gap keeps a queue hovering around the threshold from filling the log.  Counts,
channel and destination names only.  The exact figure is the metrics' ``switchboard_queue_depth``.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta, timezone

from twisted.internet import defer
from twisted.logger import Logger

from engine import faults
from engine.delivery import Delivery, PermanentError, TransientError

log = Logger(namespace="switchboard.queue")

WINDOW = 1000
QUEUE_WARNING = 10_000


class DestinationQueue:
    def __init__(self, channel: str, config, connector, store, events, reactor, *, window: int = WINDOW) -> None:
        self.channel = channel
        self.name = config.name
        self.retry = config.retry
        self.connector = connector
        self.store = store
        self.events = events
        self.reactor = reactor
        self.window = window
        self.pending: deque[Delivery] = deque()
        self.spilled = False
        self.sending = False
        self.running = False
        self.failures = 0            # consecutive transient failures of the head
        self.last_error: str | None = None
        self.retry_call = None
        self.unsettled = 0           # attempt records not yet committed
        self.depth = 0               # QUEUED deliveries, in memory and spilled (see the docstring)
        options = getattr(config, "options", None) or {}
        self.warn_at = int(options.get("queue_warning") or QUEUE_WARNING)
        self.over_warning = False
        self.in_flight: defer.Deferred | None = None   # the latest send's Deferred (stop_after_send)
        self._settled: list[defer.Deferred] = []
        self._idle: list[defer.Deferred] = []

    # -- feeding ---------------------------------------------------------------------------
    def start(self) -> None:
        """Load the head of the durable queue (recovery) and start sending."""
        self.running = True
        self._refill()
        if self.spilled:
            stats = self.store.queue_stats().get((self.channel, self.name)) or {}
            self.depth = max(int(stats.get("depth") or 0), len(self.pending))
        self._note_depth()
        self.kick()

    def push(self, delivery_id: int, message_id: int, body: str, meta: dict | None = None) -> None:
        self.depth += 1
        self._note_depth()
        if self.spilled or len(self.pending) >= self.window:
            self.spilled = True
        else:
            self.pending.append(Delivery(delivery_id, message_id, body, 0, meta))
        self.kick()

    def _refill(self) -> None:
        rows = self.store.next_queued(self.channel, self.name, limit=self.window + 1)
        self.spilled = len(rows) > self.window
        rows = rows[: self.window]
        if not self.spilled:
            self.depth = len(rows)   # everything QUEUED is in the window: the exact count
        meta = self.store.metadata_for([row["message_id"] for row in rows]) if rows else {}
        self.pending = deque(Delivery(row["id"], row["message_id"], row["body"] or "", row.get("attempts") or 0,
                                      meta.get(row["message_id"], {}))
                             for row in rows)

    @property
    def depth_hint(self) -> int:
        return len(self.pending)

    def _note_depth(self) -> None:
        """Log crossing ``queue_warning`` upwards once, and once more when back under half of it."""
        if not self.over_warning and self.depth >= self.warn_at:
            self.over_warning = True
            log.warn("{channel}/{destination}: {depth} deliveries queued, at or over queue_warning = {limit}; "
                     "the destination is not keeping up", channel=self.channel, destination=self.name,
                     depth=self.depth, limit=self.warn_at)
        elif self.over_warning and self.depth <= self.warn_at // 2:
            self.over_warning = False
            # a warning too, so that a log filtered at "warning" shows the pair
            log.warn("{channel}/{destination}: queue back under {half} ({depth} queued; queue_warning = {limit})",
                     channel=self.channel, destination=self.name, half=self.warn_at // 2, depth=self.depth,
                     limit=self.warn_at)

    def _taken(self) -> None:
        """One delivery left the queue (SENT or ERROR)."""
        self.depth = max(self.depth - 1, 0)
        self._note_depth()

    # -- sending ---------------------------------------------------------------------------
    def kick(self) -> None:
        if not self.running or self.sending or (self.retry_call is not None and self.retry_call.active()):
            return
        if not self.pending:
            if self.spilled:
                self.sending = True
                self._when_settled().addCallback(self._refill_then_kick)
                return
            self._notify_idle()
            return
        self.sending = True
        head = self.pending[0]
        try:
            d = defer.maybeDeferred(self.connector.send, head)
        except Exception as error:  # pragma: no cover - maybeDeferred catches; belt and braces
            d = defer.fail(error)
        d.addCallbacks(self._sent, self._failed, callbackArgs=(head,), errbackArgs=(head,))
        d.addErrback(lambda failure: log.failure("{channel}/{destination}: queue bookkeeping failed",
                                                 failure, channel=self.channel, destination=self.name))
        self.in_flight = d

    def _refill_then_kick(self, _):
        self.sending = False
        if self.running:
            self._refill()
            self.kick()

    def _sent(self, result, head: Delivery) -> None:
        faults.point("kill_after_downstream_ack_before_sent")  # crash tests: peer ACKed, SENT not recorded
        self.pending.popleft()
        self._taken()
        self.failures = 0
        self.last_error = None
        self._record(head, ok=True, response=result.response if result else None, final_status="SENT")
        self.events.emit("sent", self.channel, head.message_id, destination=self.name)
        self.sending = False
        self.kick()

    def _failed(self, failure, head: Delivery) -> None:
        error = failure.value
        self.sending = False
        if not self.running:
            return
        response = getattr(error, "response", None)
        reason = getattr(error, "reason", None) or f"{type(error).__name__}"
        if not isinstance(error, (TransientError, PermanentError)):
            log.failure("{channel}/{destination}: connector raised unexpectedly; retrying", failure,
                        channel=self.channel, destination=self.name)
        self.last_error = reason
        permanent = isinstance(error, PermanentError)
        self.failures += 1
        if not permanent and self.retry.attempts and self.failures >= self.retry.attempts:
            permanent = True
            reason = f"{reason} (gave up after {self.failures} attempts)"
        possible_duplicate = bool(getattr(error, "possible_duplicate", False))
        if permanent:
            self.pending.popleft()
            self._taken()
            self.failures = 0
            self._record(head, ok=False, error=reason, response=response, final_status="ERROR",
                         possible_duplicate=possible_duplicate)
            log.warn("{channel}/{destination}: message {id} ERROR: {reason}", channel=self.channel,
                     destination=self.name, id=head.message_id, reason=reason)
            self.events.emit("error", self.channel, head.message_id, destination=self.name, reason=reason)
            self.kick()
            return
        delay = self.backoff(self.failures, getattr(error, "retry_after", None))
        next_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
        self._record(head, ok=False, error=reason, response=response, final_status=None,
                     next_attempt_at=next_at.isoformat(), possible_duplicate=possible_duplicate)
        log.info("{channel}/{destination}: message {id} attempt {n} failed ({reason}); retry in {delay:.1f}s",
                 channel=self.channel, destination=self.name, id=head.message_id, n=self.failures,
                 reason=reason, delay=delay)
        self.retry_call = self.reactor.callLater(delay, self._retry)

    def _retry(self) -> None:
        self.retry_call = None
        self.kick()

    def backoff(self, failures: int, retry_after: float | None = None) -> float:
        delay = self.retry.interval * (self.retry.backoff ** max(failures - 1, 0))
        delay = min(delay, self.retry.max_interval)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry.max_interval))
        return delay

    # -- bookkeeping -----------------------------------------------------------------------
    def _record(self, head: Delivery, **kwargs) -> None:
        self.unsettled += 1
        d = self.store.record_attempt(head.id, **kwargs)

        def settled(result):
            self.unsettled -= 1
            if not self.unsettled:
                waiting, self._settled = self._settled, []
                for waiter in waiting:
                    waiter.callback(None)
            return result

        d.addBoth(settled)
        d.addErrback(lambda failure: log.error(
            "{channel}/{destination}: attempt for message {id} not recorded: {error}",
            channel=self.channel, destination=self.name, id=head.message_id, error=failure.getErrorMessage()))

    def _when_settled(self) -> defer.Deferred:
        if not self.unsettled:
            return defer.succeed(None)
        d = defer.Deferred()
        self._settled.append(d)
        return d

    def _notify_idle(self) -> None:
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)

    def wait_empty(self) -> defer.Deferred:
        """Fires once nothing is pending in memory and every attempt is committed (tests, stop)."""
        d = defer.Deferred()
        if not self.pending and not self.spilled and not self.sending:
            return self._when_settled()
        self._idle.append(d)
        return d.addCallback(lambda _: self._when_settled())

    def stop_after_send(self) -> defer.Deferred:
        """``stop``, once the send in progress (if any) has its outcome recorded: a live reload
        (engine/reload.py) replaces this queue by one that loads QUEUED rows from the store, and
        that one must not send the same head while this one still waits for its answer."""
        self.running = False
        d = self.in_flight
        if not self.sending or d is None or d.called:
            return self.stop()
        answered = defer.Deferred()

        def relay(result):
            answered.callback(None)
            return result

        d.addBoth(relay)
        return answered.addCallback(lambda _: self.stop())

    def stop(self) -> defer.Deferred:
        """Stop sending; an in-flight send finishes (its outcome is recorded), then close."""
        self.running = False
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        d = self._when_settled()
        d.addCallback(lambda _: self.connector.close() if hasattr(self.connector, "close") else None)
        return d
