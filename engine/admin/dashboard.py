"""The web dashboard on the admin listener (DESIGN §3.7, §3.12): server-rendered pages, readable
without JavaScript, for the people who run the channels.

    GET  /login, POST /login            sign in by name and password, or a token (engine/admin/sessions.py)
    GET  /logout, POST /logout          the sign-out button; the POST (with the CSRF token) ends the session
    GET  /                              every channel: description, state, counts, each destination's
                                        target, state and queue, a chart of the last hour, problems
    GET  /channels/NAME                 one channel: its destinations' targets, states and last
                                        errors, its filter and transform steps by name, its
                                        file as TOML with secrets masked, recent messages
    POST /channels/NAME/start|stop|pause
    GET  /messages/ID                   raw | transformed | what the transform changed | each
                                        destination's sent (or "to send") and response; which
                                        filter stopped it; attempts marked with their replay
    GET  /messages/ID/raw|transformed|original, /messages/ID/sent|response?destination=NAME
                                        one content, whole, as a download
    POST /messages/ID/replay
    GET  /messages, /search             messages of every channel: filters, a count, pages, boxes
    POST /messages/replay               the ticked messages replayed, as one replay (operators)
    POST /messages/download             the ticked messages' raw content as one file (PHI)
    GET  /report, /report/csv           what ``switchboard report`` prints, a chart per day; its CSV
    GET  /static/dashboard.css|js

Who may see and do what is decided before the request is read (engine/admin/roles.py); pages hide
what the user may not do (no buttons for a viewer, no content and no text search without phi).
Pages are Jinja templates in ``pages/`` rendered by a plain ``jinja2.Environment`` with
``autoescape=True`` -- not the sandboxed message-template environment, which does not escape
(it writes HL7 and JSON): these pages show message content, and every value goes through HTML
escaping.  They read through what the JSON API uses (``api.channel_views``,
``api.search_filters`` with ``Store.search``, ``Store.get_message``, ``Replayer.replay``,
``ChannelService.change``), in threads for the store.  A message page is built and rendered in a
thread too, and shows at most ``DISPLAY_LIMIT`` characters of each content (the rest is a
download link): a 1 MB message must not hold the reactor (tests/e2e/test_hardening_admin_e2e.py).
Audit rows, committed before the page goes out: ``view`` for every message shown or downloaded,
``search`` for every list of messages (filters without ``meta`` values or ``text``, and the ids
shown), ``channel.*`` and ``replay`` for actions, ``login``, ``login.failed`` and ``logout``.
State-changing forms are POSTs with the session's CSRF token; the answer is a redirect back
(post/redirect/get) with a one-time note.  Every answer carries the security headers
(``auth.SECURITY_HEADERS``: CSP without inline scripts, no framing, no referrer, no-store).

The JavaScript (``static/dashboard.js``) only refreshes the parts marked ``data-refresh`` every few
seconds; without it the pages are complete and a reload refreshes them.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import jinja2
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from engine.admin.api import MAX_OFFSET, ApiError, channel_views, in_thread, search_filters, time_bound, whole_number
from engine.admin.api import message_id as parse_message_id
from engine.admin.channel_config import filter_steps, masked_toml, transform_steps
from engine.admin.display import age, hl7_markup, looks_like_hl7, pretty
from engine.admin.roles import may, redact
from engine.admin.states import describe_state
from engine.admin.report_rows import has_kit_figures, to_csv
from engine.admin.traffic import chart, day_chart, traffic
from engine.admin.sessions import csrf_ok, cookie_value, peer_host, set_cookie_header
from engine.hl7.segment_diff import segment_changes
from engine.core.verdicts import with_filtered_by
from engine.runtime.replay import ReplayError, Selection
from engine.runtime.services import ChannelStateError
from engine.store.sqlite.schema import MESSAGE_STATUSES

log = Logger(namespace="switchboard.dashboard")

HERE = Path(__file__).resolve().parent
STATIC = {b"dashboard.css": b"text/css; charset=utf-8", b"dashboard.js": b"text/javascript; charset=utf-8"}
ACTIONS = ("start", "stop", "pause")
PAGE_SIZE = 50
PER_PAGE = (50, 200, 1000)         # the list page's choices (a page of 1,000: the 300 ms bound of test_dashboard_e2e)
MAX_PER_PAGE = 1000
CHART_WINDOW = 3600                # seconds of traffic drawn per channel on the channel list
CHART_REFRESH = 15                 # seconds a costly chart is reused
CHART_SLOW = 0.05                  # seconds of counting that make the charts costly
FORM_KEYS = ("status", "since", "until", "type", "control_id", "meta", "text")
DISPLAY_LIMIT = 32 * 1024          # characters of one content shown in a page; the rest is a download
DOWNLOADS = ("raw", "transformed", "sent", "response", "original")
COUNT_CAP = 10_000                 # matches counted for the list page's "N messages"; beyond: "more than"
REPORT_WINDOW = "30d"
BULK = {"replay": "Replay selected", "download": "Download selected"}   # POST /messages/<this>
PASSWORD_CHECKS = 2                # argon2 verifications at once (each takes 64 MiB for ~50 ms)


class Html:
    def __init__(self, body: str, code: int = 200) -> None:
        self.body, self.code = body, code


class Download:
    def __init__(self, body: bytes, filename: str, content_type: bytes = b"text/plain; charset=utf-8") -> None:
        self.body, self.filename, self.content_type = body, filename, content_type


class Redirect:
    def __init__(self, location: str, cookie: bytes | None = None) -> None:
        self.location, self.cookie = location, cookie


def build_environment() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "pages"), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(hl7=hl7_markup, age=age, destination_state=describe_state)
    environment.tests["hl7"] = looks_like_hl7
    return environment


LOCAL_PATH = re.compile(r"/(?!/)[A-Za-z0-9._~/?=&%+-]*")


def local_path(value: str | None, default: str) -> str:
    """A redirect target from a form: a path on this site only (no scheme, host or control bytes)."""
    return value if value and LOCAL_PATH.fullmatch(value) else default


class Dashboard:
    def __init__(self, admin) -> None:
        self.admin = admin
        self.password_checks = defer.DeferredSemaphore(PASSWORD_CHECKS)
        self.chart_cache: tuple[float, dict] = (-math.inf, {})
        self.environment = build_environment()
        self.static = {name: (kind, (HERE / "static" / name.decode()).read_bytes()) for name, kind in STATIC.items()}

    def mount(self, root: resource.Resource) -> None:
        root.putChild(b"", Route(self, "channels"))
        for name in ("login", "logout", "channels", "messages", "search", "report"):
            root.putChild(name.encode(), Route(self, name))
        root.putChild(b"static", Static(self))
        root.putChild(b"favicon.ico", Favicon())

    # -- answering ----------------------------------------------------------------------------
    def render(self, request, template: str, code: int = 200, **context) -> Html:
        return Html(self.environment.get_template(template).render(**self.context(request, context)), code)

    def render_in_thread(self, request, template: str, code: int = 200, **context):
        """Deferred[Html]: a page whose content may be large, rendered off the reactor."""
        full = self.context(request, context)
        page = self.environment.get_template(template)
        return in_thread(lambda: Html(page.render(**full), code))

    def context(self, request, context: dict) -> dict:
        session = getattr(request, "dashboard_session", None)
        flash, reloader = [], self.admin.runtime.reloader
        if session is not None:
            flash, session.flash = session.flash, []
        user = getattr(request, "user", None)
        context.setdefault("title", "Switchboard")
        context.setdefault("statuses", MESSAGE_STATUSES)
        problems = reloader.other_problems() if reloader is not None else []
        problems += [f"code table {text} (the last good version stays in use)"
                     for text in self.admin.runtime.lookup_problems()]
        return dict(who=getattr(request, "who", None), user=user, may=lambda what: may(user, what),
                    csrf=session.csrf if session else None, flash=flash, config_problems=problems, **context)

    def send(self, request, answer) -> None:
        if request._disconnected or request.finished:
            return
        started = getattr(request, "dashboard_started", None)
        if started is not None:          # the server's time for this answer (the 300 ms bound's measure)
            request.setHeader(b"Server-Timing", b"page;dur=%.1f" % ((time.perf_counter() - started) * 1000))
        if isinstance(answer, Download):
            request.setResponseCode(200)
            request.setHeader(b"Content-Type", answer.content_type)
            request.setHeader(b"Content-Disposition", f'attachment; filename="{answer.filename}"'.encode("ascii"))
            request.setHeader(b"Content-Length", b"%d" % len(answer.body))
            if request.method != b"HEAD":
                request.write(answer.body)
            request.finish()
            return
        if isinstance(answer, Redirect):
            request.setResponseCode(303)
            request.setHeader(b"Location", answer.location.encode("utf-8"))
            if answer.cookie is not None:
                request.setHeader(b"Set-Cookie", answer.cookie)
            body = b""
        else:
            request.setResponseCode(answer.code)
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            body = answer.body.encode("utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    def fail(self, request, failure) -> None:
        error = failure.value
        if isinstance(error, ApiError):
            answer = self.render(request, "error.html", error.code, title=f"Error {error.code}", reason=error.reason)
        else:
            log.failure("dashboard: internal error on {path}", failure, path=request.path.split(b"?")[0])
            answer = self.render(request, "error.html", 500, title="Error", reason="internal error (see the daemon's log)")
        self.send(request, answer)

    def note(self, request, text: str) -> None:
        session = getattr(request, "dashboard_session", None)
        if session is not None:
            session.flash.append(text)

    # -- sign in and out ----------------------------------------------------------------------
    def login_GET(self, request):
        if getattr(request, "who", None):
            return Redirect("/")
        return self.render(request, "login.html", title="Sign in", error=None)

    @defer.inlineCallbacks
    def login_POST(self, request):
        """Sign in by name and password, or by a token.  Each attempt is counted against the
        address *before* the slow password check (``sessions.Throttle``; a success clears it), so
        attempts sent in parallel cannot outrun the 429; at most ``PASSWORD_CHECKS`` argon2
        verifications (64 MiB each) run at once.  Failures are audited (the name only when it is a
        configured user's: a password typed into the name field must not be kept)."""
        form = parse_form(request)
        address = peer_host(request)
        name, password, token = form.get("name", "").strip(), form.get("password", ""), form.get("token", "").strip()
        if not (name or password or token):
            return self.render(request, "login.html", 400, title="Sign in",
                               error="Give your name and password, or a token.")
        throttle = self.admin.site.throttle
        wait = math.ceil(throttle.wait(address))
        if wait:
            request.setHeader(b"Retry-After", b"%d" % wait)
            return self.render(request, "login.html", 429, title="Sign in",
                               error=f"Too many failed sign-ins from this address; try again in {wait} s.")
        throttle.failed(address)
        if name or password:
            user = yield self.password_checks.run(in_thread, self.admin.tokens.check_password, name, password)
            how = "password"
        else:
            user = self.admin.tokens.who(token.encode("utf-8"))
            how = "token"
        if user is None:
            known = name if how == "password" and self.admin.tokens.has_user(name) else "?"
            log.info("dashboard: sign-in refused for {peer} ({how})", peer=address, how=how)
            yield self.admin.audit.record(known, "login.failed", "dashboard", {"by": how, "address": address})
            error = ("That name and password do not match." if how == "password"
                     else "That is not an admin token or a user's token.")
            return self.render(request, "login.html", 401, title="Sign in", error=error)
        throttle.succeeded(address)
        value, _session = self.admin.sessions.create(user)
        yield self.admin.audit.record(user.name, "login", "dashboard", {"by": how, "address": address})
        return Redirect("/", set_cookie_header(value, secure=request.isSecure()))

    def logout_GET(self, request):
        """A page with the sign-out button: GET never signs out (a link on another site could)."""
        return self.render(request, "logout.html", title="Sign out")

    @defer.inlineCallbacks
    def logout_POST(self, request):
        self.checked_form(request)
        value = cookie_value(request)
        if value and self.admin.sessions.find(value) is not None:
            self.admin.sessions.end(value)
            yield self.admin.audit.record(request.who, "logout", "dashboard")
        return Redirect("/login", set_cookie_header("", secure=request.isSecure(), clear=True))

    # -- channels -----------------------------------------------------------------------------
    @defer.inlineCallbacks
    def channels_GET(self, request, name: str | None = None, action: str | None = None):
        if action is not None:
            raise ApiError(405, "use POST for start, stop and pause")
        if name is None:
            views = yield channel_views(self.admin)
            charts = yield in_thread(self.charts, [view["name"] for view in views])
            return self.render(request, "channels.html", channels=views, actions=actions_for, charts=charts)
        views = yield channel_views(self.admin, name)
        channel = views[0]
        if one(request, "part") == "summary":
            return self.render(request, "channel.html", title=f"Channel {name}", channel=channel,
                               actions=actions_for, summary_only=True, search=None)
        search = yield self.search(request, {"channel": name})
        config = self.admin.runtime.config.channel(name)
        toml = yield in_thread(masked_toml, config.file)
        steps = {"filters": filter_steps(config.filters), "transforms": transform_steps(config.transforms),
                 "destinations": [{"name": d.name, "filters": filter_steps(d.filters, f"destination[{d.name}]."),
                                   "transforms": transform_steps(d.transforms)} for d in config.destinations]}
        return self.render(request, "channel.html", 400 if search["error"] else 200, title=f"Channel {name}",
                           channel=channel, actions=actions_for, summary_only=False, search=search,
                           toml=toml, steps=steps, file=config.file.name)

    def charts(self, names: list[str]) -> dict:
        """In a thread: each channel's last hour as a small SVG (engine/admin/traffic.py).  When
        counting took longer than ``CHART_SLOW`` (a busy channel's hour: docs/dashboard.md) the
        charts are reused for ``CHART_REFRESH`` seconds, as the list refreshes itself every 3 s;
        quick counts are made afresh, so a chart is current."""
        at, cached = self.chart_cache
        if time.monotonic() - at < CHART_REFRESH and set(names) <= set(cached):
            return cached
        store = self.admin.runtime.store
        started = time.monotonic()
        drawn = {name: chart(traffic(store, name, CHART_WINDOW)) for name in names}
        if time.monotonic() - started > CHART_SLOW:          # only a costly count is worth reusing
            self.chart_cache = (time.monotonic(), drawn)
        return drawn

    @defer.inlineCallbacks
    def channels_POST(self, request, name: str | None = None, action: str | None = None):
        form = self.checked_form(request)
        if name is None or action not in ACTIONS:
            raise ApiError(404, "no such action")
        runtime = self.admin.runtime
        service = runtime.channel(name)
        back = local_path(form.get("next"), f"/channels/{name}")
        if service is None:
            raise ApiError(404 if runtime.config.channel(name) is None else 409, f"channel {name} is not running")
        yield self.admin.audit.record(request.who, f"channel.{action}", f"channel:{name}",
                                      {"state_before": service.state, "via": "dashboard"})
        try:
            yield service.change(action)
        except ChannelStateError as error:
            self.note(request, str(error))
        else:
            self.note(request, f"Channel {name}: {action} done; it is now {service.state}.")
        return Redirect(back)

    # -- messages -----------------------------------------------------------------------------
    @defer.inlineCallbacks
    def messages_GET(self, request, message_id: str | None = None, action: str | None = None):
        if message_id is None:
            return (yield self.list_page(request, "Messages"))
        if message_id in BULK and action is None:
            raise ApiError(405, f"use the {BULK[message_id]} button of the messages page (a POST)")
        number = parse_message_id(message_id)
        if action is not None and action not in DOWNLOADS:
            raise ApiError(404, "no such page")
        store = self.admin.runtime.store
        message = yield in_thread(lambda: with_filtered_by(store, store.get_message(number)))
        if message is None:
            raise ApiError(404, f"no message with id {number}")
        if action is not None:
            return (yield self.download(request, message, action))
        shown = redact(message, request.user)
        yield self.admin.audit.record(request.who, "view", f"message:{number}",
                                      {"via": "dashboard", **({} if shown is message else {"content": "hidden"})})
        service = self.admin.runtime.channel(message["channel"])
        replays = yield in_thread(replay_times, store, number)
        view = yield in_thread(MessageView, shown, replays)
        return (yield self.render_in_thread(request, "message.html", title=f"Message {number}", message=view,
                                            destinations=sorted(service.queues) if service else []))

    @defer.inlineCallbacks
    def download(self, request, message: dict, part: str):
        """One content of a message, whole, as a file (the page shows at most ``DISPLAY_LIMIT``)."""
        number, destination = message["id"], one(request, "destination")
        if part == "original":
            store = self.admin.runtime.store
            body = yield in_thread(store.get_original, number)
            text = None
        elif part in ("sent", "response"):
            found = [d for d in message["destinations"] if d["name"] == destination]
            if not found:
                raise ApiError(404, f"message {number} has no destination {destination!r}")
            text, body = found[0][part], None
        else:
            text, body = message[part], None
        if body is None and text is None:
            raise ApiError(404, f"message {number} has no {part} content")
        detail = {"via": "dashboard", "download": part, **({"destination": destination} if destination else {})}
        yield self.admin.audit.record(request.who, "view", f"message:{number}", detail)
        if body is not None:
            return Download(body, f"message-{number}-original.bin", b"application/octet-stream")
        suffix = f"-{destination}" if destination else ""
        return Download(text.encode("utf-8", "replace"), safe_filename(f"message-{number}-{part}{suffix}.txt"))

    @defer.inlineCallbacks
    def messages_POST(self, request, message_id: str | None = None, action: str | None = None):
        if message_id in BULK and action is None:
            return (yield self.selected(request, message_id))
        form = self.checked_form(request)
        if message_id is None or action != "replay":
            raise ApiError(404, "no such action")
        data = {"ids": [parse_message_id(message_id)]}
        if form.get("destination"):
            data["destination"] = form["destination"]
        try:
            result = yield self.admin.replayer.replay(Selection.parse(data), request.who, self.admin.audit)
        except ReplayError as error:
            self.note(request, f"Not replayed: {error.reason} {' '.join(error.problems)}".strip())
        else:
            if result["replayed"]:
                statuses = ", ".join(f"{n} {status}" for status, n in sorted(result.get("statuses", {}).items()))
                self.note(request, f"Replayed: {statuses}.")
            for skipped in result["skipped"]:
                self.note(request, f"Not replayed: {skipped['reason']}.")
        return Redirect(f"/messages/{data['ids'][0]}")

    @defer.inlineCallbacks
    def selected(self, request, what: str):
        """``POST /messages/replay`` (operators) and ``/messages/download`` (PHI): the messages
        ticked on a list page, as one replay of the selection or one file of their raw content."""
        form = self.checked_lists(request)
        ids = sorted({parse_message_id(value) for value in form.get("id", [])})
        back = local_path((form.get("next") or [""])[0], "/messages")
        if not ids:
            self.note(request, "Select at least one message (tick its box) first.")
            return Redirect(back)
        if what == "download":
            return (yield self.download_selected(request, ids))
        try:
            result = yield self.admin.replayer.replay(Selection.parse({"ids": ids}), request.who, self.admin.audit)
        except ReplayError as error:
            self.note(request, f"Not replayed: {error.reason} {' '.join(error.problems)}".strip())
        else:
            statuses = ", ".join(f"{n} {status}" for status, n in sorted(result.get("statuses", {}).items()))
            self.note(request, f"Replayed {result['replayed']} of {len(ids)} selected message(s)"
                               f"{': ' + statuses if statuses else ''}.")
            for skipped in result["skipped"][:10]:
                self.note(request, f"Not replayed: {skipped['reason']}.")
        return Redirect(back)

    @defer.inlineCallbacks
    def download_selected(self, request, ids: list[int]):
        """The raw messages, in id order, each followed by a newline: a file the file source and
        ``switchboard test`` read back as these messages (HL7 is split at each MSH)."""
        store = self.admin.runtime.store
        found = yield in_thread(lambda: [m for m in (store.get_message(i) for i in ids) if m is not None])
        kept = [m for m in found if m.get("raw") is not None]
        if not kept:
            raise ApiError(404, "none of the selected messages has its content stored (pruned or unknown ids)")
        yield self.admin.audit.record(request.who, "view", "messages",
                                      {"via": "dashboard", "download": "raw", "ids": [m["id"] for m in kept]})
        body = "".join(m["raw"] if m["raw"].endswith("\n") else m["raw"] + "\n" for m in kept)
        hl7 = all(looks_like_hl7(m["raw"]) for m in kept)
        name = f"messages-{kept[0]['id']}-{kept[-1]['id']}-{len(kept)}.{'hl7' if hl7 else 'txt'}"
        return Download(body.encode("utf-8", "replace"), name)

    # -- report -------------------------------------------------------------------------------
    @defer.inlineCallbacks
    def report_GET(self, request, part: str | None = None):
        """``/report``: what ``switchboard report`` prints over ``since`` (default 30d) and a
        channel, with a chart per day; ``/report/csv``: the same rows as ``report --csv``."""
        if part not in (None, "csv"):
            raise ApiError(404, "no such page")
        form = {"since": one(request, "since") or REPORT_WINDOW, "channel": one(request, "channel")}
        names = [channel.name for channel in self.admin.runtime.config.channels]
        try:
            since = time_bound("since", form["since"])
        except ValueError as error:
            return self.render(request, "report.html", 400, title="Report", form=form, channel_names=names,
                               error=str(error), data=None, chart=None, kit=False)
        channel = form["channel"] or None
        store = self.admin.runtime.store
        data, days = yield in_thread(lambda: (store.report(since=since, channel=channel),
                                              store.daily_counts(since, channel)))
        if part == "csv":
            stamp = data["until"][:10]
            return Download(to_csv(data).encode("utf-8"), safe_filename(f"report-{channel or 'all'}-{stamp}.csv"),
                            b"text/csv; charset=utf-8")
        return self.render(request, "report.html", title="Report", form=form, channel_names=names, error=None,
                           data=data, chart=day_chart(every_day(days, since, data["until"])),
                           kit=has_kit_figures(data), csv_link=f"/report/csv?{urlencode(form)}")

    # -- search -------------------------------------------------------------------------------
    def search_GET(self, request):
        return self.list_page(request, "Search")

    @defer.inlineCallbacks
    def list_page(self, request, title: str):
        """``/messages`` and ``/search``: the filter form, the count, a page of messages with
        boxes to tick for Replay selected and Download selected."""
        wanted = any(key in (request.args or {}) for key in (b"go", b"channel") + tuple(k.encode() for k in FORM_KEYS))
        search = (yield self.search(request, {})) if wanted else None
        names = [channel.name for channel in self.admin.runtime.config.channels]
        return self.render(request, "search.html", 400 if search and search["error"] else 200, title=title,
                           search=search, channel_names=names, selectable=True, per_page=PER_PAGE,
                           form=form_values(request), statuses=MESSAGE_STATUSES)

    @defer.inlineCallbacks
    def search(self, request, fixed: dict) -> dict:
        """Messages for a filter form: {"form", "rows", "error", "older", "newer"} (links to pages),
        "count" (up to ``COUNT_CAP``; "capped" beyond), "first" (the page's first row number)."""
        form = form_values(request)
        refused = lambda reason: {"form": form, "rows": [], "error": reason, "older": None, "newer": None,  # noqa: E731
                                  "count": 0, "capped": False, "first": 0, "here": request.uri.decode("utf-8", "replace")}
        params = {key: form[key] for key in ("status", "since", "until", "type", "control_id", "text") if form[key]}
        if form["channel"] and "channel" not in fixed:
            params["channel"] = form["channel"]
        params.update(fixed)
        if form["meta"]:
            key, sep, value = form["meta"].partition("=")
            if not sep or not key.strip():
                return refused("metadata is written key=value")
            params[f"meta.{key.strip()}"] = value.strip()
        try:
            offset = whole_number("offset", form["offset"], 0, MAX_OFFSET) if form["offset"] else 0
            size = whole_number("per_page", form["per_page"], 1, MAX_PER_PAGE) if form["per_page"] else PAGE_SIZE
        except ValueError as error:
            return refused(str(error))
        params.update(limit=str(size), offset=str(offset))
        store = self.admin.runtime.store
        try:
            filters, recorded = search_filters(params, store)
            rows, count = yield in_thread(lambda: (store.search(**filters), store.count_matches(COUNT_CAP, **filters)))
        except (ApiError, ValueError) as error:
            return refused(error.reason if isinstance(error, ApiError) else str(error))
        more = len(rows) == size and (count >= COUNT_CAP or offset + size < count)
        yield self.admin.audit.record(request.who, "search", "messages",
                                      {"filters": recorded, "ids": [row["id"] for row in rows], "via": "dashboard"})
        base = {key: value for key, value in form.items() if value and key != "offset"}
        page = lambda at: f"{request.path.decode('utf-8', 'replace')}?{urlencode({**base, 'go': '1', 'offset': at})}"  # noqa: E731
        return {"form": form, "rows": rows, "error": None, "older": page(offset + size) if more else None,
                "newer": page(max(offset - size, 0)) if offset else None,
                "count": count, "capped": count >= COUNT_CAP, "first": offset + 1,
                "here": request.uri.decode("utf-8", "replace")}

    def checked_lists(self, request) -> dict[str, list[str]]:
        """A POSTed form whose keys may repeat (ticked boxes), once its CSRF token matches."""
        form = parse_form(request, lists=True)
        session = getattr(request, "dashboard_session", None)
        if session is not None and not csrf_ok(session, (form.get("csrf") or [None])[0]):
            raise ApiError(403, "the form is out of date or did not come from this dashboard; reload the page")
        return form

    def checked_form(self, request) -> dict:
        """The POSTed form, once its CSRF token matches the session's (bearer requests need none)."""
        form = parse_form(request)
        session = getattr(request, "dashboard_session", None)
        if session is not None and not csrf_ok(session, form.get("csrf")):
            raise ApiError(403, "the form is out of date or did not come from this dashboard; reload the page")
        return form


def every_day(days: dict, since, until: str) -> dict:
    """``days`` with the days of the window that had no message as zeros (at most 400 days)."""
    from datetime import date, timedelta

    last = date.fromisoformat(until[:10])
    first = since.date() if since is not None and hasattr(since, "date") else (
        date.fromisoformat(min(days)) if days else last)
    first = max(first, last - timedelta(days=400))
    empty = {"received": 0, "sent": 0, "filtered": 0, "errors": 0, "queued": 0}
    filled = {}
    at = first
    while at <= last:
        filled[at.isoformat()] = days.get(at.isoformat(), empty)
        at += timedelta(days=1)
    return filled


def safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def replay_times(store, number: int) -> list[str]:
    """When message ``number`` was replayed (its ``replayed`` events' times), oldest first."""
    return sorted(event["at"] for event in store.recent_events(limit=200, message_id=number)
                  if event.get("kind") == "replayed" and event.get("at"))


def replay_of(at: str | None, replays: list[str]) -> int:
    """Which replay an attempt made at ``at`` belongs to (1, 2...), 0 for the first processing."""
    return sum(1 for replayed in replays if at and at >= replayed)


def sent_label(delivery: dict) -> str:
    """The heading of a destination's content: "Sent" once it was, "To send" while it waits in
    the queue (retried or not), "Not sent" when it ended in ERROR or was filtered."""
    return {"SENT": "Sent", "QUEUED": "To send"}.get(delivery.get("status"), "Not sent")


class MessageView(dict):
    """A stored message for the page: each content cut at ``DISPLAY_LIMIT`` characters (the page
    links the whole as a download) and JSON or XML indented, the segments the channel's transform
    changed, each destination's content labelled by whether it was sent, and each attempt marked
    with the replay it came from (``replays``: the message's replay times)."""

    def __init__(self, message: dict, replays: list[str] | None = None) -> None:
        super().__init__(message)
        self.cut = {}
        replays = replays or []
        for key in ("raw", "transformed"):
            self[key] = self._shown(key, message.get(key))
        self["destinations"] = [{**d, "sent": self._shown(f"sent/{d['name']}", d.get("sent")),
                                 "response": self._shown(f"response/{d['name']}", d.get("response")),
                                 "sent_label": sent_label(d),
                                 "attempts": [{**a, "response": a["response"][:DISPLAY_LIMIT]
                                               if a.get("response") else a.get("response"),
                                               "replay": replay_of(a.get("at"), replays)}
                                              for a in d.get("attempts", [])]}
                                for d in message.get("destinations", [])]
        self["replays"] = len(replays)
        raw, transformed = message.get("raw"), message.get("transformed")
        self["changes"] = None
        self.setdefault("content_hidden", None)
        self.setdefault("filtered_by", None)
        if looks_like_hl7(raw) and looks_like_hl7(transformed) and raw != transformed:
            self["changes"] = [change._asdict() for change in segment_changes(raw[:DISPLAY_LIMIT],
                                                                              transformed[:DISPLAY_LIMIT])]
        self["cut"] = self.cut

    def _shown(self, key: str, text):
        """Cut at ``DISPLAY_LIMIT``; indented (JSON, XML) when whole."""
        shown = self._cut(key, text)
        return shown if key in self.cut else pretty(shown)

    def _cut(self, key: str, text):
        if text is None or len(text) <= DISPLAY_LIMIT:
            return text
        self.cut[key] = len(text)
        return text[:DISPLAY_LIMIT]


def actions_for(state: str) -> list[str]:
    return {"started": ["pause", "stop"], "paused": ["start", "stop"], "stopped": ["start"],
            "failed": ["start", "stop"]}.get(state, [])


def parse_form(request, lists: bool = False) -> dict:
    """The POSTed form: ``{key: first value}``, or ``{key: [values]}`` with ``lists`` (a page of
    ticked boxes: up to ``MAX_PER_PAGE`` ids and a few more fields)."""
    raw = request.content.getvalue() if request.content is not None else b""
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_PER_PAGE + 10)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "the form could not be read") from None
    return parsed if lists else {key: values[0] for key, values in parsed.items()}


