"""The admin HTTP API (DESIGN §3.7) as a twisted.web resource tree; every answer is JSON.

    GET  /healthz                          no token; {"status": "ok"}
    GET  /metrics                          Prometheus text (engine/admin/metrics.py)
    GET  /api/channels                     every channel: state, counts, destination queues
    GET  /api/channels/{name}
    GET  /api/channels/{name}/stats?window=1h  received, sent, errors per minute (engine/admin/traffic.py)
    POST /api/channels/{name}/start|stop|pause
    GET  /api/messages?channel=&status=&since=&until=&type=&control_id=&meta.KEY=&limit=&offset=
    GET  /api/messages/{id}                 what ``show --json`` prints
    POST /api/messages/{id}/replay          body (optional): {"destination", "dry_run"}
    POST /api/replay                        body: {"ids": [...]} or {"channel", "status", "since",
                                            "until"}, plus "destination", "dry_run"
    GET  /api/reload                        the latest live reload and its problems (engine/runtime/reload.py)
    POST /api/reload                        reload the config files now; answers what changed

The token and the user's role were checked before the body was read (``auth.AdminSite.screen``,
engine/admin/roles.py: 403 with a sentence); each endpoint checks again that a user is attached
(defence in depth).  Without ``phi`` a message is its summary and metadata (``roles.redact``).
Numbers and times are range-checked (ids 1..2^63-1, offsets, ``before_id``, times UTC can hold,
replay bodies): 400 with a sentence, never a 500.  Errors are ``{"error": sentence}`` with
the status code (400 bad input, 404 unknown, 405 method, 409 state or config conflict, 500 our
fault, logged without content).  Reads of the store run in threads, never in the reactor.

Audit (engine/admin/audit.py), written and committed *before* the answer goes out: ``view``
(message id), ``search`` (the filters -- only the keys of ``meta.*`` and whether ``text`` was
given, as their values may be patient data -- and the ids returned), ``replay`` /
``replay.dry_run`` (the selection and ids), ``channel.start|stop|pause``.
"""

from __future__ import annotations

import inspect
import json
import secrets
import time

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.web import resource, server

from engine.admin.metrics import age_seconds
from engine.admin.roles import redact
from engine.admin.states import destination_state, target_of
from engine.admin.traffic import traffic, window_seconds
from engine.connectors.http.json_input import load_json
from engine.core.message import MessageParseError
from engine.core.units import MAX_INTEGER, parse_int, parse_message_id, parse_time_bound
from engine.core.verdicts import with_filtered_by
from engine.runtime.replay import ReplayError, Selection
from engine.runtime.services import ChannelStateError
from engine.store.sqlite.schema import normalize_status

log = Logger(namespace="switchboard.admin")

JSON_TYPE = b"application/json"
MAX_LIMIT = 1000
SEARCH_KEYS = frozenset({"channel", "status", "since", "until", "type", "control_id", "limit", "offset", "text",
                         "before_id"})
ACTIONS = ("start", "stop", "pause")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, **extra) -> None:
        super().__init__(reason)
        self.code, self.reason, self.extra = code, reason, extra


class Raw:
    """A non-JSON answer (the metrics text)."""

    def __init__(self, content_type: bytes, body: bytes) -> None:
        self.content_type, self.body = content_type, body


def respond(request, code: int, data) -> None:
    if request._disconnected or request.finished:
        return
    if isinstance(data, Raw):
        content_type, body = data.content_type, data.body
    else:
        content_type, body = JSON_TYPE, json.dumps(data).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.setHeader(b"Cache-Control", b"no-store")
    request.write(body)
    request.finish()


