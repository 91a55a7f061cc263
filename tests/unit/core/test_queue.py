"""DestinationQueue unit tests: order, backoff timing on a task.Clock, attempts, spill and refill.

The connector here is a scripted peer and the store a small in-memory stand-in recording what the
queue writes: both sit at the queue's boundary.  The end-to-end behaviour (real store, real
sockets) is covered by tests/e2e/test_pipeline_e2e.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogPublisher

from engine.config.loader import RetryConfig
from engine.core.contracts import PermanentError, SendResult, TransientError
from engine.core.events import Events
from engine.core.queue import DestinationQueue


class RecordingStore:
    def __init__(self, queued=()):
        self.attempts: list[tuple[int, dict]] = []
        self.queued = list(queued)

    def record_attempt(self, delivery_id, **kwargs):
        self.attempts.append((delivery_id, kwargs))
        if kwargs.get("final_status") in ("SENT", "ERROR"):
            self.queued = [row for row in self.queued if row["id"] != delivery_id]
        return defer.succeed(None)

    def record_sent(self, sent):
        for delivery_id, response in sent:
            self.record_attempt(delivery_id, ok=True, response=response, final_status="SENT")
        return defer.succeed(None)

    def next_queued(self, channel, destination, limit=100, after=0):
        return self.queued[:limit]

    def metadata_for(self, ids):
        return {}

    def queue_stats(self):
        return {("chan", "dest"): {"depth": len(self.queued)}} if self.queued else {}


class ScriptedPeer:
    """Answers each send from a script of outcomes: 'ok', 'transient', 'permanent' or a number
    (transient with Retry-After seconds)."""

    def __init__(self, script=()):
        self.script = list(script)
        self.sent: list[str] = []

    def send(self, delivery):
        self.sent.append(delivery.body)
        outcome = self.script.pop(0) if self.script else "ok"
        if outcome == "ok":
            return defer.succeed(SendResult("fine"))
        if outcome == "permanent":
            return defer.fail(PermanentError("refused", "AE"))
        retry_after = outcome if isinstance(outcome, (int, float)) else None
        return defer.fail(TransientError("down", retry_after=retry_after))


class NoHook:
    def message_event(self, event):
        return []


@dataclass
class DestinationStub:
    name: str = "dest"
    retry: RetryConfig = RetryConfig(attempts=0, interval=1.0, backoff=2.0, max_interval=5.0)
    options: dict | None = None


def make_queue(peer, store=None, retry=None, window=1000, options=None):
    clock = task.Clock()
    config = DestinationStub(retry=retry or DestinationStub.retry, options=options)
    queue = DestinationQueue("chan", config, peer, store or RecordingStore(), Events(NoHook()), clock,
                             window=window)
    return queue, clock


def test_the_sents_of_one_reactor_turn_are_recorded_in_one_write_at_its_end():
    store = RecordingStore()
    writes = []
    store.record_sent = lambda sent: writes.append(list(sent)) or defer.succeed(None)
    peer = PipelinedPeer(3)
    queue, clock = make_queue(peer, store)
    queue.start()
    for number in range(1, 5):
        queue.push(number, number, f"m{number}")
    settled = queue.wait_empty()
    peer.answer()
    peer.answer()                          # two ACKs read in one turn
    assert writes == [] and queue.unsettled == 1
    clock.advance(0)                       # the end of the turn
    assert writes == [[(1, "AA"), (2, "AA")]]
    peer.answer("permanent")               # m3 refused: its record goes at once, after ...
    assert len(writes) == 1 and store.attempts[-1][1]["final_status"] == "ERROR"
    peer.answer()
    clock.advance(0)
    assert writes == [[(1, "AA"), (2, "AA")], [(4, "AA")]]
    assert queue.unsettled == 0 and settled.called


def test_sends_in_order():
    peer = ScriptedPeer()
    queue, _clock = make_queue(peer)
    queue.start()
    for number in range(5):
        queue.push(number + 1, number + 1, f"m{number}")
    assert peer.sent == ["m0", "m1", "m2", "m3", "m4"]


def test_transient_failure_holds_the_line_with_backoff():
    peer = ScriptedPeer(["transient", "transient", "transient", "transient", "ok"])
    store = RecordingStore()
    queue, clock = make_queue(peer, store)
    queue.start()
    queue.push(1, 1, "first")
    queue.push(2, 2, "second")
    assert peer.sent == ["first"]
    waits = []
    for _ in range(4):
        delay = clock.getDelayedCalls()[0].getTime() - clock.seconds()
        waits.append(round(delay, 6))
        sent_before = peer.sent.count("first")
        clock.advance(delay - 0.01)
        assert peer.sent.count("first") == sent_before       # not before its time
        clock.advance(0.02)
        assert peer.sent.count("first") == sent_before + 1
    assert waits == [1.0, 2.0, 4.0, 5.0]  # interval * backoff**n, capped at max_interval
    assert peer.sent == ["first"] * 5 + ["second"]
    outcomes = [(delivery_id, kwargs["ok"], kwargs["final_status"]) for delivery_id, kwargs in store.attempts]
    assert outcomes == [(1, False, None)] * 4 + [(1, True, "SENT"), (2, True, "SENT")]


def test_retry_after_is_honoured():
    peer = ScriptedPeer([3.0, "ok"])
    queue, clock = make_queue(peer)
    queue.start()
    queue.push(1, 1, "x")
    clock.advance(2.9)
    assert peer.sent == ["x"]
    clock.advance(0.2)
    assert peer.sent == ["x", "x"]


def test_attempts_limit_turns_transient_into_error_and_moves_on():
    peer = ScriptedPeer(["transient", "transient", "ok"])
    store = RecordingStore()
    queue, clock = make_queue(peer, store, RetryConfig(attempts=2, interval=1.0, backoff=1.0, max_interval=1.0))
    queue.start()
    queue.push(1, 1, "doomed")
    queue.push(2, 2, "next")
    clock.advance(1.0)
    assert store.attempts[1][1]["final_status"] == "ERROR"
    assert "gave up after 2 attempts" in store.attempts[1][1]["error"]
    assert peer.sent == ["doomed", "doomed", "next"]


def test_permanent_failure_errors_only_that_message():
    peer = ScriptedPeer(["ok", "permanent", "ok"])
    store = RecordingStore()
    queue, clock = make_queue(peer, store)
    queue.start()
    for number in (1, 2, 3):
        queue.push(number, number, f"m{number}")
    clock.advance(0)  # SENT records go at the end of the reactor turn
    assert [kwargs["final_status"] for _id, kwargs in store.attempts] == ["SENT", "ERROR", "SENT"]
    assert store.attempts[1][1]["response"] == "AE"


def test_spill_and_refill_keep_order():
    rows = [{"id": n, "message_id": n, "body": f"m{n}", "attempts": 0} for n in range(1, 8)]
    store = RecordingStore(rows)
    peer = ScriptedPeer(["transient"])
    queue, clock = make_queue(peer, store, window=3)
    queue.start()                              # loads m1..m3 into memory, the rest stay in the store
    assert queue.spilled and len(queue.pending) == 3
    store.queued.append({"id": 8, "message_id": 8, "body": "m8", "attempts": 0})
    queue.push(8, 8, "m8")                     # spilled: stays in the store only
    clock.advance(1.0)
    assert peer.sent == ["m1"] + [f"m{n}" for n in range(1, 9)]


def test_a_push_for_a_delivery_a_refill_already_read_does_not_send_it_twice():
    """The soak's finding: a delivery committed while the queue drains its spill is read by the
    refill (the store has it) before the channel's push for it arrives."""
    rows = [{"id": n, "message_id": n, "body": f"m{n}", "attempts": 0} for n in range(1, 5)]
    store, peer = RecordingStore(rows), PipelinedPeer(1)
    queue, clock = make_queue(peer, store, window=3)
    queue.start()                                      # m1..m3 in memory, m4 spilled
    store.queued.append({"id": 5, "message_id": 5, "body": "m5", "attempts": 0})  # m5 committed ...
    for _ in range(3):
        peer.answer()                                  # the window drains ...
    clock.advance(0)                                   # ... its SENTs commit: the refill reads m4, m5
    assert peer.sent[-1] == "m4" and not queue.spilled and queue.depth == 2
    queue.push(5, 5, "m5")                             # ... and only now pushed
    assert queue.depth == 2
    while peer.waiting:
        peer.answer()
    clock.advance(0)
    assert peer.sent == [f"m{n}" for n in range(1, 6)]
    assert queue.depth == 0 and not queue.pending


