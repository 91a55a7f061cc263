"""The ``switchboard`` command: argument parsing and dispatch to the verb modules (one per verb).

Exit codes (DESIGN §3.6): 0 success, 1 user error (bad config, unknown id, a failed send), 2 usage.
User errors are one clear sentence on stderr, never a traceback.  ``-c/--config`` is accepted before
or after the verb; otherwise $SWITCHBOARD_CONFIG, else ./config.toml.
"""

from __future__ import annotations

import argparse
import os
import sys

from engine.cli import audit, check, dryrun, import_mirth, prune, report, run, user
from engine.cli import messages as messages_verb
from engine.cli import replay as replay_verb
from engine.cli import send as send_verb
from engine.cli import show as show_verb
from engine.cli import nodes as nodes_verb
from engine.cli import store_copy
from engine.cli import status as status_verb
from engine.cli.common import CommandError
from engine.store.sqlite.store import StoreReadError, describe_read_error


def _add_config(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "-c", "--config", default=default, help="config file (default: $SWITCHBOARD_CONFIG or ./config.toml)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="Switchboard HL7 interface engine")
    parser.add_argument("--version", action="version", version=f"switchboard {package_version()}",
                        help="print the version and exit")
    _add_config(parser, None)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        _add_config(sub, argparse.SUPPRESS)
        return sub

    run_verb = verb("run", "run the daemon in the foreground (SIGTERM/SIGINT: graceful stop)")
    run_verb.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)   # [engine] workers
    check_verb = verb("check", "validate config, channels, templates and plugins; exit 1 listing every error")
    check_verb.add_argument("--store", action="store_true",
                            help="check the message store's file instead (SQLite integrity_check); "
                                 "exit 1 with the recovery steps when it is damaged")
    status = verb("status", "per channel: state, received, filtered, queued, sent, errored")
    status.add_argument("--json", action="store_true")
    messages = verb("messages", "search stored messages")
    messages_verb.add_search_arguments(messages)
    messages.add_argument("--json", action="store_true")
    show = verb("show", "every stage of one message, each destination's attempts and responses")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.add_argument(
        "--original",
        action="store_true",
        help="write the bytes the message arrived as to stdout (kept only when they were not valid "
        "for its charset)",
    )
    test = verb("test", "dry run of a channel over the messages in each FILE, read as its source reads "
                        "them: nothing stored or sent")
    test.add_argument("channel")
    test.add_argument("files", nargs="+", metavar="FILE")
    test.add_argument("--json", action="store_true")
    send = verb("send", "MLLP client: send each message in FILE(s) and print each ACK's MSA")
    send.add_argument("address", metavar="HOST:PORT")
    send.add_argument("files", nargs="+", metavar="FILE")
    send.add_argument("--timeout", default="30s", help="ACK timeout (default 30s)")
    report_verb = verb(
        "report", "KPIs: placements, filtered by rule, error rate, delivery time, payments, recalls"
    )
    report.add_arguments(report_verb)
    replay = verb(
        "replay",
        "process stored messages again through the channel's config as it is on disk "
        "(asks the running daemon)",
    )
    replay_verb.add_replay_arguments(replay)
    audit_verb = verb(
        "audit", "who viewed, searched, replayed or changed what (admin API); --verify checks the chain"
    )
    audit.add_audit_arguments(audit_verb)
    prune_verb = verb(
        "prune", "clear the content of messages older than the retention window (ERROR, QUEUED kept)"
    )
    prune.add_prune_arguments(prune_verb)
    import_mirth.add_arguments(verb("import", "convert Mirth Connect channel exports into channel files"))
    user.add_arguments(verb("user", "users of the admin API and dashboard: `user add NAME --role R [--phi]`"))
    nodes_verb.add_arguments(verb("nodes", "the nodes sharing the PostgreSQL store: last heartbeat, what each holds"))
    store_copy.add_arguments(verb("store", "store maintenance: copy it to PostgreSQL or SQLite (ids kept)"))
    return parser


def package_version() -> str:
    """The installed package's version (its metadata, from pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("switchboard")
    except PackageNotFoundError:
        return "unknown (not installed)"


def quiet_stdout() -> None:
    """The reader of our stdout went away (``switchboard status | head``): point stdout at
    /dev/null so the interpreter's last flush does not print a traceback; what was left unread is
    not wanted."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def config_path(args) -> str:
    return args.config or os.environ.get("SWITCHBOARD_CONFIG") or "config.toml"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "run": run.run_daemon,
        "check": check.check_command,
        "status": status_verb.status_command,
        "messages": messages_verb.messages_command,
        "show": show_verb.show_command,
        "test": dryrun.test_command,
        "send": send_verb.send_command,
        "report": report.report_command,
        "replay": replay_verb.replay_command,
        "audit": audit.audit_command,
        "prune": prune.prune_command,
        "import": import_mirth.command,
        "user": user.user_command,
        "store": store_copy.command,
        "nodes": nodes_verb.command,
    }
    try:
        code = handlers[args.verb](args, config_path(args)) or 0
        sys.stdout.flush()   # a closed pipe (`status | head`) shows here, not at exit as a traceback
        return code
    except BrokenPipeError:
        quiet_stdout()
        return 0
    except CommandError as error:
        print(f"switchboard {args.verb}: {error}", file=sys.stderr)
        return 1
    except StoreReadError as error:
        print(f"switchboard {args.verb}: {describe_read_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
