"""Issue 15 through the real daemon: what a hostile or messy feed found, each attack reproduced.

- names: a file name over NAME_MAX or with a control character is that message's ERROR and the
  line moves on (it used to be retried forever, every later message QUEUED behind it);
- templates: renders that build gigabytes under the 1 MiB output cap, or hold the reactor inside
  one filter call, end as that message's ERROR within a bound, while another channel keeps
  ACKing (its p99 measured with a real MLLP client, the daemon's RSS read from /proc);
- input: every number and time the CLI takes is range-checked (exit 1, one sentence);
- store: a store with flipped bytes stops the start with the recovery steps and is never ACKed
  into; read commands on it say so;
- HL7: two MSH in one frame is AR (or split when the channel splits batches); FTS-1 is checked.

One module-scoped daemon serves the cases that can share it; the store cases need their own.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support.daemon import Daemon, MllpClient, delivered_files, hl7, run_cli, wait_for

ACCOUNT = "PID.18.1"
FAST_RETRY = 'retry = { interval = "100ms", backoff = 1.5, max_interval = "500ms" }'


def mllp(tail: str = "", extra: str = "") -> str:
    return f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n{extra}\n[metadata]\naccount = "{ACCOUNT}"\n{tail}'


def file_destination(name: str, outbox: str, filename: str, extra: str = "") -> str:
    return (f'[[destination]]\nname = "{name}"\ntype = "file"\ndirectory = "{outbox}"\n'
            f"filename = \"{filename}\"\n{FAST_RETRY}\n{extra}\n")


# -- measuring: the daemon's RSS and a second channel's ACK latency ------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class AckProbe:
    """A real MLLP client on another channel, one message at a time, timing each ACK; and the
    daemon's RSS sampled beside it (every 10 ms)."""

    def __init__(self, port: int, pid: int) -> None:
        self.port, self.pid = port, pid
        self.latencies: list[float] = []
        self.codes: set[str] = set()
        self.peak_rss = 0.0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "AckProbe":
        """Starts the probe and returns once it has a reference: 100 ACKs before the attack, on
        the same machine in the same go (the machine is shared: its load is part of any figure)."""
        self.start_rss = rss_mb(self.pid)
        self.thread.start()
        self.sampler.start()
        wait_for(lambda: len(self.latencies) >= 100, 20, what="the probe's reference ACKs")
        self.reference = len(self.latencies)
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join(10)
        self.sampler.join(5)

    def _run(self) -> None:
        client = MllpClient(self.port)
        number = 0
        try:
            while self.running:
                number += 1
                began = time.perf_counter()
                ack = client.request(hl7(f"PROBE-{self.port}-{number}"))
                self.latencies.append(time.perf_counter() - began)
                self.codes.add(ack["code"])
        finally:
            client.close()

    def _sample(self) -> None:
        while self.running:
            self.peak_rss = max(self.peak_rss, rss_mb(self.pid))
            time.sleep(0.01)

    @staticmethod
    def _p99(latencies: list[float]) -> float:
        return statistics.quantiles(latencies, n=100, method="inclusive")[98] * 1000 if len(latencies) > 2 else 0.0

    @property
    def p99_ms(self) -> float:
        """p99 of the ACKs during the attack (after the reference)."""
        return self._p99(self.latencies[self.reference:])

    @property
    def reference_p99_ms(self) -> float:
        return self._p99(self.latencies[:self.reference])

    def latency_held(self) -> bool:
        """The goal is a p99 under 50 ms, and the figures in the docs are from quiet runs.  The test
        asserts 500 ms: each attack it guards against held the engine for seconds (wordwrap 14-16 s,
        a 1.5 GB join), while this 2-core machine is shared with other jobs that can stretch one
        20 ms render several times over (seen: 240 ms at a load average of 6)."""
        return self.p99_ms < 500.0

    def report(self, what: str) -> str:
        during = self.latencies[self.reference:]
        return (f"{what}: probe {len(during)} ACKs during it, p99 {self.p99_ms:.1f} ms, max "
                f"{max(during, default=0) * 1000:.1f} ms (reference before it: p99 {self.reference_p99_ms:.1f} ms); "
                f"RSS {self.start_rss:.0f} -> peak {self.peak_rss:.0f} MB")


