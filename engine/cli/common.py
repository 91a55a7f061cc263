"""What the verbs share: the one user-error type, opening the config and the store, time bounds, the admin API client."""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

from engine.core.units import MAX_INTEGER, parse_int, parse_message_id, parse_time_bound
from engine.runtime.check import check

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
        # a user's own token ([[admin.user]]): the daemon then answers with that user's rights
        token = os.environ.get("SWITCHBOARD_USER_TOKEN", "").strip() or config.admin.token
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

    def call(self, method: str, path: str, body: dict | None = None, *, timeout: float = TIMEOUT):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(f"http://{self.where}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            raise CommandError(self._explain(error)) from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, ConnectionRefusedError):
                raise CommandError(f"the daemon is not running (admin API at {self.where} refused the "
                                   "connection); start it with `switchboard run`") from None
            raise CommandError(f"cannot reach the admin API at {self.where}: {error.reason}") from None
        except (socket.timeout, TimeoutError):
            raise CommandError(f"the admin API at {self.where} did not answer within {timeout:g}s") from None

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
    from engine.config.loader import ConfigError
    from engine.config.loading import load, plugins_dir_of
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


def open_store(path):
    """(config, the store read-only); CommandError when there is no store or it cannot be read."""
    config = open_config(path)
    return config, open_readonly_store(config)


def open_readonly_store(config):
    from engine.store import StoreError, open_readonly

    location = config.store.url or config.store.path
    if not config.store.url and not config.store.path.exists():
        raise CommandError(f"no message store at {config.store.path} yet (start the daemon once)")
    try:
        return open_readonly(location)
    except StoreError as error:
        raise CommandError(str(error)) from None


def time_bound(value: str | None):
    """``--since`` / ``--until``: ``parse_time_bound`` with its sentence as the CLI's error."""
    if value is None:
        return None
    try:
        return parse_time_bound(value)
    except ValueError as error:
        raise CommandError(str(error)) from None


def whole_number(value, what: str, *, minimum: int = 0, maximum: int = MAX_INTEGER) -> int:
    """A numeric argument (``--limit``, ``--offset``) range-checked by ``parse_int``; its sentence
    is the CLI's error (exit 1), never an OverflowError from SQLite."""
    try:
        return parse_int(value, what, minimum=minimum, maximum=maximum)
    except ValueError as error:
        raise CommandError(str(error)) from None


def message_id(value, what: str = "message id") -> int:
    """A message id argument (``show ID``, ``replay ID...``, ``--before-id``), range-checked."""
    try:
        return parse_message_id(value, what)
    except ValueError as error:
        raise CommandError(str(error)) from None


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
