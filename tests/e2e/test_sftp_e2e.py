"""The SFTP connectors through the real daemon against a real OpenSSH server on 127.0.0.1.

The server is Debian's ``/usr/sbin/sshd`` (``.ci/run`` installs it) started by the tests with a
throwaway host key and client key; its SFTP root is a temp directory on this machine, so the
tests check what arrived (or left) with plain file reads.  Host-key checking is never switched
off here: the wrong-key tests prove the connectors refuse instead of connecting blindly.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from support.daemon import MLLP_CHANNEL, Daemon, MllpClient, free_port, hl7, wait_for

pytestmark = pytest.mark.slow

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")   # sshd refuses to start without it; systemd makes it at boot


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "switchboard-test", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the per-connection sshd processes of our server)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Sshd:
    """A throwaway OpenSSH server: its own host key, one authorized client key, a log file."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "sshd"
        self.dir.mkdir()
        self.host_key = keygen(self.dir / "host_key")
        self.client_key = keygen(self.dir / "client_key")
        (self.dir / "authorized_keys").write_text((self.dir / "client_key.pub").read_text())
        self.config = self.dir / "sshd_config"
        self.config.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"HostKey {self.host_key}", f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}", "PermitRootLogin yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "Subsystem sftp internal-sftp", "",
        ]))
        self.user = getpass.getuser()
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log = self.dir / "sshd.log"

    def known_hosts(self, name: str, key_file: Path | None = None) -> Path:
        """A known_hosts file naming ``[127.0.0.1]:PORT`` with the server's key (or another one)."""
        kind, blob = (key_file or self.host_key).with_suffix(".pub").read_text().split()[:2]
        path = self.dir / name
        path.write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")
        return path

    def start(self, port: int | None = None) -> "Sshd":
        for _ in range(3):   # a port from free_port() may be taken meanwhile: try another
            self.port = port or free_port()
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    [str(SSHD), "-D", "-e", "-f", str(self.config), "-p", str(self.port)],
                    stdout=log, stderr=subprocess.STDOUT)
            if wait_for(lambda: self.process.poll() is not None or _accepts(self.port), 10,
                        what="sshd to listen") and self.process.poll() is None:
                return self
            if port:
                break
        raise AssertionError("sshd did not start:\n" + self.log.read_text(errors="replace"))

    def stop(self) -> None:
        """Stop the listener and every session it forked, so clients must reconnect."""
        if self.process is None or self.process.poll() is not None:
            return
        children = descendants(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        wait_for(lambda: not _accepts(self.port), 10, what="sshd to stop listening")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def sshd_or_skip(root: Path) -> Sshd:
    if not SSHD.exists():
        pytest.skip("OpenSSH server not installed (/usr/sbin/sshd); .ci/run installs openssh-server")
    if not PRIVSEP_DIR.is_dir():
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        except OSError as error:
            pytest.skip(f"sshd needs {PRIVSEP_DIR}, which cannot be created here: {error.strerror}")
    return Sshd(root)


def ssh_options(sshd: Sshd, remote: Path, known_hosts: Path) -> str:
    return (f'host = "127.0.0.1"\nport = {sshd.port}\nusername = "{sshd.user}"\n'
            f'private_key = "{sshd.client_key}"\nknown_hosts = "{known_hosts}"\nremote_path = "{remote}"\n'
            'connect_timeout = "5s"\ntimeout = "5s"\n')


def to_sftp(sshd: Sshd, remote: Path, known_hosts: Path) -> str:
    return MLLP_CHANNEL.format(source_extra="") + (
        '\n[[destination]]\nname = "remote"\ntype = "sftp"\n' + ssh_options(sshd, remote, known_hosts)
        + 'filename = "{{ meta.mrn }}-{{ id }}.hl7"\n'
        'retry = { interval = "200ms", max_interval = "500ms" }\n')


def from_sftp(sshd: Sshd, remote: Path, known_hosts: Path) -> str:
    return ('[source]\ntype = "sftp"\n' + ssh_options(sshd, remote, known_hosts)
            + 'split = "hl7-batch"\npoll_interval = "200ms"\nsettle = "100ms"\n'
            '[metadata]\nmrn = "PID.3.1"\n')


def from_sftp_x12(sshd: Sshd, remote: Path, known_hosts: Path) -> str:
    return ('inbound = "x12"\n[source]\ntype = "sftp"\n' + ssh_options(sshd, remote, known_hosts)
            + 'poll_interval = "200ms"\nsettle = "100ms"\nack = "999"\n')


def put_remote(directory: Path, name: str, text: str) -> None:
    """Drop a file into the SFTP root the way a careful sender does: dot name, then rename."""
    temp = directory / f".{name}.part"
    temp.write_text(text)
    temp.rename(directory / name)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = sshd_or_skip(tmp_path_factory.mktemp("sftp-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def world(sshd, tmp_path_factory):
    root = tmp_path_factory.mktemp("sftp")
    dirs = {name: root / "remote" / name for name in ("outbox", "inbox", "guarded", "guarded-in", "unknown", "x12")}
    for path in dirs.values():
        path.mkdir(parents=True)
    good = sshd.known_hosts("known_hosts")
    wrong = sshd.known_hosts("known_hosts.wrong", keygen(root / "impostor_key"))
    empty = sshd.dir / "known_hosts.empty"
    empty.write_text("")
    put_remote(dirs["guarded-in"], "waiting.hl7", hl7("SFTP-GUARDED"))
    daemon = Daemon(root / "engine", {
        "to-sftp": to_sftp(sshd, dirs["outbox"], good),
        "to-missing-dir": to_sftp(sshd, root / "remote" / "no-such-dir", good),
        "to-wrong-key": to_sftp(sshd, dirs["guarded"], wrong),
        "to-unknown-key": to_sftp(sshd, dirs["unknown"], empty),
        "from-sftp": from_sftp(sshd, dirs["inbox"], good),
        "from-wrong-key": from_sftp(sshd, dirs["guarded-in"], wrong),
        "from-sftp-x12": from_sftp_x12(sshd, dirs["x12"], good),
    })
    daemon.start(expect_channels=4)
    wait_for(lambda: sum("started: sftp source" in line for line in daemon.log_lines) == 3,
             what="both sftp sources to start")
    yield daemon, dirs
    daemon.stop()


def send(daemon: Daemon, channel: str, *messages: str) -> list[int]:
    client = MllpClient(daemon.ports[channel])
    try:
        for message in messages:
            assert client.request(message)["code"] == "AA"
    finally:
        client.close()
    ids = []
    for message in messages:
        control_id = message.split("\r")[0].split("|")[9]
        listed = daemon.cli_json("messages", "--channel", channel, "--control-id", control_id)
        ids.append(listed[0]["id"])
    return ids


def attempts(daemon: Daemon, message_id: int) -> list[dict]:
    return daemon.cli_json("show", str(message_id))["destinations"][0]["attempts"]


def test_destination_uploads_each_message_atomically(world):
    daemon, dirs = world
    messages = [hl7(f"SFTP-OUT-{n}", mrn=f"M{n}") for n in range(3)]
    ids = send(daemon, "to-sftp", *messages)
    for message_id in ids:
        daemon.wait_status(message_id, "SENT")
    for n, (message_id, message) in enumerate(zip(ids, messages)):
        assert (dirs["outbox"] / f"M{n}-{message_id}.hl7").read_bytes() == message.encode() + b"\r"   # the final CR added (§3.5)
    assert sorted(p.name for p in dirs["outbox"].iterdir()) == sorted(f"M{n}-{i}.hl7" for n, i in enumerate(ids))
    shown = daemon.cli_json("show", str(ids[0]))["destinations"][0]
    assert shown["attempts"][-1]["ok"] and shown["status"] == "SENT"


def test_destination_missing_directory_is_permanent(world):
    daemon, _dirs = world
    [message_id] = send(daemon, "to-missing-dir", hl7("SFTP-NODIR"))
    shown = daemon.wait_status(message_id, "ERROR")
    tried = shown["destinations"][0]["attempts"]
    assert len(tried) == 1 and "no such file or directory" in tried[0]["error"]


@pytest.mark.parametrize("channel, directory, words", [
    ("to-wrong-key", "guarded", "does not match known_hosts"),
    ("to-unknown-key", "unknown", "not in known_hosts"),
])
def test_destination_refuses_a_host_key_it_does_not_know(world, channel, directory, words):
    daemon, dirs = world
    [message_id] = send(daemon, channel, hl7(f"SFTP-{channel.upper()}"))
    tried = wait_for(lambda: attempts(daemon, message_id), what="a failed attempt")
    assert not tried[0]["ok"] and words in tried[0]["error"]
    assert daemon.cli_json("show", str(message_id))["status"] == "QUEUED"   # retried, never dropped
    assert list(dirs[directory].iterdir()) == []


def test_source_takes_a_batch_file_and_moves_it_to_done(world):
    daemon, dirs = world
    batch = "\n".join(hl7(f"SFTP-IN-{n}", mrn=f"IN{n}").replace("\r", "\n") for n in range(3)) + "\n"
    put_remote(dirs["inbox"], "batch-001.hl7", batch)
    done = dirs["inbox"] / "done" / "batch-001.hl7"
    wait_for(done.exists, 15, what="the remote file to move to done/")
    assert done.read_text() == batch and not (dirs["inbox"] / "batch-001.hl7").exists()
    listed = daemon.cli_json("messages", "--channel", "from-sftp")
    assert sorted(m["control_id"] for m in listed if m["control_id"].startswith("SFTP-IN-")) == [
        "SFTP-IN-0", "SFTP-IN-1", "SFTP-IN-2"]
    stored = {m["control_id"]: m for m in listed}
    assert stored["SFTP-IN-1"]["meta"]["mrn"] == "IN1"
    raw = daemon.cli_json("show", str(stored["SFTP-IN-2"]["id"]))["raw"]
    assert raw == hl7("SFTP-IN-2", mrn="IN2") + "\r"   # one message, every segment ending with CR (§3.5)

    # the same content dropped again is recognised by its hash (RELIABILITY 33): moved, not re-stored
    put_remote(dirs["inbox"], "batch-002.hl7", batch)
    wait_for((dirs["inbox"] / "done" / "batch-002.hl7").exists, 15, what="the re-dropped file to move")
    assert len(daemon.cli_json("messages", "--channel", "from-sftp")) == len(listed)
    assert any("batch-002.hl7 has the content of a file already processed" in line for line in daemon.log_lines)


def test_source_moves_an_unreadable_file_to_error_with_a_reason(world):
    daemon, dirs = world
    put_remote(dirs["inbox"], "junk.hl7", "this is not HL7\n")
    moved = dirs["inbox"] / "error" / "junk.hl7"
    wait_for(moved.exists, 15, what="junk.hl7 to move to error/")   # the .reason is written first
    assert moved.read_text() == "this is not HL7\n"
    assert "not HL7" in (dirs["inbox"] / "error" / "junk.hl7.reason").read_text()
    assert not (dirs["inbox"] / "junk.hl7").exists()


def test_source_refuses_a_wrong_host_key(world):
    daemon, dirs = world
    wait_for(lambda: any("from-wrong-key" in line and "does not match known_hosts" in line
                         for line in daemon.log_lines), 15, what="the host key refusal in the log")
    assert [p.name for p in dirs["guarded-in"].iterdir()] == ["waiting.hl7"]
    assert daemon.cli_json("messages", "--channel", "from-wrong-key") == []


X12_SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "x12"


def test_source_takes_an_835_per_transaction_and_writes_its_999_beside_it(world):
    """inbound = "x12" over SFTP (DESIGN §3.11): each transaction set stored with its envelope's
    ids, the 999 written to done/NAME.999 on the server; a broken interchange gets a rejecting
    999 in error/ with a reason naming positions, and the next good file is still taken."""
    daemon, dirs = world
    remittance = (X12_SAMPLES / "835_remittance.x12").read_text("latin-1")
    sets = remittance.count("~ST*")
    put_remote(dirs["x12"], "era-001.x12", remittance)
    wait_for(lambda: (dirs["x12"] / "done" / "era-001.x12").exists(), 15, what="the 835 to move to done/")
    text = (dirs["x12"] / "done" / "era-001.x12.999").read_text()   # written before the move
    assert text.startswith("ISA*") and "ST*999*" in text and f"AK9*A*{sets}*{sets}*{sets}" in text
    listed = wait_for(lambda: [m for m in daemon.cli_json("messages", "--channel", "from-sftp-x12")
                               if m["type"] == "835"] or None, 15, what="the 835's sets stored")
    assert len(listed) == sets
    assert {m["meta"]["isa13"] for m in listed} == {remittance.split("*")[13]}

    broken = (X12_SAMPLES / "malformed_se_count.x12").read_text("latin-1")
    put_remote(dirs["x12"], "era-bad.x12", broken)
    reason, answer = dirs["x12"] / "error" / "era-bad.x12.reason", dirs["x12"] / "error" / "era-bad.x12.999"
    wait_for(lambda: reason.exists() and answer.exists(), 15, what="the broken 835's reason and 999 in error/")
    rejecting = answer.read_text()
    assert "IK5*R" in rejecting and "segment" in reason.read_text()
    assert "SAMPLE" not in reason.read_text()

    again = remittance.replace(remittance.split("*")[13], "000000777")
    put_remote(dirs["x12"], "era-002.x12", again)
    wait_for(lambda: (dirs["x12"] / "done" / "era-002.x12").exists(), 15, what="the next 835 taken")


def test_no_message_content_in_the_log(world):
    daemon, _dirs = world
    assert not any("DOE^JANE" in line or "DOE" in line for line in daemon.log_lines)


def test_destination_reconnects_after_the_server_restarts(tmp_path):
    server = sshd_or_skip(tmp_path).start()
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    daemon = Daemon(tmp_path / "engine", {"out": to_sftp(server, outbox, server.known_hosts("kh"))})
    try:
        daemon.start(expect_channels=1)
        [first] = send(daemon, "out", hl7("SFTP-RC-1", mrn="R1"))
        daemon.wait_status(first, "SENT")
        server.stop()   # the kept connection dies with its session process
        [second] = send(daemon, "out", hl7("SFTP-RC-2", mrn="R2"))
        wait_for(lambda: attempts(daemon, second), what="an attempt while the server is down")
        assert daemon.cli_json("show", str(second))["status"] == "QUEUED"
        server.start(port=server.port)
        daemon.wait_status(second, "SENT")
        assert (outbox / f"R2-{second}.hl7").read_bytes() == hl7("SFTP-RC-2", mrn="R2").encode() + b"\r"   # the final CR added (§3.5)
    finally:
        daemon.stop()
        server.stop()
