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
