"""``[engine] workers = N``: a small supervisor process and the N worker processes it keeps running.

Why processes: one reactor thread and the GIL hold a daemon to one core.  Each worker is a whole
daemon and a node of DESIGN §4 (``NODE-I``) on the shared PostgreSQL store: it listens on the same
MLLP/HTTP ports (SO_REUSEPORT, engine/connectors/tls.py), and the destination queues, pollers and
retention run where the leases put them, as with nodes on several machines.  Only worker 1 serves
the admin API; its reads come from the shared store.

The supervisor never opens the store and never listens.  It spawns ``switchboard -c CONFIG run
--worker I`` (stdout and stderr pass through), forwards SIGTERM/SIGINT as SIGTERM and SIGHUP as
SIGHUP, and waits for every worker's graceful stop.  A worker that fails at its first start (exit
before it says "started": a port that cannot open, the store unreachable) stops the whole start:
the others are stopped and ``run`` exits 1, the worker's own message above.  A worker that dies
later is started again after a backoff (1 s doubling to 30 s, back to 1 s after a minute up).

Channel control relay: an operator who pauses a channel through worker 1's API expects it paused on
every worker.  Each worker has two inherited pipes to the supervisor, one line per event:

    worker -> supervisor (the worker's fd 3):  ``started`` | ``channel NAME ACTION``
    supervisor -> worker (the worker's fd 4):  ``channel NAME ACTION``

The supervisor keeps the last action per channel and replays them to a worker when it says
``started``, so a restarted worker comes up paused too.  Only channel names and actions travel,
never message content.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

log = Logger(namespace="switchboard.workers")

TO_SUPERVISOR, FROM_SUPERVISOR = 3, 4    # the worker's ends of its two pipes
FIRST_BACKOFF, MAX_BACKOFF, STEADY = 1.0, 30.0, 60.0
STOP_TIMEOUT = 60.0     # a worker still running this long after SIGTERM is killed
ACTIONS = ("start", "stop", "pause")


def describe_exit(reason) -> str:
    """'exit code 1', 'signal 9 (SIGKILL)': how a worker ended, from Twisted's ProcessDone/Terminated."""
    value = reason.value
    number = getattr(value, "signal", None)
    if number:
        try:
            return f"signal {number} ({signal.Signals(number).name})"
        except ValueError:
            return f"signal {number}"
    return f"exit code {getattr(value, 'exitCode', None)}"


def channel_line(name: str, action: str) -> bytes:
    return f"channel {name} {action}\n".encode("utf-8")


def parse_channel_line(line: bytes) -> tuple[str, str] | None:
    """``(name, action)`` from ``channel NAME ACTION``; None for anything else."""
    parts = line.decode("utf-8", "replace").split()
    if len(parts) == 3 and parts[0] == "channel" and parts[2] in ACTIONS:
        return parts[1], parts[2]
    return None


def stop_reactor(reactor) -> None:
    """Stop the reactor unless it is already stopping (a second SIGTERM, the pipe closing too)."""
    try:
        reactor.stop()
    except error.ReactorNotRunning:
        pass


