"""Real faults under the real daemon: the store cannot commit, a destination misbehaves, a disk fills.

Store (RELIABILITY "Promises", 26): a full filesystem (a small tmpfs), a read-only file
(``chattr +i``: root ignores permission bits) and a failing fsync (an ``LD_PRELOAD`` shim that makes
``fsync``/``fdatasync`` of the store's files fail with EIO while a flag file exists) each get AE or
a closed connection, never AA; the daemon keeps running and answers AA once the fault clears; the
message that got AE, re-sent, is then stored exactly once.  A locked store is
tests/e2e/test_ingest_e2e.py::test_locked_store_answers_ae_then_recovers.

Destinations (RELIABILITY 23-25): a peer that hangs, resets the connection, answers garbage or an
ACK for another message: retried (holding the line), never SENT, and SENT once the peer behaves.
A file destination on a full disk: retried, never lost, written once space is freed.

These are real faults, so they need what makes them: root with CAP_SYS_ADMIN for ``mount -t tmpfs``,
a filesystem that takes ``chattr +i``, a C compiler for the fsync shim.  Without one of those the
test that needs it is skipped and says exactly why.
"""

from __future__ import annotations

import errno
import shutil
import socket
import sqlite3
import struct
import subprocess
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from support.daemon import FS_CR, VB, Daemon, MllpClient, MllpPeer, ack_for, control_id_of, hl7, wait_for

pytestmark = pytest.mark.slow

FAST_RETRY = 'retry = { interval = "100ms", backoff = 1.5, max_interval = "400ms" }'


def mllp_channel(extra: str = "") -> str:
    return f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n{extra}\n'


# --- helpers: real faults ------------------------------------------------------------------------

@contextmanager
def tmpfs(path: Path, size: str):
    """Mount a tmpfs of ``size`` at ``path`` for the block; skip the test if mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root with CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a filler file until the filesystem says ENOSPC; return it (delete it to free space)."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as handle:
        while True:
            try:
                handle.write(chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                break
    return filler


def chattr(flag: str, *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)


FSYNC_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* fsync/fdatasync fail with EIO for files whose path contains $SWB_FSYNC_FAIL_MATCH while the file
   $SWB_FSYNC_FAIL_FLAG exists; otherwise they are the real calls. */
static int should_fail(int fd) {
    const char *flag = getenv("SWB_FSYNC_FAIL_FLAG"), *match = getenv("SWB_FSYNC_FAIL_MATCH");
    char link[64], path[PATH_MAX];
    ssize_t n;
    if (!flag || access(flag, F_OK) != 0) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    return !match || strstr(path, match) != NULL;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (should_fail(fd)) { errno = EIO; return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (should_fail(fd)) { errno = EIO; return -1; }
    return real(fd);
}
"""


@pytest.fixture(scope="module")
def fsync_shim(tmp_path_factory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc) to build the LD_PRELOAD fsync shim; install gcc to run this test")
    directory = tmp_path_factory.mktemp("shim")
    (directory / "fsync_fail.c").write_text(FSYNC_SHIM)
    built = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", "fsync_fail.so", "fsync_fail.c", "-ldl"],
                           cwd=directory, capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"the fsync shim does not build here: {built.stderr.strip()[:300]}")
    return directory / "fsync_fail.so"


# --- helpers: what the store holds ---------------------------------------------------------------

