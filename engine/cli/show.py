"""``switchboard show ID``: every stage of one message, each destination's attempts and responses."""

from __future__ import annotations

import json
import sys

from engine.cli.common import message_id, open_store
from engine.core.verdicts import with_filtered_by


def show_command(args, path) -> int:
    from engine.cli.common import CommandError

    if getattr(args, "original", False) and args.json:
        raise CommandError("--original writes the bytes themselves; it does not go with --json")
    args.id = message_id(args.id)
    _config, store = open_store(path)
    try:
        message = with_filtered_by(store, store.get_message(args.id))
        original = store.get_original(args.id) if message and message.get("original_bytes") else None
    finally:
        store.close_readers()
    if message is None:
        raise CommandError(f"no message with id {args.id}")
    if getattr(args, "original", False):
        return _write_original(message, original)
    if args.json:
        print(json.dumps(message, indent=2))
        return 0
    print(f"message {message['id']}  channel {message['channel']}  {message['status']}  "
          f"received {message['received_at']}")
    print(f"type {message['type'] or '-'}  control id {message['control_id'] or '-'}")
    for key, value in (message.get("meta") or {}).items():
        print(f"meta {key} = {value}")
    if message.get("error"):
        print(f"error: {message['error']}")
    if message.get("filtered_by"):
        verdict = message["filtered_by"]
        print(f"filtered by {verdict['name']}: {verdict['reason'] or '(no reason given)'}")
    if message.get("pruned"):
        print("content pruned: older than the retention window ([store] retention or switchboard prune);"
              " its record, metadata, statuses and attempts are kept")
    if original is not None:
        print(f"original bytes kept: {len(original):,} bytes (not valid {_codec_name(original)}; the text shows"
              f" U+FFFD for them; switchboard show {message['id']} --original writes them out)")
    _block("raw", message.get("raw"))
    _block("transformed", message.get("transformed"))
    for destination in message.get("destinations", []):
        print(f"destination {destination['name']}: {destination['status']}")
        if destination.get("error"):
            print(f"  error: {destination['error']}")
        for attempt in destination.get("attempts", []):
            outcome = "ok" if attempt["ok"] else f"failed: {attempt.get('error') or ''}"
            print(f"  attempt {attempt['at']} {outcome}")
        _block("  sent", destination.get("sent"))
        _block("  response", (destination.get("attempts") or [{}])[-1].get("response"))
    return 0


def _write_original(message: dict, original: bytes | None) -> int:
    """``show ID --original``: the exact bytes to stdout, nothing else (for ``> file``)."""
    from engine.cli.common import CommandError

    if original is None:
        why = ("its content was pruned (older than the retention window)" if message.get("pruned") else
               "they were valid for its charset, so nothing was lost in decoding them (show prints the text)")
        raise CommandError(f"message {message['id']} has no original bytes kept: {why}")
    sys.stdout.flush()
    sys.stdout.buffer.write(original)
    sys.stdout.buffer.flush()
    return 0


def _codec_name(original: bytes) -> str:
    """The charset the bytes declare (BOM, else MSH-18, else UTF-8), as ``decode_frame`` read it."""
    from engine.hl7.charset import frame_codec

    codec = frame_codec(original)
    return "utf-8" if codec == "utf-8-sig" else codec


def _block(title: str, text: str | None) -> None:
    if text is None:
        return
    print(f"{title}:")
    indent = " " * (len(title) - len(title.lstrip()) + 2)
    print(indent + text.replace("\r", "\n").rstrip("\n").replace("\n", "\n" + indent))
