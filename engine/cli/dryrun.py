"""``switchboard test CHANNEL FILE``: the channel's real pipeline over each message, nothing stored or sent."""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.cli.common import CommandError, checked

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
