"""TLS everywhere, through the real daemon, with a throwaway CA made at run time.

MLLP in and out, HTTP in and out: mutual TLS round trips, clients without (or with untrusted)
certificates refused during the handshake (RELIABILITY 28), peers' hostnames verified (a
certificate for another name is not sent to; ``verify = false`` is the explicit way out), and
TLS 1.1 refused by our listeners (TLS 1.2 minimum).  Certificates come from ``cryptography``
(installed with pyOpenSSL): EC P-256, SANs for ``localhost`` and ``127.0.0.1``.
"""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import sqlite3
import ssl
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.daemon import Daemon, MllpClient, MllpPeer, hl7, wait_for

pytestmark = pytest.mark.slow

FAST_RETRY = 'retry = { interval = "100ms", backoff = 1.5, max_interval = "1s" }'


# -- a throwaway PKI -------------------------------------------------------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, issuer_key, issuer_name, *, ca=False, sans=(), usage=None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(issuer_name or _name(subject)).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    certificate = builder.sign(issuer_key or key, hashes.SHA256())
    return key, certificate


def _write(directory: Path, stem: str, key, certificate) -> None:
    (directory / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / f"{stem}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca = _issue("Switchboard Test CA", None, None, ca=True)
    _write(directory, "ca", ca_key, ca)
    local = [x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))]
    server = ExtendedKeyUsageOID.SERVER_AUTH
    client = ExtendedKeyUsageOID.CLIENT_AUTH
    _write(directory, "server", *_issue("localhost", ca_key, ca.subject, sans=local, usage=server))
    _write(directory, "wrong", *_issue("wrong.example", ca_key, ca.subject,
                                       sans=[x509.DNSName("wrong.example")], usage=server))
    _write(directory, "client", *_issue("test-client", ca_key, ca.subject, usage=client))
    rogue_key, rogue = _issue("Rogue CA", None, None, ca=True)
    _write(directory, "rogue-client", *_issue("rogue-client", rogue_key, rogue.subject, usage=client))
    return directory


def client_context(pki: Path, certificate: str | None = "client") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if certificate:
        context.load_cert_chain(str(pki / f"{certificate}.pem"), str(pki / f"{certificate}.key"))
    return context