class Endpoint(resource.Resource):
    """A JSON resource: ``json_GET(request)`` etc. return data, ``(code, data)`` or a Deferred."""

    open = False        # True only for /healthz
    examples: tuple = ()  # child names a route walk tries besides the static children (roles test)

    def __init__(self, admin) -> None:
        super().__init__()
        self.admin = admin

    def getChild(self, name: bytes, request):
        return self if name == b"" else NotFound(self.admin)

    def render(self, request):
        method = request.method.decode("ascii", "replace")
        handler = getattr(self, f"json_{'GET' if method == 'HEAD' else method}", None)
        if not self.open and not getattr(request, "who", None):
            respond(request, 401, {"error": "a valid bearer token is required"})
            return server.NOT_DONE_YET
        if handler is None:
            allowed = sorted(name[5:] for name in dir(self) if name.startswith("json_"))
            request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
            respond(request, 405, {"error": f"use {' or '.join(allowed) or 'another path'}"})
            return server.NOT_DONE_YET
        d = defer.maybeDeferred(handler, request)
        d.addCallbacks(lambda result: respond(request, *(result if isinstance(result, tuple) else (200, result))),
                       lambda failure: self._failed(request, failure))
        d.addErrback(lambda failure: log.failure("admin API: could not answer", failure))
        return server.NOT_DONE_YET

    def _failed(self, request, failure) -> None:
        error = failure.value
        if isinstance(error, ApiError):
            respond(request, error.code, {"error": error.reason, **error.extra})
        elif isinstance(error, ReplayError):
            respond(request, error.code, {"error": error.reason, "problems": error.problems})
        else:
            log.failure("admin API: internal error on {method} {path}", failure,
                        method=request.method.decode("ascii", "replace"), path=request.path.split(b"?")[0])
            respond(request, 500, {"error": "internal error (see the daemon's log)"})


class Refused(Endpoint):
    """A path that names something out of range: 400 with the sentence, whatever follows."""

    def __init__(self, admin, error: ApiError) -> None:
        super().__init__(admin)
        self.error = error

    def getChild(self, name, request):
        return self

    def render(self, request):
        respond(request, self.error.code, {"error": self.error.reason})
        return server.NOT_DONE_YET


class NotFound(Endpoint):
    def getChild(self, name, request):
        return self

    def render(self, request):
        respond(request, 404, {"error": "no such path"})
        return server.NOT_DONE_YET