def _queue_log_lines(events: list) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_namespace") == "switchboard.queue"]


def test_depth_warning_once_up_and_once_back_under_half():
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        peer = ScriptedPeer(["transient"])               # the peer is down once: the line holds
        queue, clock = make_queue(peer, options={"queue_warning": 4})
        queue.start()
        for number in range(1, 7):
            queue.push(number, number, f"m{number}")
        assert queue.depth == 6
        lines = _queue_log_lines(events)
        over = [line for line in lines if "queue_warning = 4" in line and "not keeping up" in line]
        assert len(over) == 1 and over[0].startswith("chan/dest: 4 deliveries queued")   # at the 4th push
        clock.advance(1.0)                                # the retry succeeds; the queue drains
        assert peer.sent[-1] == "m6" and queue.depth == 0
        lines = _queue_log_lines(events)
        back = [line for line in lines if "back under 2" in line]
        assert len(back) == 1 and "(2 queued" in back[0]
        assert len([line for line in lines if "not keeping up" in line]) == 1
        assert not any(f"m{n}" in line for line in lines for n in range(1, 7))   # ids and counts only
    finally:
        globalLogPublisher.removeObserver(events.append)


def test_depth_counts_a_spilled_queue_from_the_store_at_start():
    rows = [{"id": n, "message_id": n, "body": f"m{n}", "attempts": 0} for n in range(1, 11)]
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        queue, _clock = make_queue(ScriptedPeer(["transient"]), RecordingStore(rows), window=3,
                                   options={"queue_warning": 8})
        queue.start()
        assert queue.spilled and len(queue.pending) == 3 and queue.depth == 10
        assert any("10 deliveries queued" in line for line in _queue_log_lines(events))
    finally:
        globalLogPublisher.removeObserver(events.append)


