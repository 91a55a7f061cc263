"""``switchboard replay``: asks the running daemon (its admin API) to process stored messages again."""

from __future__ import annotations

import json
import sys

from engine.cli.common import AdminClient, message_id, open_config, time_bound


def add_replay_arguments(parser) -> None:
    parser.add_argument("ids", nargs="*", metavar="ID")
    parser.add_argument("--channel")
    parser.add_argument("--status", help="only messages with this status, e.g. error")
    parser.add_argument("--since", help="a duration back from now (1h, 30d) or an ISO time")
    parser.add_argument("--until", help="a duration back from now or an ISO time")
    parser.add_argument("--destination", help="replay to this destination only")
    parser.add_argument("--dry-run", action="store_true", help="list what would be replayed; change nothing")
    parser.add_argument("--json", action="store_true")


def replay_command(args, path) -> int:
    if bool(args.ids) == bool(args.channel):
        print("switchboard replay: give message ids or --channel, not both and not neither", file=sys.stderr)
        return 2
    if args.ids and (args.status or args.since or args.until):
        print("switchboard replay: --status, --since and --until go with --channel", file=sys.stderr)
        return 2
    args.ids = [message_id(value) for value in args.ids]
    time_bound(args.since), time_bound(args.until)      # refused here in one sentence, before the daemon is asked
    client = AdminClient.for_config(open_config(path, lenient=True))
    body = {"ids": args.ids} if args.ids else {"channel": args.channel}
    for key in ("status", "since", "until", "destination"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    body["dry_run"] = bool(args.dry_run)
    result = client.call("POST", "/api/replay", body)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    ids = result.get("ids", [])
    if result.get("dry_run"):
        print(f"would replay {len(ids)} message(s): {_ids(ids)}")
    else:
        statuses = ", ".join(f"{n} {status}" for status, n in sorted((result.get("statuses") or {}).items()))
        print(f"replayed {result.get('replayed', 0)} message(s){': ' + statuses if statuses else ''}")
    for item in result.get("skipped", []):
        print(f"  skipped {item['id']}: {item['reason']}")
    return 0


def _ids(ids: list[int]) -> str:
    return " ".join(map(str, ids)) if ids else "none"
