"""TCP and TLS endpoints for every connector, so TLS rules are written once.

Listeners: ``tls = { cert, key, client_ca }`` (``client_ca`` = mutual TLS: a client without a
certificate signed by that CA is refused during the handshake).  Clients: ``tls = { ca, cert, key,
verify = true }``; the peer's hostname is verified unless ``verify = false``.  TLS 1.2 is the
minimum both ways.  Built on Twisted's ``CertificateOptions`` / ``optionsForClientTLS`` rather than
raw pyOpenSSL contexts.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import ssl
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
)

from engine.connectors.send_at_once import connecting

MINIMUM = ssl.TLSVersion.TLSv1_2


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


def server_endpoint(reactor, host: str, port: int, tls=None):
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
