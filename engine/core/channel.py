"""The message's way through one channel: store, answer, then filter, transform and queue.

``receive`` is what a source calls.  It stores the raw message (group commit) and only then says
"taken" — the source turns that into AA / 202.  Processing runs after the answer (``ack =
"stored"``) or before it (``ack = "processed"``).  Processing is the pure ``ChannelPipeline.run``
followed by one store write holding the outcome and every delivery row, after which the
destination queues are fed in the order messages were received.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from twisted.internet import defer
from twisted.logger import Logger

from engine.core import faults
from engine.core.contracts import EventKind, Receipt
from engine.core.message import Message
from engine.core.pipeline import ERROR, FILTERED
from engine.core.verdicts import FILTERED_EVENT, PASSED_EVENT, verdict_detail

log = Logger(namespace="switchboard.channel")

# The pipeline runs in the reactor: while one message's filters and transforms run, every channel
# waits.  Ordinary messages take well under a millisecond; a message that takes STALL_SECONDS is a
# template loop (cut at the render time limit, 2 s) or a slow plugin step, and STALL_LIMIT of them
# in a row pause the channel (engine/runtime/services.py) so that it cannot keep the others waiting.
STALL_SECONDS = 1.0
STALL_LIMIT = 3


class Channel:
    def __init__(self, config, *, store, pipeline, events, reactor) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.pipeline = pipeline
        self.events = events
        self.reactor = reactor
        self.queues: dict = {}          # destination name -> DestinationQueue
        self.ack_mode = config.source.options.get("ack", "stored")
        self.dedupe_seconds = config.dedupe
        self.in_flight = 0
        self._idle_waiters: list[defer.Deferred] = []
        self.stalls = 0                 # messages in a row whose pipeline took >= STALL_SECONDS
        self.on_stalled = None          # called with (count, seconds) at STALL_LIMIT (the service pauses)

    # -- the source side -------------------------------------------------------------------
    def receive(self, text: str, *, msh=None, idempotency_key: str | None = None,
                original: bytes | None = None) -> defer.Deferred:
        """Process ``text`` and store it with its outcome in one durable write; fire a ``Receipt``.

        ``original``: the bytes ``text`` was decoded from, given only when decoding replaced invalid
        ones (RELIABILITY 17); stored beside the text, never processed (the pipeline, replay and
        the full-text index see the decoded text).

        The pipeline is pure CPU (lazy HL7 view, compiled templates), so running it before the
        commit costs the sender microseconds and saves a second fsync per message: the message,
        its metadata, its status and every delivery row are committed together, and only then is
        the sender answered and are the queues fed.  A crash can therefore never leave an ACKed
        message unprocessed; ``recover`` still handles rows left RECEIVED by older versions.
        """
        message_id = self.store.reserve_id()
        message = Message(text, self.config.inbound, id=message_id, channel=self.name,
                          received_at=datetime.now(timezone.utc), msh=msh)
        started = time.monotonic()
        meta = self.pipeline.metadata(message)
        outcome = self.pipeline.safe_run(message, meta)
        self._note_pipeline_time(message_id, time.monotonic() - started)
        msh = msh if msh is not None else message.msh
        self.in_flight += 1
        d = self.store.put_processed(
            self.name, text, message_id=message_id, status=outcome.status,
            transformed=outcome.transformed, error=outcome.error,
            deliveries=self._delivery_rows(outcome),
            type=msh.message_type if msh else "",
            control_id=msh.control_id if msh else "",
            sender=msh.sender if msh else "",
            inbound=self.config.inbound, meta=meta,
            dedupe_seconds=self.dedupe_seconds, idempotency_key=idempotency_key, original=original,
        )
        # one callback pair, each ending the in-flight count (a Deferred layer less per message)
        d.addCallbacks(self._stored_done, self._store_failed_done, callbackArgs=(outcome, meta),
                       errbackArgs=(outcome, meta))
        return d

    def _note_pipeline_time(self, message_id: int, seconds: float) -> None:
        if seconds < STALL_SECONDS:
            self.stalls = 0
            return
        self.stalls += 1
        log.warn("{channel}: message {id} held the engine for {seconds:.1f}s in its filters and transforms "
                 "({n} in a row); every channel waits meanwhile", channel=self.name, id=message_id,
                 seconds=seconds, n=self.stalls)
        if self.stalls >= STALL_LIMIT and self.on_stalled is not None:
            count, self.stalls = self.stalls, 0
            self.on_stalled(count, seconds)

    def _stored_done(self, stored, outcome, meta: dict):
        try:
            return self._stored(stored, outcome, meta)
        finally:
            self._done(None)

    def _store_failed_done(self, failure, outcome, meta):
        try:
            return self._store_failed(failure, outcome, meta)
        finally:
            self._done(None)

    def _stored(self, stored, outcome, meta: dict):
        faults.point("kill_after_commit_before_ack")  # crash tests: committed, the sender has no ACK yet
        message_id, duplicate, status, delivery_ids = stored
        if duplicate:
            self.events.emit(EventKind.DUPLICATE, self.name, message_id)
            return Receipt(message_id, True, duplicate=True)
        self.events.emit(EventKind.RECEIVED, self.name, message_id)
        self._after_commit(message_id, outcome, delivery_ids, meta)
        failed = self.ack_mode == "processed" and status == ERROR
        return Receipt(message_id, not failed, status=status,
                       error="processing failed; see the message in the store" if failed else None)

    def _store_failed(self, failure, outcome, meta):
        log.error("{channel}: message could not be stored: {error}", channel=self.name,
                  error=failure.getErrorMessage())
        return Receipt(None, False, error="the message could not be stored")

    def _done(self, result):
        self.in_flight -= 1
        if not self.in_flight:
            waiting, self._idle_waiters = self._idle_waiters, []
            for d in waiting:
                d.callback(None)
        return result

    def note_rejected(self, reason: str) -> None:
        """A frame the source refused before storing it (AR): counted, reason only."""
        self.events.emit(EventKind.REJECTED, self.name, reason=reason)

    def note_event(self, kind: str, detail: str) -> None:
        self.events.emit(kind, self.name, reason=detail)

    def wait_idle(self) -> defer.Deferred:
        """Fires when no receive is between 'arrived' and 'answered' (used by graceful stop)."""
        if not self.in_flight:
            return defer.succeed(None)
        d = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    # -- processing ------------------------------------------------------------------------
    @staticmethod
    def _delivery_rows(outcome) -> list[dict]:
        return [{"destination": plan.name, "status": plan.status, "body": plan.body, "error": plan.error}
                for plan in outcome.destinations]

    def _after_commit(self, message_id: int, outcome, delivery_ids: dict, meta: dict | None) -> None:
        """The outcome is durable: announce it and feed the destination queues, in receipt order."""
        # committed, in-memory queues not yet fed, no ACK yet (the ACK follows this call)
        faults.point("kill_after_commit_before_queueing")
        self._record_verdicts(message_id, outcome)
        self.announce(message_id, outcome, delivery_ids, meta)

    def announce(self, message_id: int, outcome, delivery_ids: dict, meta: dict | None, plans=None) -> None:
        """The one committed-outcome fan-out (processing, recovery and replay): the outcome's events,
        then each QUEUED delivery pushed to its queue.  ``plans``: the destinations concerned (a
        replay to one destination), by default all of them."""
        if outcome.status == FILTERED:
            reason = outcome.filters[-1].name if outcome.filters else ""
            self.events.emit(EventKind.FILTERED, self.name, message_id, reason=reason)
        elif outcome.status == ERROR and outcome.error:
            log.warn("{channel}: message {id} ERROR: {reason}", channel=self.name, id=message_id,
                     reason=outcome.error)
            self.events.emit(EventKind.ERROR, self.name, message_id, reason=outcome.error)
        for plan in outcome.destinations if plans is None else plans:
            if plan.status == "QUEUED":
                self.queues[plan.name].push(delivery_ids[plan.name], message_id, plan.body, meta)
            elif plan.status == ERROR:
                self.events.emit(EventKind.ERROR, self.name, message_id, destination=plan.name, reason=plan.error or "")

    def _record_verdicts(self, message_id: int, outcome) -> None:
        """Keep why the filters decided, as events ``switchboard report`` counts: the stopping
        filter's reason when a message is FILTERED, and a passing filter's reason when it gives one
        (placement-rules names the rule that placed an account).  Reasons are PHI-free by the
        filter contract (rule names and thresholds, never values); plain passes write nothing."""
        for item in outcome.filters:
            if item.passed and not item.reason:
                continue
            d = self.store.add_event(FILTERED_EVENT if not item.passed else PASSED_EVENT, channel=self.name,
                                     message_id=message_id, detail=verdict_detail(item.name, item.reason))
            d.addErrback(lambda failure: log.error("{channel}: filter verdict of message {id} not recorded: "
                                                   "{error}", channel=self.name, id=message_id,
                                                   error=failure.getErrorMessage()))

    def process(self, message_id: int, message: Message, meta: dict | None = None) -> defer.Deferred:
        """Run the pipeline over a message already stored and record its outcome (recovery, replay).

        Fires with the message's new status."""
        outcome = self.pipeline.safe_run(message, meta)
        d = self.store.set_message_result(message_id, status=outcome.status, transformed=outcome.transformed,
                                          error=outcome.error, deliveries=self._delivery_rows(outcome))

        def stored(result):
            status, delivery_ids = result
            self._after_commit(message_id, outcome, delivery_ids, meta)
            return status

        def failed(failure):
            log.error("{channel}: outcome of message {id} not stored ({error}); it stays as it was and is "
                      "processed again at the next start", channel=self.name, id=message_id,
                      error=failure.getErrorMessage())
            return ERROR

        return d.addCallbacks(stored, failed)

    def recover(self, ids: list[int] | None = None) -> int:
        """Process messages stored but never processed (RECEIVED), oldest first (``ids``: those)."""
        ids = self.store.unprocessed(self.name) if ids is None else ids
        for message_id in ids:
            row = self.store.get_message(message_id)
            if row is None or row.get("raw") is None:
                continue
            message = Message(row["raw"], self.config.inbound, id=message_id, channel=self.name,
                              received_at=row.get("received_at"))
            self.process(message_id, message, row.get("meta"))
        return len(ids)
