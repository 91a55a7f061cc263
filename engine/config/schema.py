"""Option schemas: which keys each connector type (and each config table) accepts, and how a raw TOML
value becomes a typed one.

Why a schema rather than code in each connector: every connector, built-in or from a plugin, gets the
same checks (unknown keys with a suggestion, types, durations, sizes, addresses, paths, TLS) with the
same wording, and `switchboard check` validates a channel without starting anything. A plugin adds a
type with ``connector_options.register("source", "sftp", {"host": OptionSpec("str", required=True)})``;
there is no module-global registry: each engine builds its own from its plugin registry (``from_registry``).

Normalized values: str/bool/int/float as such; duration -> float seconds; size -> int bytes;
address -> (host, port); path/file -> absolute Path, relative ones resolved against the directory of
config.toml (not of the channel file: one base for every path, whichever file names it); choice -> str;
mapping -> read-only {str: str}; tls -> read-only mapping of the TLS table below. A key that is absent
gets its default (None when there is none), so connectors can index options without guessing.

TLS tables: a source (server) takes ``{cert, key, client_ca}`` (cert and key required, client_ca asks
for and verifies a client certificate: mutual TLS); a destination (client) takes ``{ca, cert, key,
verify = true, server_name}`` (``tls = {}`` means TLS with the system's trusted CAs; cert and key
together present a client certificate). Certificate files must exist when the config is loaded.
"""
from __future__ import annotations

import difflib
import math
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from engine.core import units

FORMATS = ("hl7", "json", "csv", "xml", "text", "x12")
SIDES = ("source", "destination")
KINDS = frozenset(
    {"str", "bool", "int", "float", "duration", "size", "address", "path", "file", "choice", "mapping", "tls"}
)
# Keys the loader handles itself on every source / destination; a schema may not redefine them.
COMMON_KEYS = {"source": ("type", "dedupe"),
               "destination": ("name", "type", "enabled", "retry", "filter", "transform")}
_HINTS = {
    "duration": units.DURATION_HINT, "size": units.SIZE_HINT, "address": units.ADDRESS_HINT,
    "int": "use a whole number", "float": "use a number", "bool": "use true or false",
    "path": "use a path", "file": "it must name an existing file", "str": "use a string",
}


class Substituted(str):
    """A string that ${VAR} substitution produced. It may hold a secret, so errors never quote it.

    ``undefined`` marks a value whose variable was missing: that is already reported, so checks skip it.
    """

    variables: tuple[str, ...] = ()
    undefined = False

    def __new__(cls, text: str, variables: tuple[str, ...], undefined: bool = False) -> "Substituted":
        self = super().__new__(cls, text)
        self.variables, self.undefined = tuple(variables), undefined
        return self


def show(value: Any) -> str:
    """How an error message may quote a value: repr, or only the variable names for a substituted one."""
    if isinstance(value, Substituted):
        return "the value of " + " ".join("${%s}" % name for name in value.variables)
    return repr(value)


def type_name(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                       (dict, "a table"), (list, "an array")):
        if isinstance(value, kind):
            return name
    return "a date/time"


def join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


def item_key(key: str, index: int, item: Any) -> str:
    """``destination[agency-api]`` when the item has a plain name, else ``filter[2]`` (1-based)."""
    name = item.get("name") if isinstance(item, dict) else None
    if isinstance(name, str) and name and not isinstance(name, Substituted) and "${" not in name:
        return f"{key}[{name}]"
    return f"{key}[{index + 1}]"


def substitute(value: Any, environ: Mapping[str, str], key: str, report: Callable[[str, str], None]) -> Any:
    """``value`` with ${VAR} / ${VAR:-default} replaced in every string, recursively; problems reported
    at their key. A string that used a variable comes back as a Substituted."""
    if isinstance(value, str):
        return _substitute_text(value, environ, key, report)
    if isinstance(value, dict):
        return {name: substitute(item, environ, join(key, name), report) for name, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, environ, item_key(key, i, item), report) for i, item in enumerate(value)]
    return value


