"""Test support: the real daemon in a subprocess, a blocking MLLP client and MLLP peers.

End-to-end tests use these instead of mocks: the daemon is ``python -m engine.cli run`` with a
config written into a temp dir, listening on ephemeral ports that it reports in its start-up log;
clients and peers are plain sockets on 127.0.0.1.  Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "samples" / "hl7v2"
START_LINE = re.compile(r"channel (\S+) started: (\S+) source(?: on ([\d.]+):(\d+))?")
ADMIN_LINE = re.compile(r"admin API listening on ([\d.]+):(\d+)")
ADMIN_TOKEN = "test-token"
VB, FS_CR = b"\x0b", b"\x1c\x0d"


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def hl7(control_id: str, *, msg_type: str = "ADT^A08", mrn: str = "MRN1", account: str = "ACC1",
        extra: str = "") -> str:
    """A small valid HL7 v2.5 message with CR separators."""
    segments = [
        f"MSH|^~\\&|EHR|HOSP|SWB|AGENCY|20240101120000||{msg_type}|{control_id}|P|2.5",
        "EVN|A08|20240101120000",
        f"PID|1||{mrn}^^^HOSP^MR||DOE^JANE||19800101|F|||1 MAIN ST^^TOWN^ST^12345|||||||{account}",
        pv1(financial_class="SELF", balance="250.00"),
    ]
    if extra:
        segments.append(extra)
    return "\r".join(segments)


def pv1(**values: str) -> str:
    """A PV1 with PV1-20 financial class and PV1-46 balance placed by position, not by counting pipes."""
    fields = [""] * 50
    fields[1], fields[2] = "1", "O"
    fields[20] = values.get("financial_class", "")
    fields[41] = values.get("account_status", "")
    fields[46] = values.get("balance", "")
    return "PV1|" + "|".join(fields[1:47])


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8").replace("\r\n", "\n").replace("\n", "\r").strip("\r")


def parse_cli_json(result) -> object:
    """The CLI's --json output; when it is not JSON, fail with everything the CLI printed."""
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"{result.args[-3:]}: stdout is not JSON ({error}); "
                             f"stdout={result.stdout[:2000]!r} stderr={result.stderr[:2000]!r}") from None


