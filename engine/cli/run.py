"""``switchboard run``: the daemon in the foreground (SIGTERM/SIGINT: a graceful stop)."""

from __future__ import annotations

import sys

from engine.cli.common import checked


def run_daemon(args, path) -> int:
    config, registry = checked(path)
    from twisted.internet import reactor

    from engine.app import build
    from engine.core.clock import use_monotonic_timers
    from engine.runtime.logs import start_logging
    from engine.core.contracts import StartError
    from engine.store.sqlite.store import StoreError

    use_monotonic_timers(reactor)   # a wall-clock step never holds a retry, timeout or deadline
    start_logging(config.engine.log_level, config.engine.log_format)
    daemon, engine = build(config, reactor=reactor, registry=registry)
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