# -- the supervisor side ----------------------------------------------------------------------
class Worker:
    """One worker slot: its index, the running process (if any) and its restart backoff."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process = None          # WorkerProcess while one runs
        self.ever_started = False    # said "started" at least once
        self.up_since: float | None = None
        self.backoff = FIRST_BACKOFF
        self.restart = None          # a pending delayed restart

    @property
    def pid(self):
        return self.process.transport.pid if self.process is not None and self.process.transport else None


class WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, supervisor: "Supervisor", worker: Worker) -> None:
        self.supervisor, self.worker = supervisor, worker
        self.buffer = b""
        self.ready = False
        self.pid = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != TO_SUPERVISOR:
            return
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.supervisor.line_from(self, line.strip())

    def send(self, data: bytes) -> None:
        try:
            self.transport.writeToChild(FROM_SUPERVISOR, data)
        except (KeyError, OSError, AttributeError):
            pass    # the worker is going away; it gets the state again when it is back

    def processEnded(self, reason) -> None:
        self.supervisor.ended(self, reason)


class Supervisor:
    """Starts ``count`` workers for ``config_path`` and keeps them running until ``stop()``.

    ``done`` fires with the exit code for ``switchboard run``: 0 once every worker stopped cleanly
    after ``stop()``, 1 when a worker failed at its first start or a stop had to kill one."""

    def __init__(self, config_path, count: int, reactor, *, command=None, clock=time.monotonic) -> None:
        self.config_path, self.count, self.reactor, self.clock = str(config_path), count, reactor, clock
        self.command = command or [sys.executable, "-m", "engine.cli.main"]
        self.workers = {index: Worker(index) for index in range(1, count + 1)}
        self.channels: dict[str, str] = {}    # channel -> its last relayed action
        self.stopping = False
        self.code = 0
        self.done: defer.Deferred = defer.Deferred()
        self._kill_timer = None
        self._announced = False

    # -- starting and restarting ---------------------------------------------------------------
    def start(self) -> None:
        log.info("supervisor (pid {pid}) starting {n} workers", pid=os.getpid(), n=self.count)
        for worker in self.workers.values():
            self.spawn(worker)

    def spawn(self, worker: Worker) -> None:
        worker.restart = None
        process = WorkerProcess(self, worker)
        argv = [*self.command, "-c", self.config_path, "run", "--worker", str(worker.index)]
        self.reactor.spawnProcess(process, argv[0], argv, env=os.environ.copy(),
                                  childFDs={0: 0, 1: 1, 2: 2, TO_SUPERVISOR: "r", FROM_SUPERVISOR: "w"})
        worker.process = process

    def line_from(self, process: WorkerProcess, line: bytes) -> None:
        worker = process.worker
        if line == b"started":
            process.ready = True
            worker.ever_started, worker.up_since = True, self.clock()
            for name, action in self.channels.items():
                process.send(channel_line(name, action))
            if not self._announced and all(w.ever_started for w in self.workers.values()):
                self._announced = True
                log.info("all {n} workers started", n=self.count)
            return
        parsed = parse_channel_line(line)
        if parsed is None:
            log.warn("worker {index} sent a line the supervisor does not know; ignored", index=worker.index)
            return
        name, action = parsed
        self.channels[name] = action
        log.info("channel {channel}: {action} relayed from worker {index} to the other workers",
                 channel=name, action=action, index=worker.index)
        for other in self.workers.values():
            if other is not worker and other.process is not None and other.process.ready:
                other.process.send(channel_line(name, action))

    def ended(self, process: WorkerProcess, reason) -> None:
        worker = process.worker
        if worker.process is process:
            worker.process = None
        how = describe_exit(reason)
        if self.stopping:
            if how != "exit code 0":
                self.code = 1
                log.warn("worker {index} (pid {pid}) stopped with {how}", index=worker.index, pid=process.pid,
                         how=how)
            self._maybe_done()
            return
        if not worker.ever_started:
            log.error("worker {index} (pid {pid}) failed at start ({how}); stopping the other workers",
                      index=worker.index, pid=process.pid, how=how)
            self.code = 1
            self.fail()
            return
        if worker.up_since is not None and self.clock() - worker.up_since >= STEADY:
            worker.backoff = FIRST_BACKOFF
        delay, worker.backoff = worker.backoff, min(worker.backoff * 2, MAX_BACKOFF)
        worker.up_since = None
        log.warn("worker {index} (pid {pid}) exited with {how}; restarting in {delay:.0f}s", index=worker.index,
                 pid=process.pid, how=how, delay=delay)
        worker.restart = self.reactor.callLater(delay, self.spawn, worker)

    def fail(self) -> None:
        """A start failed: stop everything (``switchboard run`` exits 1)."""
        if self.reactor.running:
            stop_reactor(self.reactor)     # the shutdown trigger calls stop()
        else:
            self.stop()

    # -- signals and stopping ------------------------------------------------------------------
    def forward(self, name: str) -> None:
        """Send signal ``name`` ("HUP") to every running worker."""
        for worker in self.workers.values():
            if worker.process is not None:
                try:
                    worker.process.transport.signalProcess(name)
                except Exception:  # noqa: BLE001 - it just ended; its end is handled there
                    pass

    def stop(self) -> defer.Deferred:
        """SIGTERM to every worker; fires ``done`` (and returns it) once all have ended."""
        if self.stopping:
            return self.done
        self.stopping = True
        for worker in self.workers.values():
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            worker.restart = None
        log.info("stopping {n} workers", n=sum(w.process is not None for w in self.workers.values()))
        self.forward("TERM")
        self._kill_timer = self.reactor.callLater(STOP_TIMEOUT, self._kill_the_rest)
        self._maybe_done()
        return self.done

    def _kill_the_rest(self) -> None:
        self._kill_timer = None
        for worker in self.workers.values():
            if worker.process is not None:
                log.error("worker {index} (pid {pid}) did not stop within {s:.0f}s of SIGTERM; killing it",
                          index=worker.index, pid=worker.pid, s=STOP_TIMEOUT)
        self.code = 1
        self.forward("KILL")

    def _maybe_done(self) -> None:
        if any(worker.process is not None for worker in self.workers.values()) or self.done.called:
            return
        if self._kill_timer is not None and self._kill_timer.active():
            self._kill_timer.cancel()
        log.info("all workers stopped")
        self.done.callback(self.code)


# -- the worker side --------------------------------------------------------------------------
class SupervisorLink(LineReceiver):
    """A worker's end of the pipes: says ``started``, relays the API's channel actions up and
    applies the ones relayed down.  When the supervisor goes away (its pipe closes), the worker
    stops: a worker without its supervisor would keep the shared port with nobody to restart it."""

    delimiter = b"\n"

    def __init__(self, engine, reactor) -> None:
        self.engine, self.reactor = engine, reactor
        self.shutting_down = False
        reactor.addSystemEventTrigger("before", "shutdown", lambda: setattr(self, "shutting_down", True))

    def started(self) -> None:
        self.transport.write(b"started\n")

    def relay(self, name: str, action: str) -> None:
        self.transport.write(channel_line(name, action))

    def lineReceived(self, line: bytes) -> None:
        parsed = parse_channel_line(line)
        if parsed is None:
            return
        name, action = parsed
        service = self.engine.channel_services.get(name)
        if service is None:
            log.warn("relayed {action} for channel {channel}, which this worker does not run", action=action,
                     channel=name)
            return
        d = service.change(action)
        d.addCallback(lambda _: log.info("channel {channel}: {action} (relayed from the admin API)",
                                         channel=name, action=action))
        d.addErrback(lambda failure: log.warn("channel {channel}: relayed {action} not applied: {error}",
                                              channel=name, action=action, error=failure.getErrorMessage()))

    def connectionLost(self, reason=None) -> None:
        if not self.shutting_down:
            log.warn("the supervisor is gone; this worker stops")
            stop_reactor(self.reactor)


def connect_to_supervisor(engine, reactor) -> SupervisorLink:
    """The worker's link over the inherited pipes (fds 4 in, 3 out)."""
    from twisted.internet import stdio

    link = SupervisorLink(engine, reactor)
    stdio.StandardIO(link, stdin=FROM_SUPERVISOR, stdout=TO_SUPERVISOR, reactor=reactor)
    return link