def _substitute_text(text: str, environ: Mapping[str, str], key: str, report: Callable[[str, str], None]) -> str:
    if "${" not in text:
        return text
    used: list[str] = []
    undefined = False

    def replace(match: re.Match) -> str:
        nonlocal undefined
        name, default = match.group(1), match.group(2)
        if match.group(0) == "$${":
            return "${"
        if name is None:
            report(key, "'${' must begin ${VAR} or ${VAR:-default} (write $${ for a literal '${')")
            undefined = True
            return match.group(0)
        used.append(name)
        if environ.get(name):
            return environ[name]
        if default is not None or name in environ:
            return default or ""
        report(key, f"${{{name}}} is not set and has no default (set it, or write ${{{name}:-default}})")
        undefined = True
        return ""

    result = _VARIABLE.sub(replace, text)
    return Substituted(result, tuple(used), undefined) if used or undefined else result


def freeze(value: Any) -> Any:
    """Plugin options as read-only values: tables -> MappingProxyType, arrays -> tuples, plain str."""
    if isinstance(value, dict):
        return MappingProxyType({name: freeze(item) for name, item in value.items()})
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    return str(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class OptionSpec:
    """One key's contract. ``default`` is written as in a config file ("1MB", "5m") and normalized like a
    value; ``check`` gets the normalized value and returns a reason (which must not quote the value) or
    None."""

    kind: str
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown option kind {self.kind!r}; one of {', '.join(sorted(KINDS))}")
        if (self.kind == "choice") != bool(self.choices):
            raise ValueError("choices go with kind 'choice', and only with it")


@dataclass(frozen=True)
class Context:
    """Where values are being checked: the base for relative paths, the side (for TLS), and the sink
    for problems, ``report(key, reason)``."""

    base_dir: Path
    side: str
    report: Callable[[str, str], None]


def report_unknown(table: Mapping[str, Any], allowed: list[str], key: str, report: Callable) -> None:
    """One problem per key not in ``allowed``, suggesting the closest known key."""
    for name in table:
        if name in allowed:
            continue
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(allowed))})"
        report(join(key, name), f"unknown key '{name}'{hint}")


def check_table(table: Mapping[str, Any], schema: Mapping[str, OptionSpec], key: str, ctx: Context,
                also: tuple[str, ...] = ()) -> dict[str, Any]:
    """Normalize ``table`` against ``schema``: every schema key in the result (value, default or None);
    unknown keys (other than ``also``, which the caller handles) and missing required ones reported."""
    report_unknown(table, [*schema, *also], key, ctx.report)
    result: dict[str, Any] = {}
    for name, spec in schema.items():
        if name in table:
            result[name] = normalize(spec, table[name], join(key, name), ctx)
        elif spec.required:
            ctx.report(join(key, name), "required key is missing")
            result[name] = None
        else:
            result[name] = None if spec.default is None else normalize(spec, spec.default, join(key, name), ctx)
    return result


def normalize(spec: OptionSpec, value: Any, key: str, ctx: Context) -> Any:
    """The typed value, or None after reporting why ``value`` does not fit ``spec``."""
    if isinstance(value, Substituted) and value.undefined:
        return None
    if spec.kind == "tls":
        return _tls(value, key, ctx)
    if spec.kind == "mapping":
        return _mapping(value, key, ctx)
    try:
        result = _CONVERTERS[spec.kind](spec, value, ctx.base_dir)
    except ValueError as exc:
        reason = str(exc)
        if isinstance(value, Substituted):  # the parser's reason quotes the value: keep it out
            reason = f"{show(value)} is not valid here; {_hint(spec)}"
        ctx.report(key, reason)
        return None
    reason = spec.check(result) if spec.check else None
    if reason:
        ctx.report(key, reason)
        return None
    return result


def _hint(spec: OptionSpec) -> str:
    if spec.kind == "choice":
        return f"use one of: {', '.join(spec.choices)}"
    return _HINTS[spec.kind]


def _str(spec: OptionSpec, value: Any, base: Path) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type_name(value)}")
    return str(value)


def _bool(spec: OptionSpec, value: Any, base: Path) -> bool:
    # "true"/"false" strings are accepted so that ${VAR} can supply a boolean.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"must be true or false, not {show(value) if isinstance(value, str) else type_name(value)}")


def _int(spec: OptionSpec, value: Any, base: Path) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    raise ValueError(f"must be a whole number, not {show(value) if isinstance(value, str) else type_name(value)}")


