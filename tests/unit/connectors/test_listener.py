"""ConnectionGate and RefusalLog (engine/connectors/listener.py): the caps, who is evicted, and
how many log lines a flood of refusals makes, on a ``task.Clock``."""

from __future__ import annotations

from twisted.internet import task
from twisted.logger import globalLogPublisher

from engine.connectors.listener import SUMMARY_SECONDS, ConnectionGate, RefusalLog


class Conn:
    def __init__(self, active: float, *, evictable: bool = True) -> None:
        self.last_active = active
        self._evictable = evictable
        self.evicted = False

    def evictable(self) -> bool:
        return self._evictable and not self.evicted

    def evict(self) -> None:
        self.evicted = True


class Lines:
    """The switchboard.listener lines logged while in use."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event) -> None:
        if event.get("log_namespace") == "switchboard.listener":
            self.lines.append(event["log_format"].format(**event))

    def __enter__(self) -> "Lines":
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc) -> None:
        globalLogPublisher.removeObserver(self)


def gate(clock, *, total=4, per_address=2, evict=False) -> ConnectionGate:
    return ConnectionGate("ch: MLLP", max_connections=total, per_address=per_address, reactor=clock, evict=evict)


def test_per_address_and_total_caps_refuse_without_eviction():
    clock = task.Clock()
    g = gate(clock)
    with Lines():
        assert g.admit(Conn(1), "10.0.0.1") and g.admit(Conn(2), "10.0.0.1")
        assert not g.admit(Conn(3), "10.0.0.1")                       # that address is full
        assert g.admit(Conn(4), "10.0.0.2") and g.admit(Conn(5), "10.0.0.3")
        assert not g.admit(Conn(6), "10.0.0.4")                       # the listener is full
    assert len(g.connections) == 4
    g.stop()


def test_eviction_takes_the_longest_idle_evictable_connection_of_the_full_scope():
    clock = task.Clock()
    g = gate(clock, evict=True)
    old, busy, newer = Conn(1, evictable=True), Conn(0, evictable=False), Conn(5)
    with Lines():
        assert g.admit(busy, "a") and g.admit(old, "a")
        assert g.admit(newer, "a")                                    # "a" full: its idle one goes
        assert old.evicted and not busy.evicted and old not in g.connections
        assert not g.admit(Conn(9), "a") or newer.evicted              # newer evictable: evicted next
        assert not busy.evicted                                        # one that had a message: never
        other = Conn(7)
        assert g.admit(other, "b") and g.admit(Conn(8), "b")
        assert len(g.connections) == 4
        assert g.admit(Conn(10), "c")                                  # total full: oldest idle evictable
    assert not busy.evicted and len(g.connections) == 4
    g.stop()


def test_release_forgets_the_connection_and_its_address():
    g = gate(task.Clock())
    conn = Conn(1)
    assert g.admit(conn, "a")
    g.release(conn)
    g.release(conn)                                                    # twice is harmless
    assert not g.connections and not g.by_address
    g.stop()


def test_a_flood_of_refusals_logs_one_line_then_one_summary_a_minute():
    clock = task.Clock()
    log = RefusalLog("ch: MLLP", clock)
    with Lines() as lines:
        for number in range(1900):
            log.note(f"10.0.0.{number % 3}", "refused (max_connections)", "refused: 100 connections already open")
        assert len(lines.lines) == 1 and "10.0.0.0 refused: 100 connections already open" in lines.lines[0]
        clock.advance(SUMMARY_SECONDS)
        assert len(lines.lines) == 2 and "1899 more connections" in lines.lines[1]
        assert "1899 refused (max_connections)" in lines.lines[1]
        clock.advance(SUMMARY_SECONDS)                                 # a quiet minute: nothing, period over
        assert len(lines.lines) == 2 and log.timer is None
        log.note("10.0.0.9", "evicted", "closed to make room")        # a new period starts with a line
        assert len(lines.lines) == 3
    log.stop()
    assert not clock.getDelayedCalls()
