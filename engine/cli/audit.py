"""``switchboard audit``: who viewed, searched, replayed or changed what; ``--verify`` checks the chain."""

from __future__ import annotations

import json
import sys

from engine.cli.common import CommandError, open_store, whole_number


def add_audit_arguments(parser) -> None:
    parser.add_argument("--verify", action="store_true", help="check the hash chain; exit 1 if it is broken")
    parser.add_argument("--limit", default="100")
    parser.add_argument("--who", help="only this token name")
    parser.add_argument("--action", help="only this action (view, search, replay, channel.stop, ...)")
    parser.add_argument("--json", action="store_true")


def audit_command(args, path) -> int:
    limit = whole_number(args.limit, "--limit", minimum=1, maximum=100_000)
    _config, store = open_store(path)
    try:
        if args.verify:
            check = store.verify_audit()
            if args.json:
                print(json.dumps({"ok": check.ok, "rows": check.rows, "problems": check.problems}, indent=2))
            elif check.ok:
                print(f"audit log intact: {check.rows} row(s), hash chain verified")
            else:
                for problem in check.problems:
                    print(problem, file=sys.stderr)
            if not check.ok:
                raise CommandError(f"the audit log has been tampered with ({len(check.problems)} problem(s))")
            return 0
        rows = store.audit_entries(limit=limit, who=args.who, action=args.action)
    finally:
        store.close_readers()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':>6}  {'AT':24}  {'WHO':12} {'ACTION':16} {'TARGET':24} DETAIL")
    for row in rows:
        detail = json.dumps(row["detail"], separators=(",", ":")) if row["detail"] is not None else ""
        print(f"{row['id']:>6}  {row['at']:24}  {row['who'][:12]:12} {row['action'][:16]:16} "
              f"{row['target'][:24]:24} {detail[:120]}")
    return 0