def _float(spec: OptionSpec, value: Any, base: Path) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    raise ValueError(f"must be a number, not {show(value) if isinstance(value, str) else type_name(value)}")


def _duration(spec: OptionSpec, value: Any, base: Path) -> float:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"must be a duration like \"10s\", not {type_name(value)}")
    return units.parse_duration(value)


def _size(spec: OptionSpec, value: Any, base: Path) -> int:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"must be a size like \"1MB\", not {type_name(value)}")
    return units.parse_size(value)


def _address(spec: OptionSpec, value: Any, base: Path) -> tuple[str, int]:
    return units.parse_address(_str(spec, value, base))


def _path(spec: OptionSpec, value: Any, base: Path) -> Path:
    text = _str(spec, value, base)
    if not text.strip():
        raise ValueError("must not be empty")
    return (base / Path(text).expanduser()).resolve()


def _file(spec: OptionSpec, value: Any, base: Path) -> Path:
    path = _path(spec, value, base)
    if not path.is_file():
        raise ValueError(f"file not found: {show(value)}")
    return path


def _choice(spec: OptionSpec, value: Any, base: Path) -> str:
    text = _str(spec, value, base)
    if text not in spec.choices:
        raise ValueError(f"{show(value)} is not one of: {', '.join(spec.choices)}")
    return text


_CONVERTERS = {"str": _str, "bool": _bool, "int": _int, "float": _float, "duration": _duration,
               "size": _size, "address": _address, "path": _path, "file": _file, "choice": _choice}


def _mapping(value: Any, key: str, ctx: Context) -> Mapping[str, str] | None:
    if not isinstance(value, dict):
        ctx.report(key, f"must be a table of strings, not {type_name(value)}")
        return None
    result = {}
    for name, item in value.items():
        converted = normalize(OptionSpec("str"), item, join(key, name), ctx)
        if converted is not None:
            result[name] = converted
    return MappingProxyType(result)


def _tls(value: Any, key: str, ctx: Context) -> Mapping[str, Any] | None:
    if not isinstance(value, dict):
        ctx.report(key, f"must be a table like {{ cert = \"server.pem\", key = \"server.key\" }}, not {type_name(value)}")
        return None
    schema = TLS_SERVER if ctx.side == "source" else TLS_CLIENT
    result = check_table(value, schema, key, ctx)
    if ctx.side != "source" and ("cert" in value) != ("key" in value):
        ctx.report(key, "cert and key go together (a client certificate needs both)")
    return MappingProxyType(result)


class ConnectorOptions:
    """The option schemas of the connector types one engine knows, by (side, type)."""

    def __init__(self) -> None:
        self._schemas: dict[tuple[str, str], Mapping[str, OptionSpec]] = {}
        self._inbound: dict[str, str] = {}

    @classmethod
    def builtin(cls) -> "ConnectorOptions":
        """The schemas of the core connector types (they register through the hooks, as plugins do)."""
        from engine.core.plugins import CORE_CONNECTORS, load_plugins

        return cls.from_registry(load_plugins(None, entry_points=False, builtins=CORE_CONNECTORS))

    @classmethod
    def from_registry(cls, registry) -> "ConnectorOptions":
        """Every source and destination class of ``registry`` with the ``option_schema`` it carries."""
        options = cls()
        for side, classes in (("source", registry.sources), ("destination", registry.destinations)):
            for connector in classes.values():
                schema = getattr(connector, "option_schema", None)
                if schema is not None and options.schema(side, connector.type_name) is None:
                    options.register(side, connector.type_name, schema,
                                     inbound=getattr(connector, "default_inbound", "hl7"))
        return options

    def register(self, side: str, type_name: str, schema: Mapping[str, OptionSpec], *, inbound: str = "hl7") -> None:
        """Add a connector type. ``inbound`` is the default format of a channel with this source."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, not {side!r}")
        if (side, type_name) in self._schemas:
            raise ValueError(f"{side} type {type_name!r} is already registered")
        if inbound not in FORMATS:
            raise ValueError(f"inbound must be one of {FORMATS}, not {inbound!r}")
        clash = set(schema) & set(COMMON_KEYS[side])
        if clash or not all(isinstance(spec, OptionSpec) for spec in schema.values()):
            raise ValueError(f"a {side} schema maps keys other than {sorted(COMMON_KEYS[side])} to OptionSpec")
        merged = {**DESTINATION_COMMON, **schema} if side == "destination" else dict(schema)
        self._schemas[(side, type_name)] = MappingProxyType(merged)
        if side == "source":
            self._inbound[type_name] = inbound

    def schema(self, side: str, type_name: str) -> Mapping[str, OptionSpec] | None:
        return self._schemas.get((side, type_name))

    def types(self, side: str) -> tuple[str, ...]:
        return tuple(sorted(name for kind, name in self._schemas if kind == side))

    def default_inbound(self, source_type: str) -> str:
        return self._inbound.get(source_type, "hl7")


def positive(value: float) -> str | None:
    return None if value > 0 else "must be more than 0"


def not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def peer_port(address: tuple[str, int]) -> str | None:
    return None if address[1] else "port 0 only makes sense for listening; give the peer's port"


def url_path(value: str) -> str | None:
    return None if value.startswith("/") else "must start with '/'"


def http_url(value: str) -> str | None:
    parts = urllib.parse.urlsplit(value)
    return None if parts.scheme in ("http", "https") and parts.netloc else "must be an http:// or https:// URL"


def _retry_backoff(value: float) -> str | None:
    return None if value >= 1 else "must be 1.0 or more (1.0 keeps the interval constant)"


def batch_period(value: str) -> str | None:
    """A file destination's batch period: daily, hourly, or a duration from 1s to 1d."""
    if value in ("daily", "hourly"):
        return None
    try:
        seconds = units.parse_duration(value)
    except ValueError:
        seconds = 0.0
    if 1 <= seconds <= 86400:
        return None
    return 'use "daily", "hourly" or a duration from 1s to 1d such as "15m"'