# == 2. templates: memory budget and bounded filter calls, another channel ACKing meanwhile =========
TEMPLATE_ATTACKS = {
    # MRN -> (the template's body for it, words of the reason)
    "JOIN": ("{{ range(1500)|join('x'*1000000) }}", "the join filter would take the render past its memory budget"),
    "APPEND": ("{% set l = [] %}{% for i in range(2000) %}{% set _ = l.append('x' * 1000000) %}{% endfor %}"
               "{{ l|length }}", "memory budget of 16 MiB"),
    "DOUBLE": ("{% set ns = namespace(s=msg['PID.5.1']) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
               "{% endfor %}{{ ns.s|length }}", "'~' would take the render past its memory budget"),
    "WORDWRAP": ("{{ ('a'*1000000)|wordwrap(1) }}", "the wordwrap filter would make more than 20,000 lines"),
    "PRINTREFS": ("{% set big = 'x' * 1000000 %}{{ [big] * 1000 }}", "output exceeds 1048576 bytes"),
}


def attack_template() -> str:
    branches = "".join(f"{{% {'if' if n == 0 else 'elif'} msg['PID.3.1'] == '{mrn}' %}}{body}"
                       for n, (mrn, (body, _)) in enumerate(TEMPLATE_ATTACKS.items()))
    return branches + "{% else %}ok {{ msg['MSH.10'] }}{% endif %}\n"


# -- the shared daemon --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    channels = {
        "names": mllp(file_destination("files", "outbox/names", "{{ meta.account }}-{{ id }}.hl7")
                      + file_destination("daily", "outbox/daily", "batch-{{ meta.account }}-{{ period }}.hl7",
                                         'batch = "daily"')),
        "probe": mllp(),
        "single": mllp(),
        "batches": mllp(extra='split = "hl7-batch"'),
        "attack": mllp('[[transform]]\ntemplate = "attack.j2"\noutbound = "text"\n'
                       + file_destination("files", "outbox/attack", "{{ id }}.txt")),
    }
    daemon = Daemon(root / "d", channels, templates={"attack.j2": attack_template()})
    daemon.start(expect_channels=len(channels))
    yield daemon
    daemon.stop()


