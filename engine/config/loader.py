"""Load config.toml and channels/*.toml into frozen dataclasses, reporting every problem at once.

Why all at once (as buildbot's checkconfig does): an analyst editing channels wants the whole list from
one `switchboard check`, not one error per run. Each Problem names the file, the key and the reason.
A value that came from ${VAR} is never quoted in a reason (it may be a secret): only the variable's name.

Rules worth knowing (the contract is DESIGN.md §3.1-3.2):
- ``${VAR}`` and ``${VAR:-default}`` work in every string value (not in keys). As in the shell, the
  default is used when VAR is unset or empty; ``$${`` is a literal ``${``.
- Every relative path, in config.toml or in a channel file, is relative to config.toml's directory, so
  a path means the same thing whichever file it is written in.
- A channel's name defaults to its file's stem; channel files are read in sorted order (dot-files are
  skipped); ``enabled = false`` channels are loaded, validated and marked.
- ``dedupe`` is written in [source]; it is kept in SourceConfig.options["dedupe"] and on ChannelConfig.dedupe.
- Filters and transform steps may be written as one table ([transform]) or an array ([[transform]]).
- Listen conflicts are checked between enabled channels and admin.listen; port 0 is exempt, and a wildcard
  host (0.0.0.0, ::) conflicts with every host on the same port.  With ``[engine] workers`` > 1 a
  channel's port 0 is refused (the workers share one port) and ``[store] url`` is required.
- A ``when`` expression's syntax is not checked here: templates.py compiles it.
- Connector options are checked against ``ConnectorOptions`` schemas (engine/config/schema.py).
- A destination may say ``enabled = false`` (or ``"${AGENCY_HTTP:-false}"``): it is checked like the others
  and then left out of ChannelConfig.destinations, so a shipped channel can carry a peer's destination
  switched off until that peer is configured, next to a file outbox switched on.
"""
from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from engine.config.schema import (
    ADMIN,
    ADMIN_USER,
    ALERTS,
    CLUSTER,
    CHANNEL,
    COMMON_KEYS,
    DEDUPE,
    ENGINE,
    FORMATS,
    RETRY,
    STORE,
    ConnectorOptions,
    Context,
    OptionSpec,
    Substituted,
    check_table,
    freeze,
    inbound_problems,
    item_key,
    join,
    normalize,
    report_unknown,
    show,
    substitute,
    type_name,
)

__all__ = [
    "AdminConfig", "AlertsConfig", "ChannelConfig", "Config", "ConfigError", "ConnectorOptions", "DestinationConfig",
    "EngineConfig", "FilterConfig", "OptionSpec", "Problem", "RetryConfig", "SourceConfig", "StoreConfig",
    "TransformConfig", "load_config",
]

EMPTY: Mapping[str, Any] = MappingProxyType({})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_META_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "*"})
_TEXT = OptionSpec("str", check=lambda text: None if text.strip() else "must not be empty")
_FORMAT = OptionSpec("choice", choices=FORMATS)
_ENABLED = OptionSpec("bool", True)
Report = Callable[[str, str], None]


@dataclass(frozen=True)
class Problem:
    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}" if self.key else f"{self.file}: {self.reason}"