def test_default_warning_threshold_without_options():
    queue, _clock = make_queue(ScriptedPeer())
    assert queue.warn_at == 10_000


class PipelinedPeer:
    """A connector that allows ``max_in_flight`` sends and answers only when the test says."""

    def __init__(self, max_in_flight: int):
        self.max_in_flight = max_in_flight
        self.waiting: list[tuple[str, defer.Deferred]] = []
        self.sent: list[str] = []

    def send(self, delivery):
        self.sent.append(delivery.body)
        d = defer.Deferred()
        self.waiting.append((delivery.body, d))
        return d

    def answer(self, outcome: str = "ok") -> str:
        body, d = self.waiting.pop(0)
        if outcome == "ok":
            d.callback(SendResult("AA"))
        elif outcome == "permanent":
            d.errback(PermanentError("refused", "AR"))
        else:
            d.errback(TransientError("connection lost", possible_duplicate=True))
        return body


def test_pipelined_sends_fill_the_window_and_answers_free_it_in_order():
    peer, store = PipelinedPeer(3), RecordingStore()
    queue, clock = make_queue(peer, store)
    queue.start()
    for number in range(1, 7):
        queue.push(number, number, f"m{number}")
    assert peer.sent == ["m1", "m2", "m3"]  # three in flight, no more
    peer.answer()
    assert peer.sent == ["m1", "m2", "m3", "m4"]
    peer.answer("permanent")  # m2 refused: ERROR, the line moves on
    while peer.waiting:
        peer.answer()
    clock.advance(0)  # the end of the reactor turn: the SENT records go
    assert peer.sent == [f"m{n}" for n in range(1, 7)]
    assert [(delivery_id, kwargs["final_status"]) for delivery_id, kwargs in store.attempts] == [
        (1, "SENT"), (2, "ERROR"), (3, "SENT"), (4, "SENT"), (5, "SENT"), (6, "SENT")]
    assert not queue.pending and not queue.sending and queue.depth == 0


