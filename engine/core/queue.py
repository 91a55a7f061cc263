"""One destination's durable, ordered queue: send the head, retry it with backoff, move on.

The store is the queue (delivery rows with status QUEUED); memory holds a window of it so the hot
path never reads SQLite.  While the window has room, newly queued deliveries are appended to it;
once it is full (a peer is down and work piles up) the queue "spills": new entries stay only in
the store and the window is refilled from the store, in order, when it drains.

Order: one send at a time, the head first.  A transient failure holds the line (the head is
retried after ``interval * backoff**n`` capped at ``max_interval``, or the peer's Retry-After);
a permanent failure marks the head ERROR and the line moves on.  ``attempts = 0`` retries until
success; ``attempts = N`` turns the Nth transient failure into ERROR.

A connector may allow more sends in flight (``max_in_flight``, the MLLP destination's pipelining
option): the next messages go out before the head's answer, answers come back in order, and a
transient failure stops new sends until the retry, which starts again from the oldest message not
yet SENT.  What was already accepted stays SENT, so a message that failed while later ones got
through arrives after them: the price of pipelining, documented with the option.

SENT is recorded without waiting for its commit before the next send, and the SENTs of one reactor
turn are recorded in one write: a crash between the peer's ACK and that commit re-sends the
message at the next start (at-least-once, DESIGN §2).

Time: a retry waits on a reactor timer (``callLater(delay)``), never on a comparison of wall
times, and the daemon's reactor counts timers on the monotonic clock (engine/core/clock.py), so a
wall-clock step neither holds nor hurries a retry.  ``retry_at`` (``next_attempt_at`` in the
store) is wall time kept only to show people when the next attempt is due.

Depth warning: the queue counts its QUEUED deliveries (the store's count at start when the queue
spilled, then +1 per push, -1 per SENT or ERROR) and logs one warning when the count reaches the
destination's ``queue_warning`` (default 10,000), and one "back under" line once it has fallen to
half of it -- the gap keeps a queue hovering around the threshold from filling the log.  Counts,
channel and destination names only.  The exact figure is the metrics' ``switchboard_queue_depth``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import datetime, timedelta, timezone

from twisted.internet import defer
from twisted.logger import Logger

from engine.core import faults
from engine.core.contracts import Delivery, EventKind, PermanentError, TransientError

log = Logger(namespace="switchboard.queue")

WINDOW = 1000
# How many of the latest sent or failed delivery ids a queue remembers, so that a push arriving after
# its delivery already left (``push``) is told apart; that push comes within milliseconds.
LEFT_IDS_KEPT = 4096
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
        self._window_ids: set[int] = set()   # the ids in ``pending``
        self._left_ids: OrderedDict[int, None] = OrderedDict()   # the latest ids sent or failed here (push)
        self.spilled = False
        self.refilling = False       # the window is being refilled from the store
        self.running = False
        self.failures = 0            # consecutive transient failures of the head
        self.last_error: str | None = None
        self.failing_since: datetime | None = None   # the head's first failure (the dashboard's "retrying since")
        self.retry_call = None
        self.unsettled = 0           # attempt records not yet committed
        self.depth = 0               # QUEUED deliveries, in memory and spilled (see the docstring)
        options = getattr(config, "options", None) or {}
        self.warn_at = int(options.get("queue_warning") or QUEUE_WARNING)
        self.over_warning = False
        self.max_in_flight = max(1, int(getattr(connector, "max_in_flight", 1) or 1))
        self.outstanding: dict[int, defer.Deferred] = {}   # delivery id -> its send, in send order
        self.retry_at = datetime.now(timezone.utc)          # when the scheduled retry is due (shown only)
        self._settled: list[defer.Deferred] = []
        self._sent_batch: list[tuple[int, str | None, int]] = []   # SENT records of this reactor turn
        self._flush_call = None      # the end-of-turn write of _sent_batch (a DelayedCall)
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
        """A delivery was committed QUEUED.  The channel calls this once the commit's callback
        reaches the reactor; a refill that ran in between (``_refill`` reads committed rows) may
        already have put it in the window.  Appending it again would send it twice (the soak
        found this: bench/README.md, "Soak"), so a delivery already in the window is not added,
        and not counted again unless the queue is still spilled (a spilled refill does not
        recount the depth)."""
        if delivery_id in self._window_ids:
            if self.spilled:
                self.depth += 1
                self._note_depth()
            return
        if delivery_id in self._left_ids:
            # Already sent (or failed) from a refill that read it before this push: on PostgreSQL
            # another connection sees a commit before the writer hears it has committed, so the
            # refill, the send and the peer's ACK can all come before the commit's push.  Or a
            # replay made it QUEUED again: the store tells which, so the next refill reads it.
            self.spilled = True
            self.kick()
            return
        self.depth += 1
        self._note_depth()
        if self.spilled or len(self.pending) >= self.window:
            self.spilled = True
        else:
            self.pending.append(Delivery(delivery_id, message_id, body, 0, meta))
            self._window_ids.add(delivery_id)
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
        self._window_ids = {delivery.id for delivery in self.pending}

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
    @property
    def sending(self) -> bool:
        """A send is waiting for its answer, or the window is being refilled from the store."""
        return bool(self.outstanding) or self.refilling

    def kick(self) -> None:
        """Send while there is room in flight (``max_in_flight``, 1 unless the connector says
        more), unless a retry is scheduled; refill the window or report idle when all is done."""
        if not self.running or self.refilling or self._retrying():
            return
        while len(self.outstanding) < self.max_in_flight:
            delivery = self._next_unsent()
            if delivery is None:
                break
            self._send(delivery)
            if not self.running or self.refilling or self._retrying():
                return  # a synchronous answer ran a nested kick that took over
        if self.pending or self.outstanding:
            return
        if self.spilled:
            self.refilling = True
            self._when_settled().addCallback(self._refill_then_kick)
            return
        self._notify_idle()

    def _next_unsent(self) -> Delivery | None:
        for delivery in self.pending:  # the in-flight ones are at the front
            if delivery.id not in self.outstanding:
                return delivery
        return None

    def _send(self, delivery: Delivery) -> None:
        d = defer.maybeDeferred(self.connector.send, delivery)
        self.outstanding[delivery.id] = d  # before the callbacks: a synchronous answer runs them now
        d.addCallbacks(self._sent, self._failed, callbackArgs=(delivery,), errbackArgs=(delivery,))
        d.addErrback(lambda failure: log.failure("{channel}/{destination}: queue bookkeeping failed",
                                                 failure, channel=self.channel, destination=self.name))

    def _refill_then_kick(self, _):
        self.refilling = False
        if self.running:
            self._refill()
            self.kick()

    def _leave(self, delivery: Delivery) -> None:
        """``delivery`` is SENT or ERROR: out of the window (it is nearly always the head)."""
        if self.pending and self.pending[0] is delivery:
            self.pending.popleft()
        else:
            try:
                self.pending.remove(delivery)
            except ValueError:
                return
        self._window_ids.discard(delivery.id)
        self._left_ids[delivery.id] = None
        if len(self._left_ids) > LEFT_IDS_KEPT:
            self._left_ids.popitem(last=False)
        self._taken()

    def _retrying(self) -> bool:
        return self.retry_call is not None and self.retry_call.active()

    def _sent(self, result, delivery: Delivery) -> None:
        faults.point("kill_after_downstream_ack_before_sent")  # crash tests: peer ACKed, SENT not recorded
        self.outstanding.pop(delivery.id, None)
        self._leave(delivery)
        if not self._retrying():  # a later message's success does not clear the head's failures
            self.failures = 0
            self.failing_since = None
            self.last_error = None
        self._record_sent(delivery, result.response if result else None)
        self.events.emit(EventKind.SENT, self.channel, delivery.message_id, destination=self.name)
        self.kick()

    def _failed(self, failure, delivery: Delivery) -> None:
        error = failure.value
        self.outstanding.pop(delivery.id, None)
        if not self.running:
            return
        response = getattr(error, "response", None)
        reason = getattr(error, "reason", None) or f"{type(error).__name__}"
        if not isinstance(error, (TransientError, PermanentError)):
            log.failure("{channel}/{destination}: connector raised unexpectedly; retrying", failure,
                        channel=self.channel, destination=self.name)
        self.last_error = reason
        permanent = isinstance(error, PermanentError)
        possible_duplicate = bool(getattr(error, "possible_duplicate", False))
        if not permanent and self._retrying():
            # pipelined: another send of this round failed first and the retry is set; this one
            # is retried with it, from the head, and does not count as one more failure
            self._record(delivery, ok=False, error=reason, response=response, final_status=None,
                         next_attempt_at=self.retry_at.isoformat(), possible_duplicate=possible_duplicate)
            return
        self.failures += 1
        if self.failures == 1:
            self.failing_since = datetime.now(timezone.utc)
        if not permanent and self.retry.attempts and self.failures >= self.retry.attempts:
            permanent = True
            reason = f"{reason} (gave up after {self.failures} attempts)"
        if permanent:
            self._leave(delivery)
            self.failures = 0
            self.failing_since = None
            self._record(delivery, ok=False, error=reason, response=response, final_status="ERROR",
                         possible_duplicate=possible_duplicate)
            log.warn("{channel}/{destination}: message {id} ERROR: {reason}", channel=self.channel,
                     destination=self.name, id=delivery.message_id, reason=reason)
            self.events.emit(EventKind.ERROR, self.channel, delivery.message_id, destination=self.name, reason=reason)
            self.kick()
            return
        delay = self.backoff(self.failures, getattr(error, "retry_after", None))
        self.retry_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
        self._record(delivery, ok=False, error=reason, response=response, final_status=None,
                     next_attempt_at=self.retry_at.isoformat(), possible_duplicate=possible_duplicate)
        log.info("{channel}/{destination}: message {id} attempt {n} failed ({reason}); retry in {delay:.1f}s",
                 channel=self.channel, destination=self.name, id=delivery.message_id, n=self.failures,
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
        if self._sent_batch:  # keep the records in the order of the outcomes
            self._flush_sent()
        d = self._settling(self.store.record_attempt(head.id, **kwargs))
        d.addErrback(lambda failure: log.error(
            "{channel}/{destination}: attempt for message {id} not recorded: {error}",
            channel=self.channel, destination=self.name, id=head.message_id, error=failure.getErrorMessage()))

    def _record_sent(self, head: Delivery, response: str | None) -> None:
        """The SENTs of one reactor turn go to the store as one write (``Store.record_sent``) at
        the end of the turn: a pipelined queue reads several ACKs per turn.  Not later than that:
        a SENT not yet committed is sent again after a crash, so waiting for the previous write
        to commit (tried: batches grew, and so did the crash test's re-sends, 5 -> 6-9 per kill)
        costs duplicates.  Failures are rare and keep one write each (``_record``), in order."""
        if not self._sent_batch:
            self.unsettled += 1  # the batch counts as one record from now until its write settles
            self._flush_call = self.reactor.callLater(0, self._flush_sent)
        self._sent_batch.append((head.id, response, head.message_id))

    def _flush_sent(self) -> None:
        if self._flush_call.active():
            self._flush_call.cancel()
        batch, self._sent_batch = self._sent_batch, []
        d = self.store.record_sent([(delivery_id, response) for delivery_id, response, _ in batch])
        d.addBoth(self._settled_one)
        d.addErrback(lambda failure: log.error(
            "{channel}/{destination}: SENT not recorded for messages {ids}: {error}", channel=self.channel,
            destination=self.name, ids=",".join(str(message_id) for _, _, message_id in batch),
            error=failure.getErrorMessage()))

    def _settling(self, d: defer.Deferred) -> defer.Deferred:
        """Count a store write until it settles."""
        self.unsettled += 1
        return d.addBoth(self._settled_one)

    def _settled_one(self, result):
        """A counted write settled; wake the ``_when_settled`` waiters at zero."""
        self.unsettled -= 1
        if not self.unsettled:
            waiting, self._settled = self._settled, []
            for waiter in waiting:
                waiter.callback(None)
        return result

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
        """``stop``, once every send in flight has its outcome recorded: a live reload
        (engine/runtime/reload.py) replaces this queue by one that loads QUEUED rows from the store, and
        that one must not send the same messages while this one still waits for their answers."""
        self.running = False
        waiting = [d for d in self.outstanding.values() if not d.called]
        if not waiting:
            return self.stop()
        return defer.DeferredList(waiting).addCallback(lambda _: self.stop())

    def stop(self) -> defer.Deferred:
        """Stop sending; an in-flight send finishes (its outcome is recorded), then close."""
        self.running = False
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        d = self._when_settled()
        d.addCallback(lambda _: self.connector.close() if hasattr(self.connector, "close") else None)
        return d