def sqlite_rows(daemon: Daemon, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def message_row(daemon: Daemon, channel: str, control_id: str):
    rows = sqlite_rows(daemon, "SELECT id, status, error FROM messages WHERE channel = ? AND control_id = ?",
                       channel, control_id)
    return rows[-1] if rows else None


def wait_message(daemon: Daemon, channel: str, control_id: str, status: str, timeout: float = 15.0):
    def done():
        row = message_row(daemon, channel, control_id)
        return row if row and row[1] == status else None

    return wait_for(done, timeout, what=f"{channel}/{control_id} to be {status}")


def deliveries(daemon: Daemon, message_id: int) -> dict[str, tuple]:
    rows = sqlite_rows(daemon, "SELECT d.destination, d.status, (SELECT a.error FROM attempts a WHERE "
                       "a.delivery_id = d.id ORDER BY a.id DESC LIMIT 1) FROM deliveries d WHERE d.message_id = ?",
                       message_id)
    return {name: (status, error) for name, status, error in rows}


# == 1. names ====================================================================================
@pytest.mark.parametrize("case, account", [
    ("long", "9" * 300),                 # a 300-byte PID-18: ENAMETOOLONG, once retried forever
    ("utf8", "é" * 125),                 # 250 bytes in UTF-8, 125 characters
    ("tab", "ACC\tTAB"),
    ("newline", "ACC\\X0A\\LF"),          # an HL7 hex escape: a newline in the decoded field
    ("cr", "ACC\\X0D\\CR"),
], ids=["long", "utf8", "tab", "newline", "cr"])
def test_issue15_names_over_the_limit_or_with_control_characters_are_error_and_the_line_moves_on(world, case,
                                                                                                    account):
    daemon = world
    client = MllpClient(daemon.ports["names"])
    try:
        ids = [f"N-{case}-1", f"N-{case}-BAD", f"N-{case}-3"]
        for control_id, acc in zip(ids, ["A1", account, "A3"]):
            segments = hl7(control_id).split("\r")
            pid = segments[2].split("|")
            pid[18] = acc
            segments[2] = "|".join(pid)
            assert client.request("\r".join(segments))["code"] == "AA"
    finally:
        client.close()
    bad_id, bad_status, _error = wait_message(daemon, "names", ids[1], "ERROR")
    status = wait_for(lambda: (lambda d: d if d.get("files", ("",))[0] == d.get("daily", ("",))[0] == "ERROR"
                               else None)(deliveries(daemon, bad_id)), 15, what="both destinations ERROR")
    reason = status["files"][1]
    assert ("control character" in reason) if case in ("tab", "newline", "cr") else ("bytes, over" in reason)
    assert account not in reason and "999999" not in reason and "éé" not in reason    # PHI-free
    # the next message was delivered by both destinations: nothing held behind the bad one
    after = message_row(daemon, "names", ids[2])[0]
    wait_for(lambda: deliveries(daemon, after).get("files", ("",))[0] == "SENT", 15,
             what="the message after the bad one to be written")
    wait_for(lambda: deliveries(daemon, after).get("daily", ("",))[0] == "SENT", 15,
             what="the daily batch to take the message after the bad one")
    assert (daemon.root / "outbox" / "names" / f"A3-{after}.hl7").exists()
    assert all("\t" not in p.name and "\n" not in p.name for p in delivered_files(daemon.root / "outbox" / "names"))


# == 6. CLI input ================================================================================
CLI_CASES = [
    (["messages", "--since", "99999999999d"], "reaches back further than"),
    (["messages", "--since", "9999-12-31T23:59:59-14:00"], "out of range"),
    (["messages", "--offset", "99999999999999999999999"], "--offset must be between 0 and 100000"),
    (["messages", "--before-id", "999999999999999999999"], "--before-id must be between 1 and"),
    (["show", "²"], "message id must be a whole number"),
    (["show", "9" * 5000], "message id must be between 1 and"),
    (["replay", "99999999999999999999999"], "message id must be between 1 and"),
    (["audit", "--limit", "99999999999999999999"], "--limit must be between 1 and 100000"),
    (["prune", "--older-than", "99999999999d", "--dry-run"], "reaches back further than"),
    (["send", "127.0.0.1:1", "x.hl7", "--timeout", "99999999999d"], "--timeout must be more than 0"),
]


@pytest.mark.slow
def test_issue15_cli_numbers_and_times_out_of_range_exit_1_with_a_sentence(world):
    """Each parser and verb once (every other spelling is in tests/unit/core/test_units.py); every
    failure reported at once."""
    failures = []
    for args, words in CLI_CASES:
        result = world.cli(*args)
        lines = result.stderr.strip().splitlines()
        if not (result.returncode == 1 and "Traceback" not in result.stderr and len(lines) == 1
                and words in lines[0] and len(lines[0]) < 300):
            failures.append(f"{args[:3]}: exit {result.returncode}, stderr {result.stderr[-500:]!r}")
    assert failures == []


@pytest.mark.parametrize("line, words", [
    ('[store]\nretention = "99999999999d"', "store.retention: must be at most 36600d"),
    ('[engine]\ntemplate_memory = "5GB"', "engine.template_memory: must be from 1MB to 1GB"),
])
def test_issue15_config_numbers_out_of_range_are_config_errors(tmp_path, line, words):
    (tmp_path / "channels").mkdir()
    (tmp_path / "config.toml").write_text(line + '\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "t"\n')
    for verb in (["check"], ["run"]):
        result = run_cli("-c", str(tmp_path / "config.toml"), *verb, cwd=tmp_path, timeout=30)
        assert result.returncode == 1 and words in result.stderr and "Traceback" not in result.stderr, result.stderr


# == 8. two MSH in one frame, FTS-1 ================================================================
def test_issue15_two_msh_in_one_frame_is_ar_or_split(world):
    daemon = world
    first, second = hl7("TWO-A", mrn="MRN-A"), hl7("TWO-B", mrn="MRN-B")
    client = MllpClient(daemon.ports["single"])
    try:
        ack = client.request(first + "\r" + second)
        assert ack["code"] == "AR" and ack["control_id"] == "TWO-A", ack
        assert "second MSH" in ack["text"] and "MRN-B" not in ack["text"]
        assert message_row(daemon, "single", "TWO-A") is None and message_row(daemon, "single", "TWO-B") is None
        assert client.request(hl7("TWO-C"))["code"] == "AA"         # the connection serves on
    finally:
        client.close()
    client = MllpClient(daemon.ports["batches"])
    try:
        assert client.request(first + "\r" + second)["code"] == "AA"
    finally:
        client.close()
    assert message_row(daemon, "batches", "TWO-A") and message_row(daemon, "batches", "TWO-B")
    raws = sqlite_rows(daemon, "SELECT raw FROM messages WHERE channel = 'batches' AND control_id LIKE 'TWO-%'"
                       " ORDER BY id")
    assert [raw.count("MSH|") for (raw,) in raws] == [1, 1]


def test_issue15_fts1_is_checked_like_bts1(world):
    daemon = world
    one, two = hl7("FTS-1"), hl7("FTS-2")
    client = MllpClient(daemon.ports["batches"])
    try:
        for fts, code in (("2", "AR"), ("X", "AR"), ("1", "AA")):
            frame = f"FHS|^~\\&|EHR\rBHS|^~\\&|EHR\r{one}\r{two}\rBTS|2\rFTS|{fts}"
            ack = client.request(frame.replace("FTS-", f"FTS{fts}-"))
            assert ack["code"] == code, (fts, ack)
            if code == "AR":
                assert "FTS-1" in ack["text"]
    finally:
        client.close()
    assert message_row(daemon, "batches", "FTS2-1") is None and message_row(daemon, "batches", "FTS1-2")


# == 7. store integrity ===========================================================================
def flip(path: Path, start: int, length: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, start + length):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory):
    """A store of 300 messages (about 3 MB) from a real daemon, stopped cleanly; copied per case."""
    root = tmp_path_factory.mktemp("store")
    daemon = Daemon(root / "d", {"in": mllp()}).start(1)
    client = MllpClient(daemon.ports["in"])
    try:
        for number in range(300):
            assert client.request(hl7(f"S{number}", extra="NTE|1||" + "x" * 2000))["code"] == "AA"
    finally:
        client.close()
    assert daemon.stop() == 0
    return daemon


