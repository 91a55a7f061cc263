"""TCP and TLS endpoints for every connector, so TLS rules are written once.

Listeners: ``tls = { cert, key, client_ca }`` (``client_ca`` = mutual TLS: a client without a
certificate signed by that CA is refused during the handshake).  Clients: ``tls = { ca, cert, key,
verify = true }``; the peer's hostname is verified unless ``verify = false``.  TLS 1.2 is the
minimum both ways.  Built on Twisted's ``CertificateOptions`` / ``optionsForClientTLS`` rather than
raw pyOpenSSL contexts.

Shared ports (``[engine] workers`` > 1, engine/runtime/workers.py): a worker calls ``share_ports()``
once, and from then on its listeners bind with SO_REUSEADDR + SO_REUSEPORT, so the N workers listen
on one address and the kernel spreads the connections.  Only workers do: a single daemon keeps
failing with "address in use" when a second one is started by mistake.
"""

from __future__ import annotations

import socket
from pathlib import Path

from twisted.internet import defer, error, ssl
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
)
from twisted.protocols.tls import TLSMemoryBIOFactory

from engine.connectors.send_at_once import connecting

MINIMUM = ssl.TLSVersion.TLSv1_2
BACKLOG = 50    # Twisted's listenTCP default
_shared = {"ports": False}


def share_ports() -> None:
    """From now on this process's listeners bind with SO_REUSEPORT (a worker among several)."""
    _shared["ports"] = True


def _read(path) -> bytes:
    return Path(path).read_bytes()


def server_context(tls) -> ssl.CertificateOptions:
    certificate = ssl.PrivateCertificate.loadPEM(_read(tls["key"]) + b"\n" + _read(tls["cert"]))
    kwargs = {}
    if tls.get("client_ca"):
        authority = ssl.Certificate.loadPEM(_read(tls["client_ca"]))
        kwargs = {"verify": True, "caCerts": [authority.original], "requireCertificate": True}
    return ssl.CertificateOptions(
        privateKey=certificate.privateKey.original,
        certificate=certificate.original,
        raiseMinimumTo=MINIMUM,
        **kwargs,
    )


def client_context(tls, hostname: str):
    """Client TLS options; ``server_name`` (when set) is the name sent (SNI) and verified."""
    hostname = tls.get("server_name") or hostname
    authority = ssl.Certificate.loadPEM(_read(tls["ca"])) if tls.get("ca") else None
    client_certificate = None
    if tls.get("cert") and tls.get("key"):
        client_certificate = ssl.PrivateCertificate.loadPEM(_read(tls["key"]) + b"\n" + _read(tls["cert"]))
    if tls.get("verify", True) is False:
        kwargs = {"raiseMinimumTo": MINIMUM}
        if client_certificate is not None:
            kwargs.update(privateKey=client_certificate.privateKey.original,
                          certificate=client_certificate.original)
        return ssl.CertificateOptions(**kwargs)
    return ssl.optionsForClientTLS(
        hostname,
        trustRoot=authority if authority is not None else ssl.platformTrust(),
        clientCertificate=client_certificate,
        extraCertificateOptions={"raiseMinimumTo": MINIMUM},
    )


class SharedPortEndpoint:
    """A listener bound with SO_REUSEADDR + SO_REUSEPORT, handed to the reactor as an adopted port
    (Twisted's own ``listenTCP`` has no way to set SO_REUSEPORT before ``bind``); TLS as
    ``listenSSL`` does it, the factory wrapped in ``TLSMemoryBIOFactory``."""

    def __init__(self, reactor, host: str, port: int, tls=None) -> None:
        self.reactor, self.host, self.port, self.tls = reactor, host, port, tls

    def listen(self, factory) -> defer.Deferred:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            context = server_context(self.tls) if self.tls else None
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((self.host, self.port))
                sock.listen(BACKLOG)
                sock.setblocking(False)
                if context is not None:
                    factory = TLSMemoryBIOFactory(context, False, factory)
                port = self.reactor.adoptStreamPort(sock.fileno(), family, factory)
            finally:
                sock.close()    # the reactor holds its own duplicate of the descriptor
        except OSError as problem:
            return defer.fail(error.CannotListenError(self.host, self.port, problem))
        except Exception:  # noqa: BLE001 - a bad certificate fails the listen as listenSSL would
            return defer.fail()
        return defer.succeed(port)


def server_endpoint(reactor, host: str, port: int, tls=None):
    if _shared["ports"]:
        return SharedPortEndpoint(reactor, host, port, tls)
    if tls:
        return SSL4ServerEndpoint(reactor, port, server_context(tls), interface=host)
    if ":" in host:
        return TCP6ServerEndpoint(reactor, port, interface=host)
    return TCP4ServerEndpoint(reactor, port, interface=host)


def client_endpoint(reactor, host: str, port: int, tls=None, timeout: float = 10.0):
    reactor = connecting(reactor)
    if tls:
        return SSL4ClientEndpoint(reactor, host, port, client_context(tls, host), timeout=timeout)
    if ":" in host:
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
