"""The admin listener and what it serves, wired for one engine.

``AdminServer(runtime)`` is built by engine/app.py once the store is open and the channels are
built, in the reactor turn their sources open, so the metrics see every message.  It resolves
the tokens (generating ``admin.token`` beside the store when none is configured), builds the
audit log, metrics, the replayer and the alert monitor, and listens on ``[admin] listen``; it logs
``admin API listening on HOST:PORT`` (tests parse it) and writes that address to
``admin.address`` beside the store, which is how the CLI finds a daemon listening on port 0.
A listener that cannot bind stops the daemon's start (``StartError``: ``switchboard run`` exits 1
naming the address): a daemon without its API could not be watched, paused or replayed.  A ``listen`` that is not a loopback address is warned about: the token then
crosses the network in clear unless a TLS proxy sits in front.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from twisted.internet import defer
from twisted.logger import Logger

from engine.admin.alerts import AlertMonitor
from engine.admin.api import build_root
from engine.admin.audit import AuditLog
from engine.admin.auth import Tokens
from engine.admin.dashboard import Dashboard
from engine.admin.metrics import Metrics
from engine.admin.sessions import DashboardSite, Sessions
from engine.config.loader import format_address
from engine.connectors.http.guard import guard
from engine.core.contracts import StartError

log = Logger(namespace="switchboard.admin")

ADDRESS_FILE = "admin.address"


def address_file(config) -> Path:
    return Path(config.store.path).parent / ADDRESS_FILE


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminServer:
    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.tokens = Tokens.for_engine(runtime.config)
        self.audit = AuditLog(runtime.store)
        self.metrics = Metrics(runtime)
        self.replayer = runtime.replayer
        self.alerts = AlertMonitor(runtime)
        self.sessions = Sessions()
        root = build_root(self)
        Dashboard(self).mount(root)        # /, /login, /channels, /messages, /search, /static
        self.site = DashboardSite(root, self.tokens, runtime.reactor, self.sessions)
        guard(self.site, reactor=runtime.reactor)   # per-address caps and a whole-request deadline
        self.port = None

    def start(self) -> None:
        self.alerts.start()
        host, port = self.runtime.config.admin.listen
        try:
            self.port = self.runtime.reactor.listenTCP(port, self.site, interface=host)
        except Exception as error:
            # the daemon does not run without its API (no status, replay or dashboard): the start stops
            reason = getattr(error, "socketError", None) or error
            raise StartError(f"the admin API cannot listen on {format_address((host, port))} ([admin] listen): "
                             f"{getattr(reason, 'strerror', None) or reason}") from None
        bound = self.port.getHost()
        log.info("admin API listening on {host}:{port}", host=bound.host, port=bound.port)
        if not is_loopback(host):
            log.warn("admin API listens on {host}, not loopback: put TLS in front of it, the token travels "
                     "in every request", host=host)
        self._write_address(f"{bound.host}:{bound.port}")

    def _write_address(self, text: str) -> None:
        path = address_file(self.runtime.config)
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            temp.write_text(text + "\n", encoding="ascii")
            os.replace(temp, path)
        except OSError as error:
            log.warn("cannot write {path}: {error}; the CLI needs [admin] listen with a fixed port",
                     path=str(path), error=error.strerror)

    @defer.inlineCallbacks
    def stop(self):
        self.alerts.stop()
        if self.port is None:
            return
        port, self.port = self.port, None
        try:
            address_file(self.runtime.config).unlink()
        except OSError:
            pass
        yield port.stopListening()
        for channel in list(self.site.connections):
            if channel.transport is not None:
                channel.transport.loseConnection()
