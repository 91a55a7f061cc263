"""``switchboard run``: the daemon in the foreground (SIGTERM/SIGINT: a graceful stop).

With ``[engine] workers`` > 1 this process is the supervisor of N workers
(engine/runtime/workers.py), each started as ``run --worker I`` (a hidden flag).
"""

from __future__ import annotations

import signal
import sys

from engine.cli.common import checked


def run_daemon(args, path) -> int:
    config, registry = checked(path)
    worker = getattr(args, "worker", None)
    if worker is None and config.engine.workers > 1:
        return run_supervisor(config)
    from twisted.internet import reactor

    from engine.app import build
    from engine.core.clock import use_monotonic_timers
    from engine.runtime.logs import start_logging
    from engine.core.contracts import StartError
    from engine.store.sqlite.store import StoreError

    use_monotonic_timers(reactor)   # a wall-clock step never holds a retry, timeout or deadline
    start_logging(config.engine.log_level, config.engine.log_format)
    link = relay = None
    if worker is not None:
        from engine.connectors.tls import share_ports

        share_ports()
        relay = lambda name, action: link.relay(name, action)   # noqa: E731 - the link comes after build
    daemon, engine = build(config, reactor=reactor, registry=registry, worker=worker, relay=relay)
    if worker is not None:
        from engine.runtime.workers import connect_to_supervisor

        link = connect_to_supervisor(engine, reactor)
        reactor.callWhenRunning(stop_once_on_signals, reactor)
    outcome = {"code": 0}

    def refuse(sentences: list[str]) -> None:
        for sentence in sentences:
            print(f"switchboard run: {sentence}", file=sys.stderr)
        outcome["code"] = 1
        if reactor.running:
            reactor.stop()

    def listeners_opened(_engine) -> None:
        """A channel whose listener could not open at start stops the start (DESIGN §3.6, issue 14):
        a daemon that silently serves without one of its addresses loses that sender's messages."""
        failed = [f"channel '{name}' cannot start: {service.start_error}"
                  for name, service in engine.channel_services.items()
                  if service.state == "failed" and "listen" in service.config.source.options]
        if failed:
            refuse(failed)
        elif link is not None:
            link.started()

    def start():
        try:
            daemon.startService()
            engine.started.addCallback(listeners_opened)
        except StartError as error:
            refuse([str(error)])
        except (StoreError, OSError) as error:
            from engine.store import describe

            print(f"switchboard run: cannot open the store {describe(config.store)}: {error}", file=sys.stderr)
            outcome["code"] = 1
            reactor.stop()
        except Exception:  # a bug at start-up: say so and exit 1 rather than serve half a daemon
            import traceback

            traceback.print_exc()
            print("switchboard run: failed to start (an internal error, reported above)", file=sys.stderr)
            outcome["code"] = 1
            reactor.stop()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: daemon.stopService() if daemon.running else None)
    reactor.run()
    return outcome["code"]


def stop_once_on_signals(reactor) -> None:
    """A worker: SIGTERM stops it once, however many arrive (the supervisor's and a service
    manager's, which signals the whole group); SIGINT is left to the supervisor, which passes
    Ctrl-C on as SIGTERM."""
    from engine.runtime.workers import stop_reactor

    signal.signal(signal.SIGTERM, lambda _signum, _frame: reactor.callFromThread(stop_reactor, reactor))
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_supervisor(config) -> int:
    """N workers on the config, kept running until SIGTERM/SIGINT (engine/runtime/workers.py)."""
    from twisted.internet import reactor

    from engine.runtime.logs import start_logging
    from engine.runtime.workers import Supervisor

    start_logging(config.engine.log_level, config.engine.log_format)
    supervisor = Supervisor(config.path, config.engine.workers, reactor)
    outcome = {"code": 0}
    supervisor.done.addCallback(lambda code: outcome.update(code=code))
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reactor.callFromThread(supervisor.forward, "HUP"))
    reactor.callWhenRunning(supervisor.start)
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stop)
    reactor.run()
    return outcome["code"] or supervisor.code