def server_context(pki: Path, certificate: str = "server", require_client: bool = True) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki / f"{certificate}.pem"), str(pki / f"{certificate}.key"))
    if require_client:
        context.load_verify_locations(str(pki / "ca.pem"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# -- TLS peers and clients ------------------------------------------------------------------
class TlsMllpClient(MllpClient):
    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            self.sock = context.wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        self.buffer = b""


class TlsMllpPeer(MllpPeer):
    """The support MLLP peer behind TLS; handshake failures are counted, not raised."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.handshake_failures = 0
        super().__init__()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshake_failures += 1
            conn.close()
            return
        self.connections.append(tls)
        try:
            super()._handle(tls)
        finally:
            tls.close()   # answer the daemon's close_notify by closing, as a real peer does


class HttpsPeer:
    """An HTTPS server in a thread that answers 200 and records request bodies."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.bodies: list[bytes] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                peer.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                conn, address = self.socket.accept()
                return context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), address

            def handle_error(self, request, client_address):
                pass   # refused handshakes are part of the tests

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# -- the daemon -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(pki, tmp_path_factory):
    mllp_peer = TlsMllpPeer(server_context(pki))
    wrong_peer = TlsMllpPeer(server_context(pki, "wrong"))
    https_peer = HttpsPeer(server_context(pki, require_client=False))
    https_wrong = HttpsPeer(server_context(pki, "wrong", require_client=False))
    server_tls = f'tls = {{ cert = "{pki}/server.pem", key = "{pki}/server.key", client_ca = "{pki}/ca.pem" }}'
    client_tls = f'tls = {{ ca = "{pki}/ca.pem", cert = "{pki}/client.pem", key = "{pki}/client.key" }}'
    mllp_in = f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n{server_tls}\n'

    def to(kind: str, where: str, tls: str) -> str:
        key = "connect" if kind == "mllp" else "url"
        return (mllp_in.replace(server_tls, "") +
                f'[[destination]]\nname = "out"\ntype = "{kind}"\n{key} = "{where}"\n{tls}\n{FAST_RETRY}\n')

    channels = {
        "mllps": mllp_in,
        "https-in": f'[source]\ntype = "http"\nlisten = "127.0.0.1:0"\npath = "/in"\n{server_tls}\n',
        "to-mllps": to("mllp", f"127.0.0.1:{mllp_peer.port}", client_tls),
        "to-wrong-name": to("mllp", f"127.0.0.1:{wrong_peer.port}", client_tls),
        "to-https": to("http", f"https://127.0.0.1:{https_peer.port}/in", f'tls = {{ ca = "{pki}/ca.pem" }}'),
        "to-https-wrong": to("http", f"https://127.0.0.1:{https_wrong.port}/in", f'tls = {{ ca = "{pki}/ca.pem" }}'),
        "to-https-unverified": to("http", f"https://127.0.0.1:{https_wrong.port}/in", "tls = { verify = false }"),
    }
    daemon = Daemon(tmp_path_factory.mktemp("tls"), channels).start(expect_channels=len(channels))
    yield daemon, {"mllp": mllp_peer, "wrong": wrong_peer, "https": https_peer, "https-wrong": https_wrong}
    daemon.stop()
    for peer in (mllp_peer, wrong_peer, https_peer, https_wrong):
        peer.close()


def stored_control_ids(daemon: Daemon, channel: str) -> list[str]:
    with sqlite3.connect(daemon.db) as conn:
        return [row[0] for row in conn.execute("SELECT control_id FROM messages WHERE channel = ?", (channel,))]


def send_plain(daemon: Daemon, channel: str, control_id: str) -> int:
    """Feed a channel whose source is plain MLLP; return the stored message id."""
    client = MllpClient(daemon.ports[channel])
    assert client.request(hl7(control_id))["code"] == "AA"
    client.close()
    return daemon.cli_json("messages", "--control-id", control_id)[0]["id"]


# -- MLLP in ------------------------------------------------------------------------------
def test_mllp_round_trip_over_mutual_tls(setup, pki):
    daemon, _ = setup
    client = TlsMllpClient(daemon.ports["mllps"], client_context(pki))
    ack = client.request(hl7("TLS-1"))
    client.close()
    assert ack["code"] == "AA" and ack["control_id"] == "TLS-1"
    assert "TLS-1" in stored_control_ids(daemon, "mllps")


@pytest.mark.parametrize("certificate", [None, "rogue-client"])
def test_mllp_client_without_a_trusted_certificate_is_refused(setup, pki, certificate):  # RELIABILITY 28
    daemon, _ = setup
    control_id = f"TLS-NOCERT-{certificate}"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        # TLS 1.3 finishes the client's side of the handshake before the server judges the
        # certificate: the refusal then arrives on the first read
        client = TlsMllpClient(daemon.ports["mllps"], client_context(pki, certificate))
        try:
            client.request(hl7(control_id))
        finally:
            client.close()
    assert control_id not in stored_control_ids(daemon, "mllps")


def test_tls_1_1_is_refused(setup, pki):
    daemon, _ = setup
    for port in (daemon.ports["mllps"], daemon.ports["https-in"]):
        assert handshake(port, pki, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"   # control: this client works
        # the alert comes from the daemon: our client did offer TLS 1.1
        with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):
            handshake(port, pki, "TLSv1_1")


def handshake(port: int, pki: Path, maximum) -> str:
    """Handshake with a client capped at ``maximum``; return the negotiated version."""
    context = client_context(pki)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")    # let our client offer old versions at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # ssl.TLSVersion.TLSv1* are deprecated
        if maximum == "TLSv1_1":
            maximum = ssl.TLSVersion.TLSv1_1
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.version()
    finally:
        raw.close()


# -- MLLP out -----------------------------------------------------------------------------
def test_mllp_destination_over_mutual_tls(setup):
    daemon, peers = setup
    message_id = send_plain(daemon, "to-mllps", "TLS-OUT-1")
    daemon.wait_status(message_id, "SENT")
    assert peers["mllp"].control_ids() == ["TLS-OUT-1"]


def test_mllp_destination_refuses_a_certificate_for_another_name(setup):
    daemon, peers = setup
    message_id = send_plain(daemon, "to-wrong-name", "TLS-WRONG-1")
    tried = wait_for(lambda: [a for a in daemon.cli_json("show", str(message_id))["destinations"][0]["attempts"]
                              if not a["ok"]][:2] or None, what="refused attempts")
    assert all(not a["ok"] for a in tried)
    assert peers["wrong"].received == []                 # nothing was sent to the wrong host
    assert daemon.cli_json("show", str(message_id))["status"] == "QUEUED"


# -- HTTP in and out ------------------------------------------------------------------------
def test_http_source_over_mutual_tls(setup, pki):
    daemon, _ = setup
    conn = http.client.HTTPSConnection("localhost", daemon.ports["https-in"], timeout=10,
                                       context=client_context(pki))
    try:
        conn.request("POST", "/in", body=json.dumps({"over": "tls"}))
        response = conn.getresponse()
        answer = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 202 and daemon.cli_json("show", str(answer["id"]))["channel"] == "https-in"
    anonymous = http.client.HTTPSConnection("localhost", daemon.ports["https-in"], timeout=10,
                                            context=client_context(pki, None))
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            anonymous.request("POST", "/in", body=json.dumps({"over": "tls", "anonymous": True}))
            anonymous.getresponse()
    finally:
        anonymous.close()


def test_http_destination_over_https(setup):
    daemon, peers = setup
    message_id = send_plain(daemon, "to-https", "TLS-HTTPS-1")
    daemon.wait_status(message_id, "SENT")
    assert any(b"TLS-HTTPS-1" in body for body in peers["https"].bodies)


def test_http_destination_verifies_the_name_unless_told_not_to(setup):
    daemon, peers = setup
    refused = send_plain(daemon, "to-https-wrong", "TLS-HTTPS-WRONG")
    wait_for(lambda: daemon.cli_json("show", str(refused))["destinations"][0]["attempts"], what="a refused attempt")
    unverified = send_plain(daemon, "to-https-unverified", "TLS-HTTPS-UNVERIFIED")
    daemon.wait_status(unverified, "SENT")
    assert daemon.cli_json("show", str(refused))["status"] == "QUEUED"
    assert not any(b"TLS-HTTPS-WRONG" in body for body in peers["https-wrong"].bodies)