def choice_spec(default: str, *choices: str) -> OptionSpec:
    return OptionSpec("choice", default, choices=choices)


TLS_SERVER = {"cert": OptionSpec("file", required=True), "key": OptionSpec("file", required=True),
              "client_ca": OptionSpec("file")}
TLS_CLIENT = {"ca": OptionSpec("file"), "cert": OptionSpec("file"), "key": OptionSpec("file"),
              "verify": OptionSpec("bool", True), "server_name": OptionSpec("str", "")}
DEDUPE = OptionSpec("duration", "24h")
MAX_WORKERS = 64
ENGINE = {"channels_dir": OptionSpec("path", "channels"), "transforms_dir": OptionSpec("path", "transforms"),
          "plugins_dir": OptionSpec("path", "plugins"), "lookups_dir": OptionSpec("path", "lookups"),
          "log_level": choice_spec("info", "debug", "info", "warning", "error"),
          "log_format": choice_spec("text", "text", "json"),
          # what one template render may build in total (engine/core/template_limits.py)
          "template_memory": OptionSpec("size", "16MB", check=lambda size: None if 2**20 <= size <= 2**30
                                        else "must be from 1MB to 1GB (what one template render may build)"),
          # worker processes sharing the listening ports (engine/runtime/workers.py); > 1 needs [store] url
          "workers": OptionSpec("int", 1, check=lambda n: None if 1 <= n <= MAX_WORKERS
                                else f"must be from 1 to {MAX_WORKERS} (worker processes)")}


def postgres_url(value: str) -> str | None:
    """[store] url: a PostgreSQL connection URL (DESIGN §4)."""
    if not value or value.startswith(("postgresql://", "postgres://")):
        return None
    return 'use a PostgreSQL URL such as "postgresql://switchboard@db.example.org:5432/switchboard"'


# [store]: `url` (PostgreSQL) instead of `path` (SQLite); with `url`, `path`'s directory still holds
# the node's own files (admin token, run state).
STORE = {"path": OptionSpec("path", "var/switchboard.db"), "url": OptionSpec("str", "", check=postgres_url),
         "retention": OptionSpec("duration", "30d", check=lambda age: None if age <= units.MAX_AGE_SECONDS else
                                 f"must be at most {units.MAX_AGE_TEXT} (a cutoff before that predates any store)")}