class ConfigError(Exception):
    """Every problem found in one load; ``str()`` is one problem per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 0          # 0: retry until it succeeds
    interval: float = 2.0
    backoff: float = 2.0
    max_interval: float = 300.0


@dataclass(frozen=True)
class FilterConfig:
    when: str | None
    use: str | None
    options: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    label: str | None = None    # ``name = "..."``: shown in show, the dashboard and reports (default filter[N])

    @property
    def name(self) -> str:
        return self.use if self.use is not None else (self.when or "")


@dataclass(frozen=True)
class TransformConfig:
    use: str | None
    template: str | None        # a name inside transforms_dir, as the Jinja loader wants it
    inline: str | None
    outbound: str | None
    options: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    edit: tuple | None = None    # DESIGN §3.8: the operations of an edit step, as written

    @property
    def name(self) -> str:
        return self.use or self.template or ("edit" if self.edit is not None else "inline")


@dataclass(frozen=True)
class SourceConfig:
    type: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    type: str
    options: Mapping[str, Any]
    filters: tuple[FilterConfig, ...]
    transforms: tuple[TransformConfig, ...]
    retry: RetryConfig
    enabled: bool = True   # false: checked, then left out of the channel (no connector, no delivery)


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    file: Path
    description: str
    enabled: bool
    inbound: str
    source: SourceConfig
    filters: tuple[FilterConfig, ...]
    transforms: tuple[TransformConfig, ...]
    metadata: Mapping[str, str]
    destinations: tuple[DestinationConfig, ...]
    dedupe: float


@dataclass(frozen=True)
class EngineConfig:
    channels_dir: Path
    transforms_dir: Path
    plugins_dir: Path
    log_level: str
    log_format: str
    lookups_dir: Path | None = None
    template_memory: int = 16 * 2**20      # [engine] template_memory: one render's memory budget
    workers: int = 1                       # [engine] workers: processes sharing the ports (PostgreSQL only)


@dataclass(frozen=True)
class StoreConfig:
    path: Path
    retention: float
    url: str = ""  # PostgreSQL instead of the SQLite file at `path` (DESIGN §4)
    node: str = ""      # [cluster] node: this node's name ("" = the host name)
    lease: float = 10.0  # [cluster] lease, seconds


@dataclass(frozen=True)
class AdminConfig:
    listen: tuple[str, int] = ("127.0.0.1", 8480)
    token: str = ""
    tokens: Mapping[str, str] = field(default_factory=lambda: EMPTY)   # name -> token
    users: tuple["UserConfig", ...] = ()                                 # [[admin.user]]


@dataclass(frozen=True)
class UserConfig:
    """One ``[[admin.user]]`` (DESIGN §3.12): secrets only as hashes."""

    name: str
    role: str
    phi: bool = False
    token_sha256: str = ""
    password: str = ""


@dataclass(frozen=True)
class AlertsConfig:
    """[alerts]: when to call the ``alert`` plugins (seconds; 0 turns a check off)."""

    queued_longer_than: float = 900.0
    failing_longer_than: float = 300.0
    on_error: bool = True
    check_interval: float = 30.0
    repeat_after: float = 3600.0
    webhook_url: str = ""
    webhook_headers: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    webhook_timeout: float = 10.0


@dataclass(frozen=True)
class Config:
    path: Path
    engine: EngineConfig
    store: StoreConfig
    admin: AdminConfig
    channels: tuple[ChannelConfig, ...]
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def channel(self, name: str) -> ChannelConfig | None:
        return next((channel for channel in self.channels if channel.name == name), None)


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None,
                connector_options: ConnectorOptions | None = None) -> Config:
    """Read and validate the config file and every channel file; raise one ConfigError listing all problems."""
    path = Path(path).resolve()
    loader = ConfigLoader(os.environ if environ is None else environ,
                     connector_options or ConnectorOptions.builtin(), path.parent)
    data = loader.read(path)
    if data is None:
        raise ConfigError(loader.problems)
    engine, store, admin, alerts = loader.settings(path, data)
    channels = loader.channels(path, engine)
    loader.cross_check(path, channels, admin)
    if loader.problems:
        order: dict[str, int] = {}  # group by file, in the order the files were read
        for problem in loader.problems:
            order.setdefault(problem.file, len(order))
        raise ConfigError(sorted(loader.problems, key=lambda problem: order[problem.file]))
    return Config(path, engine, store, admin, tuple(channels), alerts)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _text(value: Any, key: str, report: Report) -> str | None:
    return normalize(_TEXT, value, key, Context(Path("."), "", report))


def _check_name(name: str, key: str, what: str, report: Report) -> bool:
    if _NAME.fullmatch(name):
        return True
    report(key, f"{what} name {show(name)} may only contain letters, digits, '.', '_' and '-' "
                "and must start with a letter or digit")
    return False


def _clash(a: tuple[str, int], b: tuple[str, int]) -> bool:
    return a[1] == b[1] and (a[0] == b[0] or a[0] in _WILDCARD_HOSTS or b[0] in _WILDCARD_HOSTS)


class ConfigLoader:
    """One load: the problems found so far and what every check needs.  ``load_config`` drives
    it all-or-nothing; live reload and replay (``reload_plan.load_lenient``) drive the same steps
    and set aside only the channel files that have problems."""

    def __init__(self, environ: Mapping[str, str], connectors: ConnectorOptions, base_dir: Path) -> None:
        self.problems: list[Problem] = []
        self.environ, self.connectors, self.base_dir = environ, connectors, base_dir
        self.workers = 1    # [engine] workers, known once ``settings`` has read it

    def reporter(self, file: Path) -> Report:
        label = _display(file)
        return lambda key, reason: self.problems.append(Problem(label, key, reason))

    def read(self, file: Path) -> dict[str, Any] | None:
        """The file's table with ${VAR}s substituted, or None after reporting why it cannot be read."""
        report = self.reporter(file)
        try:
            text = file.read_bytes().decode("utf-8")
            data = tomllib.loads(text)
        except FileNotFoundError:
            report("", "file not found")
        except OSError as exc:
            report("", f"cannot read the file: {exc.strerror}")
        except UnicodeDecodeError as exc:
            report("", f"not UTF-8 text (bad byte at offset {exc.start})")
        except tomllib.TOMLDecodeError as exc:
            report("", f"TOML syntax error: {exc}")
        else:
            return substitute(data, self.environ, "", report)
        return None

    def settings(self, file: Path, data: dict[str, Any]) -> tuple[EngineConfig, StoreConfig, AdminConfig, AlertsConfig]:
        report = self.reporter(file)
        ctx = Context(self.base_dir, "engine", report)
        report_unknown(data, ["engine", "store", "admin", "alerts", "cluster"], "", report)
        values = {}
        for name, schema in (("engine", ENGINE), ("store", STORE), ("admin", ADMIN), ("alerts", ALERTS),
                             ("cluster", CLUSTER)):
            table = data.get(name, {})
            if not isinstance(table, dict):
                report(name, f"must be a table ([{name}]), not {type_name(table)}")
                table = {}
            values[name] = check_table(table, schema, name, ctx, also=("user",) if name == "admin" else ())
            if name == "store" and "url" in table and "path" in table:
                report("store.url", "give either url (PostgreSQL) or path (SQLite), not both")
        values["admin"]["users"] = self.users(data.get("admin"), ctx)
        for name, token in (values["admin"].get("tokens") or {}).items():
            if name == "admin" or not _NAME.fullmatch(name):
                report(f"admin.tokens.{name}", "a token name may only contain letters, digits, '.', '_' and '-' "
                       "('admin' is the name of [admin] token)")
            elif not token.strip():
                report(f"admin.tokens.{name}", "must not be empty")
        values["store"].update(values.pop("cluster"))
        self.workers = values["engine"]["workers"] or 1
        self.check_workers(values["engine"]["workers"], values["store"]["url"], report)
        alerts = AlertsConfig(**{k: v for k, v in values["alerts"].items() if v is not None})
        return (EngineConfig(**values["engine"]), StoreConfig(**values["store"]),
                AdminConfig(**{k: v for k, v in values["admin"].items() if v is not None}), alerts)

    @staticmethod
    def check_workers(workers: int | None, url: str | None, report: Report) -> None:
        """``[engine] workers`` > 1 shares the ports between processes on one PostgreSQL store."""
        if not workers or workers == 1:
            return
        if not url:
            report("engine.workers", "needs [store] url (PostgreSQL): on SQLite one writer at a time makes a "
                                     "second worker slower; see bench/README.md, 'A second core'")
        if not hasattr(socket, "SO_REUSEPORT"):
            report("engine.workers", "needs SO_REUSEPORT (Linux) for the workers to share the listening ports; "
                                     "this system has none: use workers = 1")

    def users(self, admin: Any, ctx: Context) -> tuple[UserConfig, ...]:
        """``[[admin.user]]`` tables: each checked like any table; names unique, never ``admin``."""
        tables = admin.get("user", []) if isinstance(admin, dict) else []
        if not isinstance(tables, list):
            ctx.report("admin.user", "write each user as [[admin.user]] (an array of tables)")
            return ()
        users, seen = [], set()
        for index, table in enumerate(tables):
            key = f"admin.user[{index}]"
            if not isinstance(table, dict):
                ctx.report(key, f"must be a table, not {type_name(table)}")
                continue
            values = check_table(table, ADMIN_USER, key, ctx)
            name = values.get("name")
            if name is None or None in (values[k] for k in ("role", "phi", "token_sha256", "password")):
                continue
            if not _check_name(name, f"{key}.name", "a user", ctx.report):
                continue
            if name == "admin" or name in seen or name in (admin.get("tokens") or {}):
                ctx.report(f"{key}.name", f"the user name {show(name)} is taken ('admin' is [admin] token's; "
                           "each user and token name once)")
                continue
            if not values["token_sha256"] and not values["password"]:
                ctx.report(key, "give token_sha256 or password (or both): a user needs a way to sign in")
                continue
            seen.add(name)
            users.append(UserConfig(**values))
        return tuple(users)

    def channels(self, config_file: Path, engine: EngineConfig) -> list[ChannelConfig]:
        directory = engine.channels_dir
        if directory is None:
            return []
        if not directory.is_dir():
            self.reporter(config_file)("engine.channels_dir", f"directory not found: {_display(directory)}")
            return []
        files = sorted(p for p in directory.glob("*.toml") if p.is_file() and not p.name.startswith("."))
        return [channel for channel in (self.channel(file, engine) for file in files) if channel is not None]

    def channel(self, file: Path, engine: EngineConfig) -> ChannelConfig | None:
        data = self.read(file)
        if data is None:
            return None
        report = self.reporter(file)
        top = check_table(data, CHANNEL, "", Context(self.base_dir, "", report),
                          also=("source", "filter", "transform", "metadata", "destination"))
        name = file.stem
        if "name" not in data:
            _check_name(name, "name", "channel", report)  # a file stem may make a bad name too
        elif top["name"] is not None and _check_name(top["name"], "name", "channel", report):
            name = top["name"]
        source = self.source(data.get("source"), report)
        inbound = top["inbound"] or self.connectors.default_inbound(source.type)
        for key, reason in inbound_problems(inbound, source.type, data.get("source")):
            report(key, reason)
        return ChannelConfig(
            name=name, file=file, description=top["description"], enabled=top["enabled"],
            inbound=inbound, source=source,
            filters=self.filters(data.get("filter"), "filter", report),
            transforms=self.transforms(data.get("transform"), "transform", engine, report),
            metadata=self.metadata(data.get("metadata"), report),
            destinations=self.destinations(data.get("destination"), engine, report),
            dedupe=source.options.get("dedupe"),
        )

    def connector_type(self, table: dict[str, Any], side: str, key: str, report: Report) -> str | None:
        value, known = table.get("type"), ", ".join(self.connectors.types(side))
        if value is None:
            report(join(key, "type"), f"required key is missing (known {side} types: {known})")
        elif isinstance(value, Substituted) and value.undefined:
            pass
        elif not isinstance(value, str) or self.connectors.schema(side, value) is None:
            report(join(key, "type"), f"unknown {side} type {show(value)} (known {side} types: {known})")
        else:
            return str(value)
        return None

    def source(self, raw: Any, report: Report) -> SourceConfig:
        if not isinstance(raw, dict):
            report("source", "missing: every channel needs a [source] table" if raw is None
                   else f"must be a table ([source]), not {type_name(raw)}")
            return SourceConfig("", MappingProxyType({"dedupe": None}))
        ctx = Context(self.base_dir, "source", report)
        kind = self.connector_type(raw, "source", "source", report)
        schema = self.connectors.schema("source", kind) if kind else None
        options = check_table(raw, schema, "source", ctx, also=COMMON_KEYS["source"]) if schema else {}
        options["dedupe"] = normalize(DEDUPE, raw.get("dedupe", DEDUPE.default), "source.dedupe", ctx)
        return SourceConfig(kind or "", MappingProxyType(options))

    def tables(self, raw: Any, key: str, report: Report) -> list[tuple[str, dict[str, Any]]]:
        """A [key] table or a [[key]] array as (problem key, table) pairs."""
        if raw is None:
            return []
        if isinstance(raw, dict):
            return [(key, raw)]
        if not isinstance(raw, list):
            report(key, f"must be a table or an array of tables, not {type_name(raw)}")
            return []
        result = []
        for index, item in enumerate(raw):
            where = item_key(key, index, item)
            if isinstance(item, dict):
                result.append((where, item))
            else:
                report(where, f"must be a table, not {type_name(item)}")
        return result

    def filters(self, raw: Any, key: str, report: Report) -> tuple[FilterConfig, ...]:
        result = []
        for where, item in self.tables(raw, key, report):
            if ("when" in item) == ("use" in item):
                both = ", not both" if "when" in item else ""
                report(where, f"a filter needs exactly one of 'when' (an expression) or 'use' (a plugin filter){both}")
            else:
                label = _text(item["name"], join(where, "name"), report) if "name" in item else None
                if "when" in item:
                    report_unknown(item, ["when", "name"], where, report)
                    result.append(FilterConfig(when=_text(item["when"], join(where, "when"), report), use=None,
                                               label=label))
                else:
                    options = freeze({name: value for name, value in item.items() if name not in ("use", "name")})
                    result.append(FilterConfig(when=None, use=_text(item["use"], join(where, "use"), report),
                                               options=options, label=label))
        return tuple(result)

    def transforms(self, raw: Any, key: str, engine: EngineConfig, report: Report) -> tuple[TransformConfig, ...]:
        result = []
        for where, item in self.tables(raw, key, report):
            given = [name for name in ("use", "template", "inline", "edit") if name in item]
            if len(given) != 1:
                extra = f", not {' and '.join(given)}" if given else ""
                report(where, f"a transform step needs exactly one of 'use', 'template' or 'inline' (or an 'edit' list){extra}")
                continue
            kind = given[0]
            if kind == "edit":
                report_unknown(item, ["edit"], where, report)
                if not isinstance(item["edit"], list):
                    report(join(where, "edit"), "must be a list of inline tables, one verb each")
                    continue
                result.append(TransformConfig(use=None, template=None, inline=None, outbound="hl7",
                                              edit=freeze(item["edit"])))
                continue
            value = _text(item[kind], join(where, kind), report)
            outbound = None
            if "outbound" in item:
                ctx = Context(self.base_dir, "", report)
                outbound = normalize(_FORMAT, item["outbound"], join(where, "outbound"), ctx)
            options = EMPTY
            if kind == "use":
                options = freeze({name: v for name, v in item.items() if name not in ("use", "outbound")})
            else:
                report_unknown(item, [kind, "outbound"], where, report)
            if kind == "template" and value is not None:
                self.check_template(value, join(where, "template"), engine, report)
            result.append(TransformConfig(
                use=value if kind == "use" else None, template=value if kind == "template" else None,
                inline=value if kind == "inline" else None, outbound=outbound, options=options))
        return tuple(result)

    def check_template(self, name: str, key: str, engine: EngineConfig, report: Report) -> None:
        base = engine.transforms_dir
        if base is None:
            return
        path = (base / name).resolve()
        if not path.is_relative_to(base):
            report(key, f"template {show(name)} must be inside {_display(base)}")
        elif not path.is_file():
            report(key, f"template {show(name)} not found in {_display(base)}")

    def metadata(self, raw: Any, report: Report) -> Mapping[str, str]:
        if raw is None:
            return EMPTY
        if not isinstance(raw, dict):
            report("metadata", f"must be a table ([metadata]), not {type_name(raw)}")
            return EMPTY
        result = {}
        for name, value in raw.items():
            key = join("metadata", name)
            if not _META_KEY.fullmatch(name):
                report(key, f"'{name}' cannot be a metadata name: use letters, digits and '_' (it is meta.{name})")
            elif (text := _text(value, key, report)) is not None:
                result[name] = text
        return MappingProxyType(result)

    def destinations(self, raw: Any, engine: EngineConfig, report: Report) -> tuple[DestinationConfig, ...]:
        result, seen = [], set()
        for where, item in self.tables(raw, "destination", report):
            name = None
            if "name" not in item:
                report(join(where, "name"), "required key is missing (every destination needs a name, unique in its channel)")
            elif (name := _text(item["name"], join(where, "name"), report)) is not None:
                if not _check_name(name, join(where, "name"), "destination", report):
                    name = None
                elif name in seen:
                    report(join(where, "name"), f"destination name '{name}' is used twice in this channel")
                seen.add(name)
            ctx = Context(self.base_dir, "destination", report)
            kind = self.connector_type(item, "destination", where, report)
            schema = self.connectors.schema("destination", kind) if kind else None
            options = check_table(item, schema, where, ctx, also=COMMON_KEYS["destination"]) if schema else {}
            result.append(DestinationConfig(
                name=name or "", type=kind or "", options=MappingProxyType(options),
                filters=self.filters(item.get("filter"), join(where, "filter"), report),
                transforms=self.transforms(item.get("transform"), join(where, "transform"), engine, report),
                retry=self.retry(item.get("retry"), join(where, "retry"), ctx),
                enabled=normalize(_ENABLED, item.get("enabled", True), join(where, "enabled"), ctx) is not False))
        # A disabled destination ("enabled = \"${AGENCY_HTTP:-false}\"": its peer is not configured
        # here) is validated like the others, then left out, so nothing downstream builds or plans it.
        return tuple(destination for destination in result if destination.enabled)

    def retry(self, raw: Any, key: str, ctx: Context) -> RetryConfig:
        if raw is None:
            return RetryConfig()
        if not isinstance(raw, dict):
            ctx.report(key, f"must be a table like {{ attempts = 0, interval = \"2s\" }}, not {type_name(raw)}")
            return RetryConfig()
        values = check_table(raw, RETRY, key, ctx)
        if any(value is None for value in values.values()):
            return RetryConfig()
        if values["max_interval"] < values["interval"]:
            ctx.report(join(key, "max_interval"), "must not be shorter than interval")
        return RetryConfig(**values)

    def cross_check(self, config_file: Path, channels: list[ChannelConfig], admin: AdminConfig) -> None:
        """What no single file can show: names used twice, shared listen addresses, channel links."""
        by_name: dict[str, ChannelConfig] = {}
        for channel in channels:
            if channel.name in by_name:
                self.reporter(channel.file)("name", f"channel name '{channel.name}' is already used by "
                                                    f"{_display(by_name[channel.name].file)}")
            else:
                by_name[channel.name] = channel
        listeners: list[tuple[tuple[str, int], str]] = []
        if isinstance(admin.listen, tuple) and admin.listen[1]:
            listeners.append((admin.listen, f"admin.listen in {_display(config_file)}"))
        for channel in channels:
            address = channel.source.options.get("listen")
            if not channel.enabled or not isinstance(address, tuple):
                continue
            if not address[1]:
                if self.workers > 1:
                    self.reporter(channel.file)("source.listen", "workers > 1 needs a fixed port in listen "
                                                "(port 0 would give each worker a port of its own)")
                continue
            owner = next((owner for other, owner in listeners if _clash(address, other)), None)
            if owner:
                self.reporter(channel.file)("source.listen", f"{format_address(address)} is already used by {owner}")
            listeners.append((address, f"channel '{channel.name}' ({_display(channel.file)})"))
        for channel in channels:
            for destination in channel.destinations:
                target = destination.options.get("channel") if destination.type == "channel" else None
                if target is None:
                    continue
                report, key = self.reporter(channel.file), f"destination[{destination.name}].channel"
                if target == channel.name:
                    report(key, "a channel cannot send to itself")
                elif target not in by_name:
                    report(key, f"no channel is named {show(target)} (channels: {', '.join(sorted(by_name))})")
                elif by_name[target].source.type != "channel":
                    report(key, f"channel '{target}' cannot receive from other channels: its source type is "
                                f"'{by_name[target].source.type}', not 'channel'")


def format_address(address: tuple[str, int]) -> str:
    """``127.0.0.1:2575``, ``[::1]:2575``: an address as the operator writes it."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host or '0.0.0.0'}:{port}"
