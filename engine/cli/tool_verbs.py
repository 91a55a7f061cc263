"""The verbs that act: ``run``, ``check``, ``test`` (dry run) and ``send`` (an MLLP client)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from engine.runtime.check import check
from engine.core.units import parse_address, parse_duration


class CommandError(Exception):
    """A user error, printed as one sentence with exit code 1."""


def checked_config(path):
    """Load and fully check the config, or print every problem and raise CommandError."""
    return checked(path)[0]


def checked(path):
    """(config, registry), fully checked; or print every problem and raise CommandError."""
    config, registry, problems = check(path)
    if problems:
        for problem in problems:
            print(str(problem), file=sys.stderr)
        raise CommandError(f"{len(problems)} problem(s) in the configuration")
    return config, registry


def check_command(args, path) -> int:
    config = checked_config(path)
    print(f"{path}: ok ({len(config.channels)} channel(s))")
    return 0


def run_daemon(args, path) -> int:
    config, registry = checked(path)
    from twisted.internet import reactor

    from engine.app import build
    from engine.runtime.logs import start_logging
    from engine.store.sqlite.store import StoreError

    start_logging(config.engine.log_level, config.engine.log_format)
    daemon, _engine = build(config, reactor=reactor, registry=registry)
    outcome = {"code": 0}

    def start():
        try:
            daemon.startService()
        except (StoreError, OSError) as error:
            print(f"switchboard run: cannot open the store {config.store.path}: {error}", file=sys.stderr)
            outcome["code"] = 1
            reactor.stop()
        except Exception:  # a bug at start-up: say so and exit 1 rather than serve half a daemon
            import traceback

            traceback.print_exc()
            print("switchboard run: failed to start (an internal error, reported above)", file=sys.stderr)
            outcome["code"] = 1
            reactor.stop()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: daemon.stopService() if daemon.running else None)
    reactor.run()
    return outcome["code"]


# -- test: a dry run -------------------------------------------------------------------------

SEGMENT_START = re.compile(r"(?=^MSH)", re.MULTILINE)


def split_hl7_messages(text: str) -> list[str]:
    """A file may hold many messages, LF, CRLF or CR separated: one starts at each MSH segment."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = [part.strip("\n") for part in SEGMENT_START.split(text)]
    return ["\r".join(line for line in part.split("\n") if line.strip()) for part in parts if part.strip()]


def split_file(text: str, inbound: str) -> list[str]:
    if inbound == "hl7":
        return split_hl7_messages(text)
    if inbound == "csv":
        lines = [line for line in text.splitlines() if line.strip()]
        return [f"{lines[0]}\n{line}" for line in lines[1:]] if len(lines) > 1 else []
    return [text]


def test_command(args, path) -> int:
    config, registry = checked(path)
    channel = next((c for c in config.channels if c.name == args.channel), None)
    if channel is None:
        known = ", ".join(c.name for c in config.channels) or "none"
        raise CommandError(f"no channel named {args.channel!r} (channels: {known})")
    try:
        text = Path(args.file).read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise CommandError(f"cannot read {args.file}: {error.strerror}") from None
    from engine.runtime.dry_run import dry_run

    results = dry_run(config, registry, channel, split_file(text, channel.inbound))
    if not results:
        raise CommandError(f"{args.file} holds no message for a {channel.inbound} channel")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for index, result in enumerate(results, 1):
            print_result(index, result)
    return 1 if any(r["status"] == "ERROR" for r in results) else 0


def print_result(index: int, result: dict) -> None:
    print(f"message {index}: {result['status']}")
    for item in result["filters"]:
        verdict = "passed" if item["passed"] else f"FILTERED ({item['reason']})"
        print(f"  filter {item['name']}: {verdict}")
        for rule in item.get("rules", ()):
            print(f"    {rule}")
    if result["error"]:
        print(f"  error: {result['error']}")
    if result["transformed"] is not None:
        print("  transformed:")
        print("    " + result["transformed"].replace("\r", "\n").replace("\n", "\n    "))
    for destination in result["destinations"]:
        if destination["filtered"]:
            print(f"  destination {destination['name']}: filtered")
        elif destination.get("error"):
            print(f"  destination {destination['name']}: ERROR {destination['error']}")
        else:
            print(f"  destination {destination['name']} would send:")
            print("    " + (destination["body"] or "").replace("\r", "\n").replace("\n", "\n    "))


# -- send: an MLLP client --------------------------------------------------------------------

def send_command(args, path) -> int:
    try:
        host, port = parse_address(args.address)
        timeout = parse_duration(args.timeout)
    except ValueError as error:
        raise CommandError(str(error)) from None
    messages = []
    for name in args.files:
        try:
            messages.extend(split_hl7_messages(Path(name).read_text(encoding="utf-8", errors="replace")))
        except OSError as error:
            raise CommandError(f"cannot read {name}: {error.strerror}") from None
    if not messages:
        raise CommandError("no HL7 message found in the file(s)")
    from twisted.internet import task

    from engine.connectors.mllp.send import send_all

    failures: list[int] = []
    try:
        task.react(lambda reactor: send_all(reactor, host, port, messages, timeout, failures), [])
    except SystemExit as done:
        if done.code not in (0, None):
            raise CommandError(f"could not send to {host}:{port}") from None
    if failures:
        raise CommandError(f"{len(failures)} of {len(messages)} message(s) not accepted")
    return 0
