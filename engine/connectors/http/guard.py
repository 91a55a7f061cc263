"""Connection guards for our HTTP listeners (the HTTP source and the admin API).

twisted.web's ``HTTPChannel`` has an idle timeout that every byte resets, so a client sending one
byte every few seconds (slowloris) holds a connection for ever, and enough of them take every
slot of the listener: the real webhook and the API then get 503.  Two guards, shared by both
listeners:

- **a deadline for the whole request**: from the first byte of a request to its last byte of body,
  at most ``request_timeout`` seconds, however the bytes trickle in; past it the request is
  answered 408 and the connection closed.  Time spent answering (a store commit) does not count.
- **caps per peer address** (``engine.connectors.listener.ConnectionGate``): at most
  ``max_connections_per_address`` open connections from one address, so a flood from one place
  leaves room for everyone else; refusals are logged once and then summed up every minute.

``GuardedChannel`` is the mixin an ``HTTPChannel`` subclass takes (``SourceChannel`` does, so the
admin API's channel has it too); it reads ``gate`` and ``request_timeout`` from its factory, and
does nothing where the factory has neither.  ``guard(site, ...)`` gives a ``Site`` built
elsewhere both (engine/admin/server.py: one line).
"""

from __future__ import annotations

from engine.connectors.listener import ConnectionGate, peer_host

ADMIN_PER_ADDRESS = 32          # a browser opens ~6 connections, the CLI one: half the admin's 64
ADMIN_REQUEST_TIMEOUT = 30.0


class GuardedChannel:
    """Mixin for ``HTTPChannel`` subclasses; the class using it must define ``refuse_guarded``
    (answer ``code`` with ``reason`` and close) and call the ``guard_*`` hooks from its
    ``connectionMade``, ``dataReceived``, ``allContentReceived`` and ``connectionLost``."""

    _request_deadline = None

    def guard_admit(self) -> bool:
        """At connectionMade: False (and the newcomer refused 503) when a cap is reached."""
        gate = getattr(self.factory, "gate", None)
        if gate is None or gate.admit(self, peer_host(self.transport)):
            return True
        self.refuse_guarded(503, "too many connections from your address")
        return False

    def guard_data(self) -> None:
        """At dataReceived: the first byte of a request starts its deadline."""
        timeout = getattr(self.factory, "request_timeout", None)
        if timeout and self._request_deadline is None:
            self._request_deadline = self.callLater(timeout, self._request_too_slow, timeout)

    def guard_request_read(self) -> None:
        """At allContentReceived: the request is all here; answering it has no deadline of ours."""
        self._cancel_deadline()

    def guard_lost(self) -> None:
        self._cancel_deadline()
        gate = getattr(self.factory, "gate", None)
        if gate is not None:
            gate.release(self)

    def _cancel_deadline(self) -> None:
        if self._request_deadline is not None and self._request_deadline.active():
            self._request_deadline.cancel()
        self._request_deadline = None

    def _request_too_slow(self, timeout: float) -> None:
        self._request_deadline = None
        if getattr(self, "refused", False):
            return
        gate = getattr(self.factory, "gate", None)
        host = peer_host(self.transport)
        if gate is not None:
            gate.refusals.note(host, "cut (request_timeout)",
                               f"cut: its request was not complete after request_timeout = {timeout:g}s")
        self.refuse_guarded(408, f"the request did not arrive whole within {timeout:g}s")


def guard(site, *, max_connections_per_address: int = ADMIN_PER_ADDRESS,
          request_timeout: float = ADMIN_REQUEST_TIMEOUT, label: str = "admin API", reactor=None):
    """Give ``site`` (whose protocol is a ``GuardedChannel``, with ``max_connections``) per-address
    caps and a request deadline; the gate counts against the site's own cap too."""
    site.gate = ConnectionGate(label, max_connections=site.max_connections,
                               per_address=max_connections_per_address,
                               reactor=reactor or getattr(site, "reactor", None))
    site.request_timeout = request_timeout
    return site