def one(request, key: str) -> str:
    values = (request.args or {}).get(key.encode())
    return values[0].decode("utf-8", "replace").strip() if values else ""


def form_values(request) -> dict[str, str]:
    return {key: one(request, key) for key in ("channel", *FORM_KEYS, "offset", "per_page")}


# The paths under each route that its handlers answer, by method ({channel} and {id} are filled
# in): the roles test (tests/e2e/test_users_e2e.py) walks them, and fails for a handler without them.
EXAMPLES = {
    "channels": {"GET": ["", "{channel}"], "POST": [f"{{channel}}/{action}" for action in ACTIONS]},
    "messages": {"GET": ["", "{id}", *(f"{{id}}/{part}" for part in DOWNLOADS)],
                 "POST": ["{id}/replay", *BULK]},
    "search": {"GET": [""]},
    "report": {"GET": ["", "csv"]},
    "login": {"GET": [""], "POST": [""]},
    "logout": {"GET": [""], "POST": [""]},
}


class Route(resource.Resource):
    """One top-level path; the rest of the path is handed to ``Dashboard.<name>_<METHOD>``."""

    isLeaf = True

    def __init__(self, dashboard: Dashboard, name: str) -> None:
        super().__init__()
        self.dashboard, self.name = dashboard, name

    def render(self, request):
        request.dashboard_started = time.perf_counter()
        method = "GET" if request.method == b"HEAD" else request.method.decode("ascii", "replace")
        segments = [part.decode("utf-8", "replace") for part in request.postpath if part]
        handler = getattr(self.dashboard, f"{self.name}_{method}", None)
        dashboard = self.dashboard
        if self.name != "login" and not getattr(request, "who", None):
            dashboard.send(request, Redirect("/login"))     # screened already: defence in depth
            return server.NOT_DONE_YET
        if handler is None or len(segments) > 2 or (self.name in ("login", "logout", "search") and segments) \
                or (self.name == "report" and len(segments) > 1):
            d = defer.fail(ApiError(404 if segments else 405, "no such page"))
        else:
            d = defer.maybeDeferred(handler, request, *segments)
        d.addCallbacks(lambda answer: dashboard.send(request, answer), lambda failure: dashboard.fail(request, failure))
        d.addErrback(lambda failure: log.failure("dashboard: could not answer", failure))
        return server.NOT_DONE_YET


class Favicon(resource.Resource):
    """``/favicon.ico``: open (a browser asks for it without the session cookie's help on some
    pages) and empty, 204, so a signed-in view never logs a 401 for it."""

    isLeaf = True

    def render_GET(self, request):
        request.setResponseCode(204)
        return b""

    render_HEAD = render_GET


class Static(resource.Resource):
    isLeaf = True

    def __init__(self, dashboard: Dashboard) -> None:
        super().__init__()
        self.dashboard = dashboard

    def render_GET(self, request):
        name = request.postpath[0] if len(request.postpath) == 1 else b""
        if name not in self.dashboard.static:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"not found"
        kind, body = self.dashboard.static[name]
        request.setHeader(b"Content-Type", kind)
        return body

    render_HEAD = render_GET