class Daemon:
    """``switchboard run`` in a subprocess with its own config tree under ``root``."""

    def __init__(self, root: Path, channels: dict[str, str], *, templates: dict[str, str] | None = None,
                 plugins: dict[str, str] | None = None, extra_config: str = "", env: dict | None = None) -> None:
        self.root = root
        (root / "channels").mkdir(parents=True, exist_ok=True)
        (root / "transforms").mkdir(exist_ok=True)
        (root / "plugins").mkdir(exist_ok=True)
        for name, text in channels.items():
            (root / "channels" / f"{name}.toml").write_text(text)
        for name, text in (templates or {}).items():
            (root / "transforms" / name).write_text(text)
        for name, text in (plugins or {}).items():
            (root / "plugins" / name).write_text(text)
        (root / "config.toml").write_text(
            '[engine]\nlog_level = "debug"\n[store]\npath = "var/switchboard.db"\n'
            '[admin]\nlisten = "127.0.0.1:0"\ntoken = "test-token"\n' + extra_config
        )
        self.env = dict(os.environ, **(env or {}))
        self.process: subprocess.Popen | None = None
        self.log_lines: list[str] = []
        self.ports: dict[str, int] = {}
        self.admin_port: int | None = None
        self._reader: threading.Thread | None = None

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def db(self) -> Path:
        return self.root / "var" / "switchboard.db"

    def start(self, expect_channels: int | None = None, timeout: float = 20.0) -> "Daemon":
        self.ports = {}
        self.log_lines = []
        self.admin_port = None          # a restart must wait for the new listener, not the old port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli.main", "-c", str(self.config), "run"],
            cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        wait_for(lambda: self.started or self.process.poll() is not None, timeout, what="daemon start")
        if self.process.poll() is not None:
            self._close_pipe()
            raise AssertionError("daemon exited at start:\n" + self.log)
        if expect_channels is not None:
            wait_for(lambda: len(self.ports) >= expect_channels, timeout, what="channels to listen")
        # the admin API opens just after "switchboard started": wait for its line too
        wait_for(lambda: self.admin_port is not None or self.process.poll() is not None, timeout,
                 what="the admin API to listen")
        return self

    def _read_log(self) -> None:
        for line in self.process.stdout:
            self.log_lines.append(line.rstrip("\n"))
            match = START_LINE.search(line)
            if match and match.group(4):
                self.ports[match.group(1)] = int(match.group(4))
            admin = ADMIN_LINE.search(line)
            if admin:
                self.admin_port = int(admin.group(2))

    @property
    def started(self) -> bool:
        return any("switchboard started" in line for line in self.log_lines)

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("daemon did not stop within the timeout:\n" + self.log)
        self._close_pipe()
        return code

    def _close_pipe(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
        if self.process is not None and self.process.stdout is not None and not self.process.stdout.closed:
            self.process.stdout.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close_pipe()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return run_cli("-c", str(self.config), *args, cwd=self.root, env=self.env, timeout=timeout)

    def cli_json(self, *args: str):
        result = self.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        return parse_cli_json(result)

    def wait_status(self, message_id: int, status: str, timeout: float = 15.0) -> dict:
        def check():
            shown = self.cli("show", str(message_id), "--json")
            if shown.returncode == 0:
                data = parse_cli_json(shown)
                return data if data["status"] == status else None
            return None

        return wait_for(check, timeout, interval=0.1, what=f"message {message_id} to be {status}")

    def api(self, method: str, path: str, body=None, *, token: str | None = ADMIN_TOKEN,
            timeout: float = 60.0) -> tuple[int, object]:
        """Call the admin API with urllib: (status, decoded JSON or text)."""
        return api_call(self.admin_port, method, path, body, token=token, timeout=timeout)


def api_call(port: int, method: str, path: str, body=None, *, token: str | None = ADMIN_TOKEN,
             timeout: float = 60.0) -> tuple[int, object]:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get("Content-Type", "")
    text = raw.decode("utf-8")
    return status, json.loads(text) if kind.startswith("application/json") else text


def http_call(port: int, method: str, path: str, token: str | None = None, body: bytes | None = None,
              kind: str = "application/json", cookie: str | None = None, timeout: float = 60.0):
    """One raw HTTP request to the admin server: ``(status, headers, text)``, nothing parsed (the
    role and session tests look at headers, cookies and pages as a browser gets them)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": kind}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = cookie
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read().decode("utf-8", "replace")
    finally:
        connection.close()


def run_cli(*args: str, cwd=None, env=None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


class MllpClient:
    """A blocking MLLP client: real socket, bounded reads."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: str | bytes) -> None:
        payload = message.encode() if isinstance(message, str) else message
        self.sock.sendall(VB + payload + FS_CR)

    def read_frame(self) -> bytes:
        while FS_CR not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the daemon (buffer {self.buffer[:80]!r})")
            self.buffer += chunk
        end = self.buffer.index(FS_CR)
        frame, self.buffer = self.buffer[:end], self.buffer[end + 2:]
        assert frame.startswith(VB), frame[:20]
        return frame[1:]

    def request(self, message: str | bytes) -> dict:
        self.send(message)
        return parse_ack(self.read_frame())

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True once the daemon has closed (FIN or RST) this connection."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def parse_ack(frame: bytes) -> dict:
    text = frame.decode("utf-8", "replace")
    segments = [s for s in text.split("\r") if s]
    msh = segments[0]
    sep = msh[3]
    fields = {seg[:3]: seg.split(sep) for seg in segments}
    msa = fields.get("MSA", [])
    return {"code": msa[1] if len(msa) > 1 else None, "control_id": msa[2] if len(msa) > 2 else None,
            "segments": segments, "text": text, "sep": sep}


class MllpPeer:
    """A downstream MLLP server in a thread: records messages and answers per ``responder``.

    ``responder(payload) -> bytes | None`` returns the ACK payload (None: no answer).  The default
    answers AA with MSA-2 = the message's MSH-10.
    """

    def __init__(self, responder=None, port: int = 0) -> None:
        self.responder = responder or (lambda payload: ack_for(payload, "AA"))
        self.received: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.running = True
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.2)
        while self.running:
            try:
                conn, _ = self.server.accept()
            except (socket.timeout, OSError):
                continue
            self.connections.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buffer = b""
        conn.settimeout(0.5)
        while self.running:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while FS_CR in buffer:
                end = buffer.index(FS_CR)
                payload, buffer = buffer[1:end], buffer[end + 2:]
                self.received.append(payload)
                if not self.answer(conn, payload):
                    return

    def answer(self, conn: socket.socket, payload: bytes) -> bool:
        """Answer one frame (already journalled); False ends the connection's reading."""
        answer = self.responder(payload)
        if answer is None:
            return True
        try:
            conn.sendall(VB + answer + FS_CR)
        except OSError:
            return False
        return True

    def control_ids(self) -> list[str]:
        return [control_id_of(p) for p in self.received]

    def close(self) -> None:
        self.running = False
        for conn in self.connections:
            try:
                conn.close()
            except OSError:
                pass
        self.server.close()
        self.thread.join(2)


