"""What every listening source shares: bind (TCP or TLS), report the address, stop gracefully.

A subclass sets ``self.factory`` (with ``connections`` and ``drain()``, which fires once no
connection waits for an answer) and ``self.options`` (``listen``, optional ``tls``).  Stopping is
the same for MLLP and HTTP: stop accepting, let in-flight messages get their answers (bounded),
then close what is left.
"""

from __future__ import annotations

from twisted.internet import defer

from engine.connectors.tls import server_endpoint


class ListeningSource:
    factory = None
    options: dict = {}
    reactor = None
    port = None

    @defer.inlineCallbacks
    def start(self):
        host, port = self.options["listen"]
        endpoint = server_endpoint(self.reactor, host, port, self.options.get("tls"))
        self.port = yield endpoint.listen(self.factory)

    def retarget(self, sink) -> None:
        """What arrives from now on, on open connections too, goes to ``sink`` (live reload)."""
        self.factory.sink = sink

    def take_over(self, old: "ListeningSource") -> bool:
        """Take ``old``'s listening port and open connections (same address and TLS); False if not.

        The port keeps listening (its factory, or the TLS wrapper's inner factory, is swapped) and
        each open connection's protocol is pointed at our factory, so its next frame or request
        reaches the new channel; what it sent before is answered by the old one."""
        if not isinstance(old, ListeningSource) or old.port is None or type(old) is not type(self):
            return False
        if (old.options.get("listen"), old.options.get("tls")) != (self.options.get("listen"), self.options.get("tls")):
            return False
        port = old.port
        outer = port.factory
        if getattr(outer, "wrappedFactory", None) is old.factory:
            outer.wrappedFactory = self.factory
        elif outer is old.factory:
            port.factory = self.factory
        else:
            return False
        self.factory.doStart()
        old.factory.doStop()
        for connection in list(old.factory.connections):
            connection.factory = self.factory
            self.factory.connections.add(connection)
        old.factory.connections.clear()
        self.port, old.port = port, None
        return True

    @property
    def address(self) -> tuple[str, int]:
        bound = self.port.getHost()
        return bound.host, bound.port

    @defer.inlineCallbacks
    def stop(self, timeout: float = 10.0):
        """Stop listening, answer what was already taken (at most ``timeout``), close connections."""
        if self.port is not None:
            yield self.port.stopListening()
            self.port = None
        drained = self.factory.drain()
        timer = self.reactor.callLater(timeout, lambda: drained.called or drained.callback(None))
        yield drained
        if timer.active():
            timer.cancel()
        for connection in list(self.factory.connections):
            if connection.transport is not None:
                connection.transport.loseConnection()