def stored(daemon: Daemon, control_id: str) -> int:
    with closing(sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT count(*) FROM messages WHERE control_id = ?", (control_id,)).fetchone()[0]


def integrity(daemon: Daemon) -> list:
    with closing(sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


def answer(port: int, message: str) -> str:
    """The ACK code for one message on a fresh connection, or "closed" if the daemon closed it."""
    client = MllpClient(port, timeout=30)
    try:
        return client.request(message)["code"]
    except ConnectionError:
        return "closed"
    finally:
        client.close()


def check_fault_then_recovery(daemon: Daemon, port: int, prefix: str, make_fault, clear_fault,
                              message=None) -> None:
    """AA before; never AA while the fault holds; AA after it clears; the refused one stored once."""
    message = message or hl7
    assert answer(port, hl7(f"{prefix}-0")) == "AA"
    make_fault()
    try:
        during = answer(port, message(f"{prefix}-1"))
    finally:
        clear_fault()
    assert during in ("AE", "closed"), f"{during} while the store could not commit"
    # the refusal came from the failed commit (the log is read by another thread: wait for the line)
    wait_for(lambda: "message could not be stored" in daemon.log, what="the store failure in the log")
    assert daemon.process.poll() is None, "the daemon died of a store fault:\n" + daemon.log[-2000:]
    assert answer(port, hl7(f"{prefix}-2")) == "AA"
    assert answer(port, message(f"{prefix}-1")) == "AA"   # the sender re-sends what got AE
    assert [stored(daemon, f"{prefix}-{n}") for n in range(3)] == [1, 1, 1]
    assert integrity(daemon) == [("ok",)]


# --- store faults --------------------------------------------------------------------------------

def test_store_full_answers_ae_then_recovers(tmp_path):
    root = tmp_path / "d"
    daemon = Daemon(root, {"full": mllp_channel()})
    with tmpfs(root / "var", "16m") as var:
        daemon.start(1)
        try:
            port = daemon.ports["full"]
            filler: list[Path] = []
            # bigger than the WAL so far, so its frames cannot fit in space the WAL already holds
            wal = var / "switchboard.db-wal"
            size = (wal.stat().st_size if wal.exists() else 0) + 128 * 1024
            assert size < 900 * 1024, "the WAL grew past what one message can outgrow"
            big = lambda cid: hl7(cid, extra="NTE|1||" + "X" * size)  # noqa: E731
            check_fault_then_recovery(daemon, port, "FULL", lambda: filler.append(fill(var)),
                                      lambda: filler.pop().unlink(), message=big)
            assert "SQLITE_FULL" in daemon.log
        finally:
            daemon.stop()


def test_read_only_store_answers_ae_then_recovers(tmp_path):
    daemon = Daemon(tmp_path / "d", {"ro": mllp_channel()}).start(1)
    files = [daemon.db, daemon.db.with_name("switchboard.db-wal")]
    try:
        probe = chattr("+i", *files)
        if probe.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {probe.stderr.strip()}")
        chattr("-i", *files)
        check_fault_then_recovery(daemon, daemon.ports["ro"], "RO", lambda: chattr("+i", *files),
                                  lambda: chattr("-i", *files))
    finally:
        chattr("-i", *files)
        daemon.stop()


def test_failing_fsync_answers_ae_then_recovers(tmp_path, fsync_shim):
    flag = tmp_path / "fail-fsync"
    daemon = Daemon(tmp_path / "d", {"fsync": mllp_channel()}, env={
        "LD_PRELOAD": str(fsync_shim), "SWB_FSYNC_FAIL_FLAG": str(flag), "SWB_FSYNC_FAIL_MATCH": "switchboard.db",
    }).start(1)
    try:
        check_fault_then_recovery(daemon, daemon.ports["fsync"], "FSYNC", flag.touch, flag.unlink)
        assert "SQLITE_IOERR_FSYNC" in daemon.log
    finally:
        daemon.stop()


# --- destination faults --------------------------------------------------------------------------

class ScriptedPeer(MllpPeer):
    """A downstream peer whose behaviour the test switches: ``hang`` (read, never answer), ``reset``
    (read, then RST), ``garbage`` (a frame that is not HL7), ``wrong_msa2`` (AA for another control
    id), ``ok`` (AA for this one).  Every message it reads is journalled, answered or not."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        super().__init__()

    def answer(self, conn: socket.socket, payload: bytes) -> bool:
        mode = self.mode
        if mode == "hang":
            return True
        if mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return False
        if mode == "garbage":
            reply = b"this is not an HL7 acknowledgement"
        elif mode == "wrong_msa2":
            reply = ack_for(payload.replace(control_id_of(payload).encode(), b"SOMEONE-ELSE"), "AA")
        else:
            reply = ack_for(payload, "AA")
        try:
            conn.sendall(VB + reply + FS_CR)
        except OSError:
            return False
        return True


PEER_MODES = ("hang", "reset", "garbage", "wrong_msa2")


@pytest.fixture(scope="module")
def troubled(tmp_path_factory):
    """One daemon, one channel per misbehaving peer (RELIABILITY: one channel's trouble never stalls
    another, so they share a daemon)."""
    peers = {mode: ScriptedPeer(mode) for mode in PEER_MODES}
    channels = {mode.replace("_", "-"): mllp_channel() + f"""
[[destination]]
name = "peer"
type = "mllp"
connect = "127.0.0.1:{peer.port}"
ack_timeout = "300ms"
{FAST_RETRY}
""" for mode, peer in peers.items()}
    daemon = Daemon(tmp_path_factory.mktemp("troubled"), channels).start(len(channels))
    yield daemon, peers
    daemon.stop()
    for peer in peers.values():
        peer.close()


def destination(daemon: Daemon, control_id: str) -> dict | None:
    """The message's one delivery and its attempts, read from the store (polled: the CLI would
    start a Python process per poll)."""
    with closing(sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT m.id, d.id, d.status FROM messages m JOIN deliveries d ON d.message_id = m.id"
                           " WHERE m.control_id = ?", (control_id,)).fetchone()
        if row is None:
            return None
        attempts = conn.execute("SELECT ok, possible_duplicate, error, response FROM attempts"
                                " WHERE delivery_id = ? ORDER BY id", (row[1],)).fetchall()
    return {"message_id": row[0], "status": row[2],
            "attempts": [{"ok": bool(a[0]), "possible_duplicate": bool(a[1]), "error": a[2], "response": a[3]}
                         for a in attempts]}


def attempted(daemon: Daemon, control_id: str, n: int) -> dict | None:
    found = destination(daemon, control_id)
    return found if found and len(found["attempts"]) >= n else None


@pytest.mark.parametrize("mode", PEER_MODES)
def test_misbehaving_peer_is_retried_never_sent_then_sent(troubled, mode):  # RELIABILITY 23, 24, 25
    daemon, peers = troubled
    peer = peers[mode]
    port = daemon.ports[mode.replace("_", "-")]
    first, second = f"PEER-{mode}-1", f"PEER-{mode}-2"
    assert answer(port, hl7(first)) == "AA"
    assert answer(port, hl7(second)) == "AA"
    held = wait_for(lambda: attempted(daemon, first, 3), timeout=15,
                    what=f"three failed attempts against a peer that does {mode}")
    assert held["status"] == "QUEUED"
    assert not any(attempt["ok"] for attempt in held["attempts"])
    assert set(peer.control_ids()) == {first}, "the line moved on past a message that was not SENT"
    if mode in ("hang", "reset"):   # the peer may have taken it: marked, as RELIABILITY 24 asks
        assert all(attempt["possible_duplicate"] for attempt in held["attempts"])
    if mode in ("garbage", "wrong_msa2"):   # what the peer said is kept for the operator
        assert all(attempt["response"] for attempt in held["attempts"])
    assert destination(daemon, second)["status"] == "QUEUED"

    peer.mode = "ok"
    for control_id in (first, second):
        wait_for(lambda: destination(daemon, control_id)["status"] == "SENT", timeout=15,
                 what=f"{control_id} SENT once the peer behaves")
    shown = daemon.cli_json("show", str(held["message_id"]))   # and the operator sees the story
    assert shown["status"] == "SENT"
    assert [a["ok"] for a in shown["destinations"][0]["attempts"]][-1] is True
    order = []
    for control_id in peer.control_ids():
        if control_id not in order:
            order.append(control_id)
    assert order == [first, second]


def test_file_destination_disk_full_is_retried_then_written(tmp_path):
    outbox = tmp_path / "outbox"
    channel = mllp_channel() + f"""
[[destination]]
name = "files"
type = "file"
directory = "{outbox}"
filename = "{{{{ id }}}}.hl7"
{FAST_RETRY}
"""
    with tmpfs(outbox, "64k"):
        filler = fill(outbox)
        daemon = Daemon(tmp_path / "d", {"disk": channel}).start(1)
        try:
            message = hl7("DISK-1", extra="NTE|1||" + "Y" * 8192)
            assert answer(daemon.ports["disk"], message) == "AA"
            held = wait_for(lambda: attempted(daemon, "DISK-1", 2), timeout=15,
                            what="two failed writes on a full disk")
            assert held["status"] == "QUEUED"
            assert not any(attempt["ok"] for attempt in held["attempts"])
            assert "No space left on device" in held["attempts"][0]["error"]
            assert not [p for p in outbox.iterdir() if p.name.endswith(".hl7")]
            filler.unlink()
            daemon.wait_status(held["message_id"], "SENT")
            written = outbox / f"{held['message_id']}.hl7"
            assert written.read_bytes().decode() == message + "\r"   # the final CR added (§3.5)
            assert sorted(p.name for p in outbox.iterdir()) == [written.name]   # no temp file left
        finally:
            daemon.stop()