# [cluster] (DESIGN §4, engine/runtime/cluster.py): this node's name (default: the host name) and how long a
# silent node keeps what it holds. Used only with [store] url; kept on StoreConfig (node, lease).
CLUSTER = {"node": OptionSpec("str", ""), "lease": OptionSpec("duration", "10s", check=positive)}
# [admin] tokens = { name = "value" }: more bearer tokens, each named for the audit log ("admin" is `token`'s).
ADMIN = {"listen": OptionSpec("address", "127.0.0.1:8480"), "token": OptionSpec("str", ""),
         "tokens": OptionSpec("mapping", {})}
# [[admin.user]] (DESIGN §3.12, engine/admin/roles.py): a person with a role, an API token's SHA-256
# and optionally an argon2id password hash for the dashboard.
ROLES = ("viewer", "operator", "admin")
ADMIN_USER = {"name": OptionSpec("str", required=True), "role": OptionSpec("choice", required=True, choices=ROLES),
              "phi": OptionSpec("bool", False),
              "token_sha256": OptionSpec("str", "", check=lambda v: None if not v or re.fullmatch(r"[0-9a-f]{64}", v)
                                         else "must be 64 lowercase hex digits (`switchboard user add` prints it)"),
              "password": OptionSpec("str", "", check=lambda v: None if not v or v.startswith("$argon2id$")
                                     else "must be an argon2id hash ($argon2id$...; `switchboard user add "
                                          "--password` prints one)")}
# [alerts] (engine/admin/alerts.py, docs/operations.md): thresholds ("0" turns one off) and the webhook.
ALERTS = {"queued_longer_than": OptionSpec("duration", "15m", check=not_negative),
          "failing_longer_than": OptionSpec("duration", "5m", check=not_negative),
          "on_error": OptionSpec("bool", True),
          "check_interval": OptionSpec("duration", "30s", check=positive),
          "repeat_after": OptionSpec("duration", "1h", check=not_negative),
          "webhook_url": OptionSpec("str", "", check=lambda url: http_url(url) if url else None),
          "webhook_headers": OptionSpec("mapping", {}),
          "webhook_timeout": OptionSpec("duration", "10s", check=positive)}
CHANNEL = {"name": OptionSpec("str"), "description": OptionSpec("str", ""), "enabled": OptionSpec("bool", True),
           "inbound": OptionSpec("choice", choices=FORMATS)}
# Options every destination type takes, plugin ones included (merged in ConnectorOptions.register):
# queue_warning = N logs one warning when N deliveries are queued for it (engine/core/queue.py).
DESTINATION_COMMON = {"queue_warning": OptionSpec("int", 10_000, check=positive)}
RETRY = {"attempts": OptionSpec("int", 0, check=not_negative),
         "interval": OptionSpec("duration", "2s", check=positive),
         "backoff": OptionSpec("float", 2.0, check=_retry_backoff),
         "max_interval": OptionSpec("duration", "5m", check=positive)}


# -- X12 (DESIGN §3.11): which sources read it, how they split it, and who may answer with a 999 --
X12_SOURCES = ("file", "sftp", "http", "channel")
X12_SPLITS = ("x12", "claims")   # per transaction set (the default for inbound = "x12"), per 835 claim


def inbound_problems(inbound: str | None, source_type: str, source: Any) -> list[tuple[str, str]]:
    """(key, reason) for an ``inbound``/``[source]`` pair that cannot work, as ``check`` shows them.

    An X12 channel always splits its interchanges (one message per transaction set, or per claim
    payment with ``split = "claims"``): one that would store whole interchanges (``split =
    "none"``) or split them as lines or HL7 batches is refused, and so are the X12 splits and
    ``ack = "999"`` on a channel that is not X12.
    """
    if not isinstance(source, dict) or not source_type:
        return []
    split, ack = source.get("split"), source.get("ack")
    problems = []
    if inbound == "x12":
        if source_type not in X12_SOURCES:
            problems.append(("inbound", f'"x12" is read by {", ".join(X12_SOURCES)} sources, not by a '
                             f'{source_type} source'))
        if split is not None and split not in X12_SPLITS:
            problems.append(("source.split", f'inbound = "x12" splits each interchange into its '
                             f'transaction sets: leave split out, or use "x12" or "claims" (one message '
                             f'per 835 claim payment), not {split!r}'))
    else:
        if split in X12_SPLITS:
            problems.append(("source.split", f'split = "{split}" needs inbound = "x12"'))
        if ack == "999":
            problems.append(("source.ack", 'ack = "999" needs inbound = "x12"'))
    return problems