def test_a_transient_failure_in_a_pipeline_stops_new_sends_and_retries_from_the_oldest():
    peer, store = PipelinedPeer(3), RecordingStore()
    queue, clock = make_queue(peer, store)
    queue.start()
    for number in range(1, 6):
        queue.push(number, number, f"m{number}")
    peer.answer("transient")  # m1: the connection broke ...
    peer.answer("transient")  # ... and took m2 with it
    peer.answer()             # m3 had been answered before the break: SENT
    clock.advance(0)
    assert peer.sent == ["m1", "m2", "m3"]  # nothing new while the retry is pending
    assert queue.failures == 1  # one failure of the line, not one per message of the round
    assert [delivery_id for delivery_id, kwargs in store.attempts if kwargs.get("final_status") == "SENT"] == [3]
    assert [kwargs["possible_duplicate"] for _id, kwargs in store.attempts[:2]] == [True, True]
    clock.advance(1.0)  # the retry starts again from the oldest unsent: m1, m2, then m4
    assert peer.sent[3:] == ["m1", "m2", "m4"]
    while peer.waiting:
        peer.answer()
    assert peer.sent[3:] == ["m1", "m2", "m4", "m5"]
    while peer.waiting:
        peer.answer()
    assert not queue.pending and queue.failures == 0


def test_stop_after_send_waits_for_every_send_in_flight():
    peer = PipelinedPeer(2)
    queue, _clock = make_queue(peer)
    queue.start()
    for number in (1, 2, 3):
        queue.push(number, number, f"m{number}")
    stopped = queue.stop_after_send()
    peer.answer()
    assert not stopped.called  # m2 is still waiting for its answer
    peer.answer()
    assert stopped.called and peer.sent == ["m1", "m2"]  # stopped: m3 is left for the next queue


def test_a_push_arriving_after_its_delivery_was_already_sent_from_a_refill_does_not_send_it_again():
    """On PostgreSQL a refill (another connection) sees a commit before the writer learns it has
    committed: the refill, the send and the peer's ACK can all come before the commit's push.
    Found by the two-node takeover test under load (one delivery, two attempts 5 ms apart)."""
    store, peer = RecordingStore(), PipelinedPeer(1)
    queue, clock = make_queue(peer, store, window=3)
    queue.start()
    store.queued.append({"id": 7, "message_id": 7, "body": "m7", "attempts": 0})   # committed ...
    queue.spilled = True                         # (a cluster's held queue refills from the store)
    queue.kick()                                 # ... the refill reads it and sends it ...
    peer.answer()
    clock.advance(0)                             # ... the ACK and its SENT come first ...
    queue.push(7, 7, "m7")                       # ... and only now the commit's push
    while peer.waiting:
        peer.answer()
    clock.advance(0)
    assert peer.sent == ["m7"] and queue.depth == 0 and not queue.pending


def test_a_replayed_delivery_pushed_again_right_after_its_send_is_sent_again_from_the_store():
    """The same push for a delivery that a replay made QUEUED again: the store says so, and the
    refill that the push asks for reads it."""
    store, peer = RecordingStore(), PipelinedPeer(1)
    queue, clock = make_queue(peer, store, window=3)
    queue.start()
    queue.push(7, 7, "m7")
    peer.answer()
    clock.advance(0)                             # m7 SENT
    store.queued.append({"id": 7, "message_id": 7, "body": "m7", "attempts": 1})   # replayed: QUEUED again
    queue.push(7, 7, "m7")
    while peer.waiting:
        peer.answer()
    clock.advance(0)
    assert peer.sent == ["m7", "m7"] and queue.depth == 0
