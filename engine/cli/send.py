"""``switchboard send HOST:PORT FILE...``: an MLLP client printing each ACK's MSA."""

from __future__ import annotations

from engine.cli.common import CommandError
from engine.cli.dryrun import file_messages
from engine.core.units import parse_address, parse_duration

MAX_TIMEOUT = 86400.0     # a longer wait for one ACK is a mistake, and past the poller's range

# -- send: an MLLP client --------------------------------------------------------------------

def send_command(args, path) -> int:
    try:
        host, port = parse_address(args.address)
        timeout = parse_duration(args.timeout)
        if not 0 < timeout <= MAX_TIMEOUT:
            raise ValueError(f"--timeout must be more than 0 and at most 1d, not {args.timeout[:40]!r}")
    except ValueError as error:
        raise CommandError(str(error)) from None
    messages = []
    for name in args.files:   # read as the file source reads them: bytes kept, every segment ending with CR
        messages.extend(file_messages(name, "hl7", "hl7-batch"))
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