def damaged_copy(filled: Daemon, where: Path, how: str) -> Daemon:
    daemon = Daemon(where, {"in": mllp()})
    daemon.db.parent.mkdir(parents=True)
    shutil.copy(filled.db, daemon.db)
    size, page = daemon.db.stat().st_size, 4096
    if how == "mid-file":                            # the header and cell pointers of the middle page
        flip(daemon.db, (size // page // 2) * page, 64)
    elif how == "page 3":                           # the messages table's root: "FOREIGN KEY constraint failed"
        flip(daemon.db, 2 * page + 40, 32)
    else:                                           # a whole leaf page of the messages table
        conn = sqlite3.connect(daemon.db)
        leaf = conn.execute("SELECT pageno FROM dbstat WHERE name = 'messages' AND pagetype = 'leaf'"
                            " ORDER BY pageno LIMIT 1 OFFSET 10").fetchone()[0]
        conn.close()
        flip(daemon.db, (leaf - 1) * page, page)
    conn = sqlite3.connect(daemon.db)       # the precondition: SQLite itself finds the damage
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] != "ok"
    except sqlite3.DatabaseError:
        pass
    finally:
        conn.close()
    return daemon


@pytest.mark.parametrize("how", ["mid-file", "page 3", "leaf page"])
def test_issue15_a_damaged_store_stops_the_start_and_is_never_acked_into(filled_store, tmp_path, how):
    daemon = damaged_copy(filled_store, tmp_path / "d", how)
    with pytest.raises(AssertionError, match="daemon exited at start"):
        daemon.start(timeout=20)
    assert daemon.process.returncode == 1
    assert "the store is damaged" in daemon.log and ".dump" in daemon.log and "Traceback" not in daemon.log
    assert not daemon.ports                         # no listener opened: nothing could be ACKed
    check = daemon.cli("check", "--store")
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert "is damaged" in check.stderr and f"`sqlite3 {daemon.db} .dump" in check.stderr


@pytest.mark.slow
def test_issue15_read_commands_on_a_damaged_store_say_so_and_recovery_works(filled_store, tmp_path):
    daemon = damaged_copy(filled_store, tmp_path / "d", "leaf page")
    listing = daemon.cli("messages", "--limit", "1000")
    assert listing.returncode == 1 and "Traceback" not in listing.stderr
    assert "the message store is damaged" in listing.stderr and "check --store" in listing.stderr
    as_json = daemon.cli("messages", "--limit", "1000", "--json")
    assert as_json.returncode == 1 and as_json.stdout == "" and "the message store is damaged" in as_json.stderr
    if shutil.which("sqlite3") is None:
        pytest.skip("no sqlite3 command here to run the recovery steps with")
    # the steps the message gives, as a person would type them (the daemon is stopped already)
    steps = daemon.cli("check", "--store").stderr
    commands = steps.split("`")[1::2]
    assert [c.split()[0] for c in commands] == ["sqlite3", "sqlite3", "mv", "mv", "switchboard", "switchboard"]
    for command in commands[:4]:
        assert subprocess.run(command, shell=True, cwd=daemon.root, capture_output=True).returncode == 0, command
    check = daemon.cli("check", "--store")
    assert check.returncode == 0, check.stderr
    kept = daemon.cli_json("messages", "--limit", "1000")
    assert 250 <= len(kept) < 300                   # the rows of the damaged page lost, the rest kept
    daemon.start(expect_channels=1)
    try:
        client = MllpClient(daemon.ports["in"])
        assert client.request(hl7("AFTER-RECOVERY"))["code"] == "AA"
        client.close()
    finally:
        daemon.stop()


@pytest.mark.slow
def test_issue15_template_memory_and_time_bounds_hold_while_another_channel_acks(world):
    daemon = world
    pid = daemon.process.pid
    client = MllpClient(daemon.ports["attack"])
    client.request(hl7("WARM-UP", mrn="PLAIN"))       # compile the template before measuring
    wait_message(daemon, "attack", "WARM-UP", "SENT")
    figures = []
    with AckProbe(daemon.ports["probe"], pid) as probe:
        for mrn, (_body, reason) in TEMPLATE_ATTACKS.items():
            sent = time.monotonic()
            assert client.request(hl7(f"T-{mrn}", mrn=mrn))["code"] == "AA"
            _id, _status, error = wait_message(daemon, "attack", f"T-{mrn}", "ERROR", timeout=10)
            figures.append(f"{mrn} ERROR after {time.monotonic() - sent:.2f}s")
            assert time.monotonic() - sent < 2.0, figures
            assert reason in error and error.startswith("attack.j2 line 1: "), error
        client.request(hl7("T-AFTER", mrn="PLAIN"))
        wait_message(daemon, "attack", "T-AFTER", "SENT")   # the channel itself serves on
        after = len(probe.latencies)                         # and the probe's ACKs after the last one
        wait_for(lambda: len(probe.latencies) >= after + 50, 10, what="the probe's ACKs after the attacks")
    client.close()
    print(probe.report("template attacks") + "; " + ", ".join(figures))
    assert probe.codes == {"AA"}
    assert probe.peak_rss - probe.start_rss < 50, probe.report("template attacks")
    assert probe.latency_held(), probe.report("template attacks")
    assert "Traceback" not in daemon.log


@pytest.mark.slow
def test_issue15_a_flood_of_two_msh_frames_and_unwritable_names_while_another_channel_acks(world):
    """The measured figures of 15.1 and 15.8: 600 two-MSH frames (each AR) and 300 messages whose
    file name is 300 bytes (each ERROR on two destinations), sent as fast as the daemon answers."""
    daemon = world
    long_name = hl7("FLOOD-NAME").split("\r")
    pid = long_name[2].split("|")
    pid[18] = "7" * 300
    long_name[2] = "|".join(pid)

    def flood(port: int, frames: list[str], codes: list) -> None:
        client = MllpClient(port)
        try:
            for frame in frames:
                codes.append(client.request(frame)["code"])
        finally:
            client.close()

    two_msh = [hl7(f"FL-{n}-A") + "\r" + hl7(f"FL-{n}-B") for n in range(600)]
    names = ["\r".join(long_name).replace("FLOOD-NAME", f"FLOOD-NAME-{n}") for n in range(300)]
    ar_codes: list = []
    name_codes: list = []
    with AckProbe(daemon.ports["probe"], daemon.process.pid) as probe:
        floods = [threading.Thread(target=flood, args=(daemon.ports["single"], two_msh, ar_codes)),
                  threading.Thread(target=flood, args=(daemon.ports["names"], names, name_codes))]
        for thread in floods:
            thread.start()
        for thread in floods:
            thread.join(120)
        wait_message(daemon, "names", "FLOOD-NAME-299", "ERROR", timeout=30)
    print(probe.report("two-MSH and long-name flood"))
    assert set(ar_codes) == {"AR"} and len(ar_codes) == 600
    assert set(name_codes) == {"AA"} and len(name_codes) == 300
    assert sqlite_rows(daemon, "SELECT count(*) FROM messages WHERE control_id LIKE 'FL-%'") == [(0,)]
    assert probe.codes == {"AA"}
    assert probe.peak_rss - probe.start_rss < 50, probe.report("flood")
    assert probe.latency_held(), probe.report("flood")


@pytest.mark.slow
def test_issue15_sftp_names_over_the_limit_or_with_control_characters_are_error(tmp_path):
    """15.1 on the SFTP destination, against a real OpenSSH server (skipped without sshd)."""
    from e2e.test_sftp_e2e import sshd_or_skip, to_sftp

    server = sshd_or_skip(tmp_path).start()
    try:
        remote = tmp_path / "remote"
        remote.mkdir()
        daemon = Daemon(tmp_path / "engine", {"to-sftp": to_sftp(server, remote, server.known_hosts("known_hosts"))})
        daemon.start(expect_channels=1)
        try:
            client = MllpClient(daemon.ports["to-sftp"])
            for control_id, mrn in (("SF-LONG", "8" * 300), ("SF-TAB", "M\tTAB"), ("SF-OK", "MOK")):
                assert client.request(hl7(control_id, mrn=mrn))["code"] == "AA"
            client.close()
            for control_id, words in (("SF-LONG", "bytes, over this destination's limit of 250"),
                                      ("SF-TAB", "control character (U+0009)")):
                message_id, _status, _error = wait_message(daemon, "to-sftp", control_id, "ERROR")
                reason = deliveries(daemon, message_id)["remote"][1]
                assert words in reason and "888" not in reason, reason
            ok_id, _status, _error = wait_message(daemon, "to-sftp", "SF-OK", "SENT")
            assert sorted(p.name for p in remote.iterdir()) == [f"MOK-{ok_id}.hl7"]
        finally:
            daemon.stop()
    finally:
        server.stop()