def relay_channel(port: int, extra: str = "", *, name: str = "peer") -> str:
    """A channel file: an MLLP source on an ephemeral port and one MLLP destination ``name`` to
    127.0.0.1:``port``; ``extra`` lines go into the destination table (ack_timeout, retry...)."""
    return (f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n\n[[destination]]\nname = "{name}"\n'
            f'type = "mllp"\nconnect = "127.0.0.1:{port}"\n{extra}\n')


def delivered_files(directory: Path) -> list[Path]:
    """The files a file destination finished writing, sorted: not its temp files (``.name.tmp-PID``,
    which ``Path.glob("*")`` lists too and which vanish when renamed into place)."""
    return sorted(path for path in Path(directory).glob("*") if not path.name.startswith("."))


def first_seen(items: list) -> list:
    """Each item once, in the order it first appeared (deliveries after at-least-once re-sends)."""
    return list(dict.fromkeys(items))


def control_id_of(payload: bytes) -> str:
    msh = payload.decode("utf-8", "replace").split("\r")[0]
    fields = msh.split(msh[3])
    return fields[9] if len(fields) > 9 else ""


def ack_for(payload: bytes, code: str) -> bytes:
    control_id = control_id_of(payload)
    return (f"MSH|^~\\&|PEER|PEER|SWB|SWB|20240101||ACK^A08^ACK|A{control_id}|P|2.5\r"
            f"MSA|{code}|{control_id}").encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MLLP_CHANNEL = """
[source]
type = "mllp"
listen = "127.0.0.1:0"
{source_extra}

[metadata]
mrn = "PID.3.1"
account = "PID.18.1"
"""


def last_reload(daemon) -> dict:
    status, state = daemon.api("GET", "/api/reload")
    assert status == 200, state
    return state


def wait_reload(daemon, before: dict, what: str, check=lambda state: True, timeout: float = 15.0) -> dict:
    """Wait for a reload newer than ``before`` for which ``check`` holds."""
    def newer():
        state = last_reload(daemon)
        return state if state["at"] != before["at"] and check(state) else None

    return wait_for(newer, timeout, interval=0.05, what=what)


class LoadSender(threading.Thread):
    """One connection to one node under load: send, wait for the answer, journal every AA; a
    refused message (AE/AR) is sent again under the same control id, as a sender does.  Every
    answer is kept with the moment it came; ``pause`` seconds after an AA, ``refused_pause`` after
    any other answer.  ``finish`` stops it."""

    def __init__(self, prefix: str, port: int, *, pause: float = 0.005, refused_pause: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.prefix, self.port, self.pause, self.refused_pause = prefix, port, pause, refused_pause
        self.answers: list[tuple[float, str, str]] = []   # (monotonic time, control id, code)
        self.acked: list[str] = []
        self.finish = threading.Event()

    def codes(self) -> set[str]:
        return {code for _at, _control_id, code in self.answers}

    def run(self) -> None:
        n, client = 0, None
        while not self.finish.is_set():
            control_id = f"{self.prefix}{n:05d}"
            try:
                client = client or MllpClient(self.port, timeout=5)
                code = client.request(hl7(control_id))["code"]
            except (OSError, ConnectionError):
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.05)
                continue
            self.answers.append((time.monotonic(), control_id, code))
            if code == "AA":
                self.acked.append(control_id)
                n += 1
            time.sleep(self.pause if code == "AA" else self.refused_pause)
        if client is not None:
            client.close()
