"""Recovery under a cluster (engine/runtime/recovery.py) on a ``task.Clock``: a message is processed
only once two scans ``lease`` apart both saw it RECEIVED; one a live node processes meanwhile is left
alone."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet import task

from engine.runtime.recovery import Recovery

LEASE = 4.0


class SyncPool:
    def callInThreadWithCallback(self, on_result, function, *args, **kwargs):
        on_result(True, function(*args, **kwargs))


class Reactor(task.Clock):
    def getThreadPool(self):
        return SyncPool()

    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class Channel:
    def __init__(self) -> None:
        self.recovered: list[list[int]] = []

    def recover(self, ids):
        self.recovered.append(list(ids))
        return len(ids)


def test_only_messages_received_for_a_lease_are_processed_and_each_once():
    reactor, channel = Reactor(), Channel()
    received = {"adt": [1, 2]}
    engine = SimpleNamespace(channel_services={"adt": SimpleNamespace(channel=channel)},
                             store=SimpleNamespace(unprocessed=lambda name: list(received[name])))
    recovery = Recovery(engine, LEASE, reactor, clock=reactor.seconds)
    recovery.start()                        # t=0: sees 1 and 2
    received["adt"] = [1, 3]                # 2 was processed by its node; 3 arrives
    reactor.advance(LEASE / 2)              # t=2
    assert channel.recovered == []
    reactor.advance(LEASE / 2)              # t=4: 1 has been RECEIVED for a lease
    assert channel.recovered == [[1]]
    received["adt"] = [3]
    reactor.advance(LEASE / 2)              # t=6: 3 too (seen at 2)
    assert channel.recovered == [[1], [3]]
    received["adt"] = []
    reactor.advance(LEASE * 3)
    assert channel.recovered == [[1], [3]]
    recovery.stop()


def test_a_new_holder_waits_a_lease_before_processing_anything():
    reactor, channel = Reactor(), Channel()
    engine = SimpleNamespace(channel_services={"adt": SimpleNamespace(channel=channel)},
                             store=SimpleNamespace(unprocessed=lambda name: [7]))
    recovery = Recovery(engine, LEASE, reactor, clock=reactor.seconds)
    recovery.start()
    reactor.advance(LEASE - 0.5)
    assert channel.recovered == []
    recovery.stop()
    recovery.start()                        # the lease lost and taken again: it starts from nothing
    reactor.advance(LEASE / 2)
    assert channel.recovered == []
    reactor.advance(LEASE / 2)
    assert channel.recovered == [[7]]
    recovery.stop()