def json_body(request) -> dict:
    """The body as a JSON object, parsed as the HTTP source parses JSON (``json_input.load_json``:
    no lone surrogates, no 5,000-digit numbers, no endless nesting); 400 with its sentence."""
    raw = request.content.getvalue() if request.content is not None else b""
    if not raw.strip():
        return {}
    try:
        data = load_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text") from None
    except MessageParseError as error:
        raise ApiError(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


MAX_REPLAY_IDS = 100_000


def checked_selection(body: dict) -> Selection:
    """``Selection.parse`` with every number and time range-checked first (400 with a sentence)."""
    ids = body.get("ids")
    if isinstance(ids, list):
        if len(ids) > MAX_REPLAY_IDS:
            raise ApiError(400, f"at most {MAX_REPLAY_IDS} ids in one replay; select by channel and time instead")
        if any(isinstance(i, int) and not isinstance(i, bool) and not 1 <= i <= MAX_ID for i in ids):
            raise ApiError(400, f"a message id is a whole number from 1 to {MAX_ID}")
    for key in ("since", "until"):
        if isinstance(body.get(key), str):
            try:
                time_bound(key, body[key])
            except ValueError as error:
                raise ApiError(400, str(error)) from None
    return Selection.parse(body)


def query(request) -> dict[str, str]:
    values = {}
    for key, items in (request.args or {}).items():
        name = key.decode("utf-8", "replace")
        if len(items) != 1:
            raise ApiError(400, f"give {name} once")
        values[name] = items[0].decode("utf-8", "replace")
    return values


SLICE = 64 * 1024


def json_bytes(data) -> bytes:
    """``json.dumps(data)`` for a thread, with every long string encoded a slice at a time: one
    ``json.dumps`` of a 1 MB string is a single C call that keeps the GIL (and so the reactor)
    for ~10 ms; between slices the reactor gets its turn.  Same bytes as ``json.dumps``."""
    marker = f"\x00{secrets.token_hex(8)}:"
    long: list[str] = []

    def shell(value):
        if isinstance(value, str) and len(value) > SLICE:
            long.append(value)
            return f"{marker}{len(long) - 1}"
        if isinstance(value, dict):
            return {key: shell(item) for key, item in value.items()}
        if isinstance(value, list):
            return [shell(item) for item in value]
        return value

    text = json.dumps(shell(data))
    for index, value in enumerate(long):
        sliced = "".join(json.dumps(value[at:at + SLICE])[1:-1] for at in range(0, len(value), SLICE))
        text = text.replace(json.dumps(f"{marker}{index}"), f'"{sliced}"', 1)
    return text.encode("utf-8")


def in_thread(function, *args):
    return threads.deferToThread(function, *args)


# -- the tree --------------------------------------------------------------------------------
class Root(Endpoint):
    def json_GET(self, request):
        return {"name": "switchboard", "api": ["/api/channels", "/api/messages", "/api/replay", "/metrics",
                                               "/healthz"]}


class Healthz(Endpoint):
    open = True

    def json_GET(self, request):
        """``{"status": "ok"}``. With several nodes on one PostgreSQL store also this node's name,
        readiness and holds; ``/healthz?ready`` then answers 503 while the node is not ready (its
        store unreachable or its leases not renewed within ``lease``): a load balancer's check."""
        cluster = self.admin.runtime.cluster
        if cluster is None:
            return {"status": "ok"}
        body = {"status": "ok", **cluster.status()}
        asked = {part.partition(b"=")[0] for part in request.uri.partition(b"?")[2].split(b"&")}
        if b"ready" in asked and not body["ready"]:
            return 503, body
        return body


class Nodes(Endpoint):
    def json_GET(self, request):
        """``GET /api/nodes``: what ``switchboard nodes --json`` prints ([] with one SQLite node)."""
        store = self.admin.runtime.store
        return in_thread(store.nodes) if hasattr(store, "nodes") else []


class Metrics(Endpoint):
    def json_GET(self, request):
        from prometheus_client import CONTENT_TYPE_LATEST

        return self.admin.metrics.render().addCallback(lambda text: Raw(CONTENT_TYPE_LATEST.encode(), text))


class Channels(Endpoint):
    examples = (b"{channel}",)

    def getChild(self, name, request):
        return self if name == b"" else ChannelNode(self.admin, name.decode("utf-8", "replace"))

    @defer.inlineCallbacks
    def json_GET(self, request):
        views = yield channel_views(self.admin)
        return views


class ChannelNode(Endpoint):
    examples = (*ACTIONS, "stats")

    def __init__(self, admin, name: str) -> None:
        super().__init__(admin)
        self.name = name

    def getChild(self, name, request):
        action = name.decode("ascii", "replace")
        if action == "stats":
            return ChannelStats(self.admin, self.name)
        return ChannelAction(self.admin, self.name, action) if action in ACTIONS else NotFound(self.admin)

    @defer.inlineCallbacks
    def json_GET(self, request):
        views = yield channel_views(self.admin, self.name)
        return views[0]


class ChannelStats(Endpoint):
    """Received, sent and errors per minute over ``window`` (default 1h, at most 24h)."""

    def __init__(self, admin, name: str) -> None:
        super().__init__(admin)
        self.name = name

    def json_GET(self, request):
        if self.admin.runtime.config.channel(self.name) is None:
            raise ApiError(404, f"no channel named {self.name!r}")
        values = query(request)
        unknown = sorted(set(values) - {"window"})
        if unknown:
            raise ApiError(400, f"unknown parameter {unknown[0]!r} (use window)")
        try:
            seconds = window_seconds(values.get("window"))
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        store = self.admin.runtime.store
        return in_thread(traffic, store, self.name, seconds)


class ChannelAction(Endpoint):
    def __init__(self, admin, name: str, action: str) -> None:
        super().__init__(admin)
        self.name, self.action = name, action

    @defer.inlineCallbacks
    def json_POST(self, request):
        runtime = self.admin.runtime
        service = runtime.channel(self.name)
        if service is None:
            if runtime.config.channel(self.name) is not None:
                raise ApiError(409, f"channel {self.name} is disabled in its file (enabled = false); enable it "
                                    "and restart the daemon")
            raise ApiError(404, f"no channel named {self.name!r}")
        yield self.admin.audit.record(request.who, f"channel.{self.action}", f"channel:{self.name}",
                                      {"state_before": service.state})
        try:
            yield service.change(self.action)
        except ChannelStateError as error:
            raise ApiError(409, str(error)) from None
        runtime.channel_changed(self.name, self.action)
        views = yield channel_views(self.admin, self.name)
        return views[0]


class Messages(Endpoint):
    examples = (b"{id}",)

    def getChild(self, name, request):
        if name == b"":
            return self
        try:
            return MessageNode(self.admin, message_id(name.decode("utf-8", "replace")))
        except ApiError as error:
            return Refused(self.admin, error)

    @defer.inlineCallbacks
    def json_GET(self, request):
        filters, recorded = search_filters(query(request), self.admin.runtime.store)
        try:
            rows = yield in_thread(lambda: self.admin.runtime.store.search(**filters))
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        yield self.admin.audit.record(request.who, "search", "messages",
                                      {"filters": recorded, "ids": [row["id"] for row in rows]})
        return rows


class MessageNode(Endpoint):
    examples = (b"replay",)

    def __init__(self, admin, message_id: int) -> None:
        super().__init__(admin)
        self.message_id = message_id

    def getChild(self, name, request):
        return MessageReplay(self.admin, self.message_id) if name == b"replay" else NotFound(self.admin)

    @defer.inlineCallbacks
    def json_GET(self, request):
        store = self.admin.runtime.store
        message = yield in_thread(lambda: with_filtered_by(store, store.get_message(self.message_id)))
        if message is None:
            raise ApiError(404, f"no message with id {self.message_id}")
        shown = redact(message, request.user)
        yield self.admin.audit.record(request.who, "view", f"message:{self.message_id}",
                                      None if shown is message else {"content": "hidden"})
        body = yield in_thread(json_bytes, shown)       # a 1 MB message: off the reactor
        return Raw(JSON_TYPE, body)


class MessageReplay(Endpoint):
    def __init__(self, admin, message_id: int) -> None:
        super().__init__(admin)
        self.message_id = message_id

    def json_POST(self, request):
        body = json_body(request)
        extra = sorted(set(body) - {"destination", "dry_run"})
        if extra:
            raise ApiError(400, f"unknown key(s) {', '.join(extra)}; known: destination, dry_run")
        selection = checked_selection({**body, "ids": [self.message_id]})
        return self.admin.replayer.replay(selection, request.who, self.admin.audit)


class Replay(Endpoint):
    def json_POST(self, request):
        selection = checked_selection(json_body(request))
        return self.admin.replayer.replay(selection, request.who, self.admin.audit)


class Reload(Endpoint):
    """GET: the latest live reload (engine/runtime/reload.py); POST: reload now and answer what it did."""

    def _reloader(self):
        reloader = self.admin.runtime.reloader
        if reloader is None:
            raise ApiError(409, "live reload is not running in this daemon (see its log)")
        return reloader

    def json_GET(self, request):
        return {**self._reloader().state(), "lookups": self.admin.runtime.lookup_problems()}

    @defer.inlineCallbacks
    def json_POST(self, request):
        reloader = self._reloader()
        yield self.admin.audit.record(request.who, "reload", "config")
        outcome = yield reloader.reload(f"POST /api/reload by {request.who}")
        return {**outcome, "problems": reloader.state()["problems"]}


def build_root(admin) -> resource.Resource:
    root = Root(admin)
    api = Endpoint(admin)
    root.putChild(b"api", api)
    root.putChild(b"healthz", Healthz(admin))
    root.putChild(b"metrics", Metrics(admin))
    api.putChild(b"channels", Channels(admin))
    api.putChild(b"messages", Messages(admin))
    api.putChild(b"replay", Replay(admin))
    api.putChild(b"reload", Reload(admin))
    api.putChild(b"nodes", Nodes(admin))
    return root


# -- helpers ---------------------------------------------------------------------------------
MAX_ID = MAX_INTEGER            # SQLite's INTEGER
MAX_OFFSET = 1_000_000          # deeper pages: page with before_id


def whole_number(key: str, text: str, low: int, high: int) -> int:
    """``text`` as an int in [low, high] (``units.parse_int``: ASCII digits only, so '²' is
    refused), else ValueError with a sentence naming ``key``."""
    return parse_int(text, key, minimum=low, maximum=high)


def message_id(text: str) -> int:
    try:
        return parse_message_id(text)
    except ValueError as error:
        raise ApiError(400, str(error)) from None


def time_bound(key: str, text: str):
    """``units.parse_time_bound`` (range-checked: a time UTC can hold), its sentence naming ``key``."""
    try:
        return parse_time_bound(text)
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None


def search_filters(params: dict[str, str], store) -> tuple[dict, dict]:
    """Query parameters -> (store.search arguments, what the audit log may keep)."""
    filters: dict = {}
    meta = {}
    for key, value in params.items():
        if key.startswith("meta.") and len(key) > 5:
            meta[key[5:]] = value
        elif key not in SEARCH_KEYS:
            raise ApiError(400, f"unknown filter {key!r}; known: {', '.join(sorted(SEARCH_KEYS))}, meta.KEY")
        else:
            filters[key] = value
    try:
        if "status" in filters:
            filters["status"] = normalize_status(filters["status"])
        for key in ("since", "until"):
            if key in filters:
                filters[key] = time_bound(key, filters[key])
        for key, low, high, default in (("limit", 1, MAX_LIMIT, 100), ("offset", 0, MAX_OFFSET, 0)):
            filters[key] = whole_number(key, str(filters.get(key, default)), low, high)
        if "before_id" in filters:  # keyset paging: the messages listed after this one
            filters["before_id"] = whole_number("before_id", filters["before_id"], 1, MAX_ID)
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    if "text" in filters and "text" not in inspect.signature(store.search).parameters:
        raise ApiError(400, "text search is not available in this version")
    if meta:
        filters["meta"] = meta
    recorded = {key: (value.isoformat() if hasattr(value, "isoformat") else value)
                for key, value in filters.items() if key not in ("meta", "text")}
    if meta:
        recorded["meta_keys"] = sorted(meta)
    if "text" in filters:
        recorded["text"] = True
    return filters, recorded


@defer.inlineCallbacks
def channel_views(admin, only: str | None = None):
    """``[{"name", "state", "description", "received", "filtered", "queued", "sent", "errored",
    "destinations": [{"name", "type", "target", "state", "state_since", "depth",
    "oldest_queued_age", "last_error", "failures"}]}]`` (the words: engine/admin/states.py); with
    several nodes also ``"held_by": {"poller:CHANNEL" | "queue:CHANNEL/DEST": node or null}`` and
    each destination's ``"node"``."""
    runtime = admin.runtime
    configs = [c for c in runtime.config.channels if only is None or c.name == only]
    if only is not None and not configs:
        raise ApiError(404, f"no channel named {only!r}")
    counts, stats = yield in_thread(lambda: (runtime.store.channel_counts(), runtime.store.queue_stats()))
    clustered = runtime.cluster is not None
    found = (yield in_thread(_lease_holders, runtime)) if clustered else {}
    now = time.time()
    views = []
    for config in configs:
        service = runtime.channel(config.name)
        view = {"name": config.name, "state": service.state if service else "disabled",
                "description": config.description or "", "source": config.source.type, "address": _address(service)}
        view.update({key: counts.get(config.name, {}).get(key, 0)
                     for key in ("received", "filtered", "queued", "sent", "errored")})
        reloader = runtime.reloader
        view["problems"] = reloader.problems_for(config.name) if reloader is not None else []
        view["destinations"] = []
        if clustered:   # several nodes: which node holds the channel's poller and each queue
            view["held_by"] = runtime.channel_holders(found, config)
        for destination in config.destinations:
            queue = service.queues.get(destination.name) if service else None
            figures = stats.get((config.name, destination.name), {})
            state, since = destination_state(queue)
            view["destinations"].append({
                "name": destination.name, "type": destination.type, "target": target_of(destination),
                "state": state, "state_since": since, "depth": figures.get("depth", 0),
                "oldest_queued_age": round(age_seconds(figures.get("oldest_queued_at"), now), 3),
                "last_error": queue.last_error if queue else None, "failures": queue.failures if queue else 0,
            })
            if clustered:
                view["destinations"][-1]["node"] = view["held_by"].get(f"queue:{config.name}/{destination.name}")
        views.append(view)
    return views


def _lease_holders(runtime) -> dict:
    """Who holds what across the nodes; ``{}`` while the store cannot say (the rest of the view stands)."""
    try:
        return runtime.lease_holders()
    except Exception:  # noqa: BLE001 - the database down: the channels are still listed
        return {}


def _address(service) -> str | None:
    if service is None or service.state != "started":
        return None
    try:
        host, port = service.source.address
    except Exception:  # a source that does not listen (file, channel) has no address
        return None
    return f"{host}:{port}"
