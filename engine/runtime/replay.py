"""Replay: process stored messages again, from their raw content, through the channel's filters
and transforms *as they are on disk now*, and deliver the outcome as new attempts on the same
message (DESIGN §3.6, ``switchboard replay`` and ``POST /api/replay``).

The daemon does the work (the CLI asks through the admin API), in this order:

1. **Select** (a thread): explicit ids, or a channel with optional status / since / until, in
   message-id order -- the order the messages were received in, which is the order they go out
   again.  At most ``MAX_MESSAGES`` per request.
2. **Skip** what must not be touched, each with its reason: a message not processed yet
   (RECEIVED: its first processing is still coming), one still QUEUED for a destination being
   replayed (it is on its way; replaying would put it in the line twice), one whose content was
   pruned, one of a channel the daemon does not run.
3. **Rebuild** the channel's pipeline from disk (a thread): ``load_config`` with the running
   plugins' connector schemas, fresh ``Templates`` (so edited template files are read), a new
   ``ChannelPipeline``.  A problem in config.toml or in the replayed channel's own file refuses
   the replay with every such problem; another channel's broken file does not matter here.
   Connectors are the running ones: a changed destination *list* needs a restart first.
4. **Audit** the request (who, the selection, the ids) and wait for that row to commit.
5. **Process** in chunks of ``CHUNK`` messages: read them (a thread), then run each through the
   pipeline under ``task.cooperate`` -- a few milliseconds of work per reactor turn, so live
   traffic's ACKs and sends go on in between -- and store each outcome with
   ``store_replay.replay_result`` (which keeps the earlier failure in the history).  When a write
   commits its deliveries are pushed to the running queues; commits fire in write order, so a
   destination gets the replayed messages in id order.  The next chunk starts once this chunk's
   writes are committed, which bounds what is in memory.

``destination``: replay to that one destination; the message's other deliveries are untouched.
Replays run one at a time (a lock): two overlapping selections would otherwise race on a message.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from engine.core.contracts import EventKind
from engine.core.message import Message
from engine.core.pipeline import FILTERED, QUEUED
from engine.store.sqlite.replay import delivery_rows
from engine.store.sqlite.schema import normalize_status, to_iso
from engine.core.units import parse_time_bound

log = Logger(namespace="switchboard.replay")

MAX_MESSAGES = 100_000
CHUNK = 200
KEYS = frozenset({"ids", "channel", "status", "since", "until", "destination", "dry_run"})


class ReplayError(Exception):
    """A replay refused as a whole: HTTP-like ``code``, one sentence, optional list of problems."""

    def __init__(self, code: int, reason: str, problems: list[str] | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.problems = code, reason, list(problems or [])


@dataclass(frozen=True)
class Selection:
    ids: tuple[int, ...] | None = None
    channel: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    destination: str | None = None
    dry_run: bool = False

    @classmethod
    def parse(cls, data) -> "Selection":
        """From the JSON body of ``POST /api/replay``; ``ReplayError(400)`` says what is wrong."""
        if not isinstance(data, dict):
            raise ReplayError(400, "the body must be a JSON object")
        unknown = sorted(set(data) - KEYS)
        if unknown:
            raise ReplayError(400, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
        ids, channel = data.get("ids"), data.get("channel")
        if (ids is None) == (channel is None):
            raise ReplayError(400, "give either ids or a channel")
        values = {}
        if ids is not None:
            if (not isinstance(ids, list) or not ids
                    or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids)):
                raise ReplayError(400, "ids must be a non-empty list of message ids")
            if any(data.get(key) is not None for key in ("status", "since", "until")):
                raise ReplayError(400, "status, since and until go with a channel, not with ids")
            values["ids"] = tuple(ids)
        else:
            values["channel"] = _text(data, "channel")
        try:
            if data.get("status") is not None:
                values["status"] = normalize_status(_text(data, "status"))
            for key in ("since", "until"):
                if data.get(key) is not None:
                    values[key] = parse_time_bound(_text(data, key))
        except ValueError as error:
            raise ReplayError(400, str(error)) from None
        if data.get("destination") is not None:
            values["destination"] = _text(data, "destination")
        dry_run = data.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise ReplayError(400, "dry_run must be true or false")
        return cls(dry_run=dry_run, **values)

    def describe(self) -> dict:
        """The selection for the audit log and the answer (PHI-free: names, statuses, times)."""
        data = {"channel": self.channel, "status": self.status, "since": to_iso(self.since),
                "until": to_iso(self.until), "destination": self.destination}
        if self.ids is not None:
            data["ids_given"] = len(self.ids)
        return {key: value for key, value in data.items() if value is not None}


def _text(data: dict, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ReplayError(400, f"{key} must be a non-empty string")
    return value.strip()


def _received_at(value):
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return value


class Replayer:
    def __init__(self, engine, *, chunk: int = CHUNK) -> None:
        self.engine = engine
        self.chunk = chunk
        self.lock = defer.DeferredLock()

    def replay(self, selection: Selection, who: str, audit=None) -> defer.Deferred:
        """Deferred[dict]: ``{"dry_run", "selection", "ids", "skipped": [{"id", "reason"}],
        "replayed", "statuses": {status: n}}``; fails with ``ReplayError``."""
        return self.lock.run(self._replay, selection, who, audit)

    @defer.inlineCallbacks
    def _replay(self, selection: Selection, who: str, audit):
        engine = self.engine
        if selection.channel is not None:
            if engine.config.channel(selection.channel) is None and selection.channel not in engine.channel_services:
                raise ReplayError(404, f"no channel named {selection.channel!r}")
            service = engine.channel_services.get(selection.channel)
            if service is not None and selection.destination and selection.destination not in service.queues:
                raise ReplayError(400, f"channel {selection.channel} has no destination {selection.destination!r}")
        running = {name: tuple(service.queues) for name, service in engine.channel_services.items()}
        todo, skipped = yield threads.deferToThread(self._select, selection, running)
        result = {"dry_run": selection.dry_run, "selection": selection.describe(),
                  "ids": [message_id for message_id, _channel in todo], "skipped": skipped, "replayed": 0}
        target = f"channel:{selection.channel}" if selection.channel else "messages"
        detail = {"selection": result["selection"], "ids": result["ids"], "skipped": len(skipped)}
        if selection.dry_run:
            if audit is not None:
                yield audit.record(who, "replay.dry_run", target, detail)
            return result
        pipelines = {}
        if todo:
            pipelines = yield threads.deferToThread(self._pipelines, {channel for _id, channel in todo})
        if audit is not None:
            yield audit.record(who, "replay", target, detail)
        statuses = yield self._run(todo, pipelines, selection.destination, who)
        result["replayed"] = sum(n for status, n in statuses.items() if status != "NOT STORED")
        result["statuses"] = dict(statuses)
        log.info("replay by {who}: {n} message(s) of {target} processed again, {skipped} skipped",
                 who=who, n=result["replayed"], target=target, skipped=len(skipped))
        return result

    # -- selecting --------------------------------------------------------------------------
    def _select(self, selection: Selection, running: dict) -> tuple[list[tuple[int, str]], list[dict]]:
        """In a thread: ``(todo, skipped)``, todo as ``(id, channel)`` in id order.  The store's
        candidates come page by page and only their ids and channels are kept (with 100,000
        selected, whole rows held together cost +80 MB of peak memory)."""
        store = self.engine.store
        if selection.ids is not None:
            if len(selection.ids) > MAX_MESSAGES:
                raise self._too_many()
            rows = store.replay_candidates(ids=selection.ids, limit=MAX_MESSAGES)
        else:
            rows = store.replay_candidates(channel=selection.channel, status=selection.status,
                                           since=selection.since, until=selection.until, limit=MAX_MESSAGES + 1)
        todo, skipped, seen = [], [], 0
        for row in rows:
            seen += 1
            if seen > MAX_MESSAGES:
                rows.close()  # ends the generator's read snapshot
                raise self._too_many()
            reason = self._skip_reason(row, selection.destination, running)
            if reason:
                skipped.append({"id": row["id"], "reason": reason})
            else:
                todo.append((row["id"], row["channel"]))
        if selection.ids is not None:
            found = {message_id for message_id, _ in todo} | {row["id"] for row in skipped}
            missing = sorted(set(selection.ids) - found)
            if missing:
                raise ReplayError(404, f"no message with id {', '.join(map(str, missing[:20]))}")
        return todo, skipped

    @staticmethod
    def _too_many() -> ReplayError:
        return ReplayError(400, f"the selection holds more than {MAX_MESSAGES} messages; narrow it "
                                "(since/until, status)")

    @staticmethod
    def _skip_reason(row: dict, destination: str | None, running: dict) -> str | None:
        """``running``: {channel: its destination names}, taken in the reactor before the select."""
        queues = running.get(row["channel"])
        if queues is None:
            return f"channel {row['channel']} is not running in the daemon"
        if destination is not None and destination not in queues:
            return f"channel {row['channel']} has no destination {destination}"
        if row["status"] == "RECEIVED":
            return "not processed yet"
        if row["pruned"]:
            return "its content was pruned"
        targets = [destination] if destination else list(queues)
        queued = [name for name in targets if row["deliveries"].get(name) == QUEUED]
        if queued:
            return f"still queued for {', '.join(queued)}"
        return None

    # -- the channel as it is on disk -------------------------------------------------------
    def _pipelines(self, channels: set[str]) -> dict:
        """In a thread: {channel: (ChannelPipeline, ChannelConfig)} built from the files on disk."""
        from engine.runtime.assembly import build_templates, compile_channel
        from engine.runtime.reload_plan import load_lenient

        engine = self.engine
        config, problems, bad_files = load_lenient(engine.config.path, engine.registry)
        if config is None:  # config.toml itself has a problem
            raise ReplayError(409, "the configuration on disk has problems; fix them and replay again",
                              [str(problem) for problem in problems])
        templates = build_templates(config, engine.registry)
        built = {}
        for name in sorted(channels):
            channel_config = config.channel(name)
            running_file = Path(engine.channel_services[name].config.file).resolve()
            if channel_config is None and running_file in bad_files:  # other files' problems do not matter
                raise ReplayError(409, f"channel {name}'s file on disk has problems; fix them and replay again",
                                  [str(problem) for problem in problems
                                   if (Path(engine.config.path).resolve().parent / problem.file).resolve()
                                   == running_file])
            if channel_config is None:
                raise ReplayError(409, f"channel {name} is no longer in the configuration on disk")
            running = sorted(engine.channel_services[name].queues)
            on_disk = sorted(d.name for d in channel_config.destinations)
            if running != on_disk:
                raise ReplayError(409, f"channel {name}'s destinations on disk ({', '.join(on_disk) or 'none'}) "
                                       f"are not the running ones ({', '.join(running) or 'none'}); restart the "
                                       "daemon to pick them up, then replay")
            compiled = compile_channel(channel_config, engine.registry, templates)
            if compiled.pipeline is None:
                raise ReplayError(409, f"channel {name} does not build from the files on disk",
                                  [f"{key}: {reason}" for key, reason in compiled.problems])
            built[name] = (compiled.pipeline, channel_config)
        return built

    # -- processing -------------------------------------------------------------------------
    @defer.inlineCallbacks
    def _run(self, todo: list[tuple[int, str]], pipelines: dict, destination: str | None, who: str):
        statuses: Counter = Counter()
        store = self.engine.store
        for start in range(0, len(todo), self.chunk):
            ids = [message_id for message_id, _channel in todo[start:start + self.chunk]]
            messages = yield threads.deferToThread(lambda ids=ids: [store.get_message(i) for i in ids])
            writes: list[defer.Deferred] = []

            def work(messages=messages, writes=writes):
                for message in messages:
                    if message is None or message.get("raw") is None:
                        statuses["NOT STORED"] += 1
                        continue
                    writes.append(self._one(message, pipelines[message["channel"]], destination, who, statuses))
                    yield None

            yield task.cooperate(work()).whenDone()
            yield defer.DeferredList(writes)
        return statuses

    def _one(self, row: dict, built, destination: str | None, who: str, statuses: Counter) -> defer.Deferred:
        pipeline, channel_config = built
        engine, message_id, meta = self.engine, row["id"], row.get("meta") or {}
        try:
            message = Message(row["raw"], channel_config.inbound, id=message_id, channel=channel_config.name,
                              received_at=_received_at(row.get("received_at")))
            outcome = pipeline.safe_run(message, meta)   # a plugin's bug becomes this message's ERROR
            plans = [plan for plan in outcome.destinations if destination is None or plan.name == destination]
            rows = delivery_rows([{"destination": p.name, "status": p.status, "body": p.body, "error": p.error}
                                  for p in plans])
        except Exception:
            log.failure("replay of message {id} failed before it was stored", id=message_id)
            statuses["NOT STORED"] += 1
            return defer.succeed(None)
        d = engine.store.record_replay(message_id, filtered=outcome.status == FILTERED, transformed=outcome.transformed,
                                       error=outcome.error, rows=rows, destination=destination, by=who)

        def stored(result):
            status, delivery_ids = result
            engine.channels[channel_config.name].announce(message_id, outcome, delivery_ids, meta, plans=plans)
            engine.events.emit(EventKind.REPLAYED, channel_config.name, message_id, reason=f"by {who}")
            statuses[status] += 1

        def failed(failure):
            log.error("replay of message {id} not stored: {error}", id=message_id, error=failure.getErrorMessage())
            statuses["NOT STORED"] += 1

        return d.addCallbacks(stored, failed)
