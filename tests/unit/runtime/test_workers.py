"""The supervisor's decisions (engine/runtime/workers.py) on a clock of its own: restart backoff,
a failed first start, the channel relay and its replay to a restarted worker, the graceful stop.
The real processes, pipes and signals are in tests/e2e/test_workers_e2e.py."""

from __future__ import annotations

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from engine.runtime.workers import FROM_SUPERVISOR, TO_SUPERVISOR, Supervisor, parse_channel_line


class FakeTransport:
    def __init__(self, pid: int) -> None:
        self.pid, self.written, self.signals = pid, [], []

    def writeToChild(self, fd: int, data: bytes) -> None:
        assert fd == FROM_SUPERVISOR
        self.written.append(data)

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class Reactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list = []
        self.running = True
        self.stopped = False

    def spawnProcess(self, process, executable, args, env=None, childFDs=None, **_):
        assert childFDs[TO_SUPERVISOR] == "r" and childFDs[FROM_SUPERVISOR] == "w"
        process.makeConnection(FakeTransport(1000 + len(self.spawned)))
        self.spawned.append((process, args))

    def stop(self) -> None:
        self.stopped = True


def started(reactor, supervisor):
    supervisor.start()
    for process, _ in reactor.spawned:
        process.childDataReceived(TO_SUPERVISOR, b"started\n")
    return {int(args[args.index("--worker") + 1]): process for process, args in reactor.spawned}


def kill(process, signal: int = 9) -> None:
    process.processEnded(Failure(ProcessTerminated(signal=signal)))


def test_a_dead_worker_is_restarted_with_a_backoff_that_resets_after_a_minute_up():
    reactor, clock = Reactor(), [0.0]
    supervisor = Supervisor("/etc/sb/config.toml", 2, reactor, clock=lambda: clock[0])
    workers = started(reactor, supervisor)
    assert [args[-4:] for _, args in reactor.spawned] == [["/etc/sb/config.toml", "run", "--worker", "1"],
                                                          ["/etc/sb/config.toml", "run", "--worker", "2"]]
    delays = []
    process = workers[2]
    for _ in range(7):
        kill(process)
        delays.append(reactor.getDelayedCalls()[0].getTime() - reactor.seconds())
        reactor.advance(delays[-1])
        process = reactor.spawned[-1][0]
        process.childDataReceived(TO_SUPERVISOR, b"started\n")
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    clock[0] += 61                     # a minute up: the next death waits 1 s again
    kill(process)
    assert reactor.getDelayedCalls()[0].getTime() - reactor.seconds() == 1
    assert not reactor.stopped and supervisor.code == 0


def test_a_worker_that_fails_at_its_first_start_stops_the_start():
    reactor = Reactor()
    supervisor = Supervisor("config.toml", 2, reactor)
    supervisor.start()
    first, second = (process for process, _ in reactor.spawned)
    first.childDataReceived(TO_SUPERVISOR, b"started\n")
    second.processEnded(Failure(ProcessTerminated(exitCode=1)))
    assert reactor.stopped and supervisor.code == 1 and not reactor.getDelayedCalls()


def test_a_channel_action_reaches_the_other_workers_and_a_restarted_one():
    reactor = Reactor()
    supervisor = Supervisor("config.toml", 3, reactor)
    workers = started(reactor, supervisor)
    workers[1].childDataReceived(TO_SUPERVISOR, b"channel adt pause\nchannel lab st")
    workers[1].childDataReceived(TO_SUPERVISOR, b"op\n")
    assert workers[1].transport.written == []
    for index in (2, 3):
        assert workers[index].transport.written == [b"channel adt pause\n", b"channel lab stop\n"]
    kill(workers[3])
    reactor.advance(1)
    restarted = reactor.spawned[-1][0]
    assert restarted.transport.written == []          # not before it says it started
    restarted.childDataReceived(TO_SUPERVISOR, b"started\n")
    assert restarted.transport.written == [b"channel adt pause\n", b"channel lab stop\n"]
    workers[1].childDataReceived(TO_SUPERVISOR, b"channel adt start\n")
    assert restarted.transport.written[-1] == b"channel adt start\n"
    assert parse_channel_line(b"channel adt drop-table") is None


def test_stop_terms_every_worker_and_reports_a_clean_stop():
    reactor = Reactor()
    supervisor = Supervisor("config.toml", 2, reactor)
    workers = started(reactor, supervisor)
    kill(workers[2])                                   # waiting for its restart when the stop comes
    codes = []
    supervisor.stop().addCallback(codes.append)
    assert workers[1].transport.signals == ["TERM"] and not reactor.getDelayedCalls()[1:]
    workers[1].processEnded(Failure(ProcessDone(0)))
    assert codes == [0]
    reactor.advance(120)
    assert len(reactor.spawned) == 2                   # the pending restart was cancelled


def test_a_worker_that_does_not_stop_is_killed_and_the_stop_says_so():
    reactor = Reactor()
    supervisor = Supervisor("config.toml", 1, reactor)
    workers = started(reactor, supervisor)
    codes = []
    supervisor.stop().addCallback(codes.append)
    reactor.advance(60)
    assert workers[1].transport.signals == ["TERM", "KILL"]
    kill(workers[1])
    assert codes == [1]
