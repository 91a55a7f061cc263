"""The verbs that talk to the running daemon or read its audit log: ``replay`` and ``audit``.

``replay`` asks the daemon through the admin API (the daemon processes the messages: it owns the
queues and the store's writer), with the token from ``[admin] token`` or, when none is
configured, the ``admin.token`` file the daemon keeps beside the store.  The address is
``[admin] listen``; with port 0 (tests, several daemons on one host) it is the ``admin.address``
file the daemon writes at start.  urllib is enough here: a short-lived client, not the daemon.

``audit`` reads the store directly (it works whether or not the daemon runs) and ``--verify``
walks the hash chain: exit 1 when a row was removed or changed.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

from engine.cli.tool_verbs import CommandError

TIMEOUT = 600.0          # a replay of many thousand messages answers once they are processed


class AdminClient:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token

    @classmethod
    def for_config(cls, config) -> "AdminClient":
        from engine.admin.auth import token_file
        from engine.admin.server import address_file

        host, port = config.admin.listen
        if port == 0:
            path = address_file(config)
            try:
                host, _, number = path.read_text(encoding="ascii").strip().rpartition(":")
                port = int(number)
            except (OSError, ValueError):
                raise CommandError(f"the daemon is not running (no admin address in {path}); start it with "
                                   "`switchboard run`") from None
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        token = config.admin.token
        if not token:
            path = token_file(config)
            try:
                token = Path(path).read_text(encoding="utf-8").strip()
            except OSError:
                token = ""
            if not token:
                raise CommandError(f"no admin token: set [admin] token (or $SWITCHBOARD_TOKEN), or start the "
                                   f"daemon once so that it writes {path}")
        return cls(host, port, token)

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(f"http://{self.where}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            raise CommandError(self._explain(error)) from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, ConnectionRefusedError):
                raise CommandError(f"the daemon is not running (admin API at {self.where} refused the "
                                   "connection); start it with `switchboard run`") from None
            raise CommandError(f"cannot reach the admin API at {self.where}: {error.reason}") from None
        except (socket.timeout, TimeoutError):
            raise CommandError(f"the admin API at {self.where} did not answer within {TIMEOUT:g}s") from None

    def _explain(self, error: urllib.error.HTTPError) -> str:
        try:
            data = json.loads(error.read() or b"{}")
        except ValueError:
            data = {}
        if error.code == 401:
            return "the admin API refused the token (check [admin] token or the admin.token file)"
        reason = data.get("error") or f"HTTP {error.code}"
        for problem in data.get("problems") or []:
            print(problem, file=sys.stderr)
        return reason


def open_config(path, *, lenient: bool = False):
    """The config as the daemon loads it (with plugin connector schemas); problems -> exit 1.

    ``lenient``: only a problem in config.toml or the plugins is fatal; a broken channel file is
    left out silently.  For commands that talk to the running daemon (replay): it keeps the
    previous version of such a channel, and judges the files itself in its answer."""
    from engine.config.loading import load, plugins_dir_of
    from engine.config.loader import ConfigError
    from engine.core.plugins import PluginError, load_plugins
    from engine.runtime.reload_plan import load_lenient

    try:
        if not lenient:
            return load(path)[0]
        config, problems, _bad = load_lenient(path, load_plugins(plugins_dir_of(path)))
    except ConfigError as error:
        problems, config = list(error.problems), None
    except PluginError as error:
        raise CommandError(f"plugins: {error}") from None
    if config is None:
        for problem in problems:
            print(str(problem), file=sys.stderr)
        raise CommandError(f"{len(problems)} problem(s) in the configuration")
    return config


def add_replay_arguments(parser) -> None:
    parser.add_argument("ids", nargs="*", type=int, metavar="ID")
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


def add_audit_arguments(parser) -> None:
    parser.add_argument("--verify", action="store_true", help="check the hash chain; exit 1 if it is broken")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--who", help="only this token name")
    parser.add_argument("--action", help="only this action (view, search, replay, channel.stop, ...)")
    parser.add_argument("--json", action="store_true")


def audit_command(args, path) -> int:
    from engine.cli.read_verbs import open_store

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
        rows = store.audit_entries(limit=args.limit, who=args.who, action=args.action)
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
