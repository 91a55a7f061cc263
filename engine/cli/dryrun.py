"""``switchboard test CHANNEL FILE...``: the channel's real pipeline over each message, nothing stored or sent."""

from __future__ import annotations

import json
from pathlib import Path

from engine.cli.common import CommandError, checked

# -- test: a dry run -------------------------------------------------------------------------

def file_messages(name: str, inbound: str, split: str) -> list[str]:
    """The messages of one file exactly as the file source takes them (the same code:
    ``engine.connectors.file.inbox``): decoded by BOM and MSH-18, a BOM dropped, LF/CRLF made CR,
    a missing final CR added, batches split when ``split`` says so, every message checked.  A file
    the source would refuse is a user error naming the file and the reason."""
    from engine.connectors.file.inbox import Refused, decode_file, split_messages

    try:
        data = Path(name).read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {name}: {error.strerror}") from None
    if inbound == "x12":
        return x12_file_messages(name, data, split)
    try:
        text, _original = decode_file(data, inbound)
    except Refused as error:
        raise CommandError(f"{name}: {error}") from None
    messages, problem = split_messages(text, split, inbound)
    if problem is not None:
        raise CommandError(f"{name}: {problem}")
    return [text for text, _msh in messages]


def x12_file_messages(name: str, data: bytes, split: str) -> list[str]:
    """An X12 file as the file source takes it (``inbox.prepare_x12``): the transaction sets (or
    835 claims) its 999 accepts; what the 999 or a TA1 rejects is said, as the source logs it."""
    from engine.connectors.file.inbox import prepare_x12

    prepared = prepare_x12(data, "", claims=split == "claims")
    if prepared.outcome == "refused":
        raise CommandError(f"{name}: {prepared.reason}")
    for reason in prepared.partial:
        print(f"{name}: not taken: {reason}")
    return [text for text, _msh in prepared.messages]


def source_split(channel) -> str:
    """How the channel's source splits what it reads (csv files are read by lines)."""
    split = channel.source.options.get("split") or "none"
    return "lines" if channel.inbound == "csv" and split == "none" else split


def test_command(args, path) -> int:
    config, registry = checked(path)
    channel = next((c for c in config.channels if c.name == args.channel), None)
    if channel is None:
        known = ", ".join(c.name for c in config.channels) or "none"
        raise CommandError(f"no channel named {args.channel!r} (channels: {known})")
    raw_messages = []
    for name in args.files:
        raw_messages.extend(file_messages(name, channel.inbound, source_split(channel)))
    from engine.runtime.dry_run import dry_run

    results = dry_run(config, registry, channel, raw_messages)
    if not results:
        raise CommandError(f"{', '.join(args.files)} hold(s) no message for a {channel.inbound} channel")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for index, result in enumerate(results, 1):
            print_result(index, result)
    return 1 if any(r["status"] == "ERROR" for r in results) else 0


def print_result(index: int, result: dict) -> None:
    print(f"message {index}: {result['status']}")
    outline = result.get("x12")
    if outline:
        loops = ", ".join(f"{loop} x{n}" for loop, n in outline["loops"].items()) or "none"
        print(f"  x12: {outline['set']} set {outline['st2']} of group {outline['gs6']}, interchange "
              f"{outline['isa13']} ({outline['version']}, {outline['segments']} segments); loops: {loops}")
    for item in result["filters"]:
        verdict = "passed" if item["passed"] else f"FILTERED ({item['reason']})"
        print(f"  filter {item['name']}: {verdict}")
        for rule in item.get("rules", ()):
            print(f"    {rule}")
    if result["error"]:
        print(f"  error: {result['error']}")
    for edit in result.get("edits", ()):
        print(f"  {edit['step']}: {len(edit['changes'])} segment(s) changed")
        for change in edit["changes"]:
            if change["before"] is not None:
                print(f"    - [{change['before_index']}] {change['before']}")
            if change["after"] is not None:
                print(f"    + [{change['after_index']}] {change['after']}")
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
