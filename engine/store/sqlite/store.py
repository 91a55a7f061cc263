"""The message store: SQLite behind one writer thread with group commit.

``Store`` is the one place callers reach the store: every write is a method that queues its SQL
to the single writer thread (``writer.py``), every read a method on a per-thread read-only
connection. The SQL of each concern lives in its own module beside this one, each a set of
functions taking a connection: ``queries`` (searches, one message, counts, queues), ``text``
(full-text search), ``replay``, ``retention``, ``audit`` and ``report``; ``schema`` holds the
tables, their migrations and the status words. No SQL lives outside this package, so a second
backend (PostgreSQL) implements these methods and nothing else changes.

Reads never go through the writer: WAL readers do not block the writer, so the CLI can use
``Store.open_readonly(path)`` while the daemon runs.

Why the writes look as they do: a commit costs what it writes to the WAL, one page per index leaf
it touches. Time-ordered keys share leaves and random ones do not, so duplicates are looked up by
(channel, control id, sha256), control ids mostly growing, never by a sha256-first index; and a
message and its processing outcome are stored by one INSERT (``put_processed``), so the status
indexes see no INSERT-then-UPDATE churn and the ACK waits for one commit. When a group commit holds
several ``put_processed`` writes in a row, the writer does them together (``put_many.py``: one
duplicate lookup per kind, one statement per table) with the same result for each. Writes use the sqlite3
connection directly, not sqlite-utils' ``Table.insert``, which introspects the table on every call
and commits on its own (``with conn:``), which would break the group commit; sqlite-utils only
builds the schema. SQLite's own auto-checkpoint (inside a COMMIT) is kept: a background
checkpointer's I/O on the same disk made tail latency worse and let the WAL grow.

Full-text search: each message's words are indexed a little after its commit, in bulk
(``stage``), rather than inside its own write. ``received_at`` never goes back in id order
(``_insert_message``), which lets a text search use a time window as an id range.
Measured figures behind these choices: bench/README.md, "Store".
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from typing import Callable, Iterable

from twisted.internet import defer

from engine.store.sqlite import audit as audit_sql
from engine.store.sqlite import put_many
from engine.store.sqlite import queries as q
from engine.store.sqlite import replay as replay_sql
from engine.store.sqlite import report as report_sql
from engine.store.sqlite import retention as retention_sql
from engine.store.sqlite import stats as stats_sql
from engine.store.sqlite import text as store_text
from engine.store.sqlite.schema import (
    DEDUPE_SQL,
    DELIVERY_STATUSES,
    FTS_INSERT_SQL,
    IDEMPOTENCY_SQL,
    MESSAGE_STATUSES,
    StoreError,
    derive_status,
    connect_reader,
    connect_writer,
    from_iso,
    iso_utc,
    migrate,
    normalize_status,
    to_iso,
)
from engine.store.sqlite.writer import GroupCommitWriter, batched_by

__all__ = ["Store", "StoreError", "ChainCheck", "derive_status", "MESSAGE_STATUSES", "DELIVERY_STATUSES"]

ChainCheck = audit_sql.ChainCheck


class Store(GroupCommitWriter):
    """The message store. ``Store(path)`` runs the writer thread and migrates the schema;
    ``Store.open_readonly(path)`` (or ``writer=False``) only reads and never migrates.

    Async methods return Deferreds fired in the reactor; call them from the reactor thread.
    Read methods are synchronous and thread-safe (one read connection per thread)."""

    def __init__(self, path, reactor=None, *, writer: bool = True, clock: Callable[[], float] = time.time):
        self.path = str(path)
        self._clock = clock
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._init_writer_state()
        self._writer = writer
        if not writer:
            self._reader()  # fail now, with a clear StoreError, if the store is missing or old
            return
        if reactor is None:
            from twisted.internet import reactor  # late: let the application pick its reactor
        try:
            conn = connect_writer(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store ({exc.sqlite_errorname})") from exc
        try:
            migrate(conn)
            store_text.catch_up(conn)  # messages a crash left unindexed (text.py)
            self._next_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM messages").fetchone()[0]
            last = conn.execute("SELECT received_at FROM messages ORDER BY id DESC LIMIT 1").fetchone()
            self._last_received = from_iso(last[0]) if last else 0.0
        except BaseException:
            conn.close()
            raise
        self._start_writer(conn, reactor)

    @classmethod
    def open_readonly(cls, path) -> "Store":
        return cls(path, writer=False)

    # --- integrity (issue 15): a damaged file stops the start instead of taking ACKs ----------

    @staticmethod
    def quick_check(path) -> list[str]:
        """``PRAGMA quick_check`` on the file at ``path`` (read-only; the WAL is read too): [] when it
        is sound, else SQLite's findings (page numbers, table and index names, row ids: never
        content).  Reads every page once: about 2 s per GB from the page cache (docs/reliability-and-security.md)."""
        return _pragma_check(path, "quick_check")

    @staticmethod
    def integrity_check(path) -> list[str]:
        """``PRAGMA integrity_check``: quick_check plus every index checked against its table."""
        return _pragma_check(path, "integrity_check")

    @staticmethod
    def recovery_steps(path) -> str:
        """What a person does with a damaged store: SQLite's ``.recover`` into a new file."""
        return damaged_store_steps(path)

    def _now(self) -> str:
        return iso_utc(self._clock())

    # --- writes -------------------------------------------------------------------------------

    def _staged_ran(self, conn, staged) -> None:
        """The writer just indexed the held messages: record how far the index goes."""
        top = max((params[0] for sql, params in staged if sql == FTS_INSERT_SQL), default=0)
        if top:
            conn.execute(store_text.WATERMARK_SQL, (top, top))

    def reserve_id(self) -> int:
        """Hand out the next message id in the reactor thread, before the message is stored.

        The channel runs its pipeline (templates see ``id``) before the one write that stores the
        message together with its outcome (``put_processed``): one commit per message instead of
        two.  Ids come from one counter and the single writer inserts them in the order they were
        reserved; an id reserved for a duplicate is simply never used. A read-only store has no
        ids to give (StoreError)."""
        if not self._writer:
            raise StoreError("the store is read-only: it has no writer")
        message_id = self._next_id
        self._next_id += 1
        return message_id

    def put_processed(self, channel: str, raw: str, *, message_id: int, status: str, transformed=None,
                      error=None, deliveries: Iterable[dict] = (), type: str = "", control_id: str = "",
                      sender: str = "", inbound: str = "hl7", meta: dict | None = None,
                      dedupe_seconds: float = 0, idempotency_key: str | None = None,
                      original: bytes | None = None) -> defer.Deferred:
        """Store a received message together with its processing outcome, as ONE write (one fsync
        before the ACK): the message row with its final ``status``, ``transformed`` and ``error``,
        its metadata, and one delivery row per destination (dicts with ``destination``, ``status``
        (default QUEUED), ``body``, ``error``). ``message_id`` comes from ``reserve_id``.
        ``status="RECEIVED"`` stores it unprocessed (``unprocessed`` lists it; ``processed_at``
        stays empty). ``original``: the bytes ``raw`` was decoded from, only when decoding was
        lossy (RELIABILITY 17).

        A duplicate stores nothing: same bytes on the same channel within ``dedupe_seconds``
        (when > 0), or the same ``idempotency_key`` on the same channel at any age (a key is the
        client's explicit word, so it does not expire with the byte window). ``control_id`` must
        come from the content (MSH-10, or '' when there is none): the duplicate lookup is keyed
        on it.

        Fires with ``(id, duplicate, status, {destination: delivery id})``; a duplicate fires
        ``(earlier id, True, None, {})``."""
        meta_rows = [(str(k), str(v)) for k, v in (meta or {}).items()]
        rows = [(str(d["destination"]), normalize_status(d.get("status", "QUEUED"), DELIVERY_STATUSES),
                 d.get("body"), d.get("error")) for d in deliveries]
        put_args = (channel, raw, type, control_id, sender, inbound, meta_rows, float(dedupe_seconds),
                    idempotency_key, message_id)
        return self._write(self._put_processed, put_args, normalize_status(status), transformed, error, rows, original)

    @batched_by("_put_processed_many")
    def _put_processed(self, conn, put_args, status, transformed, error, rows, original=None):
        """One INSERT with the final status (no INSERT-then-UPDATE churn on the status indexes),
        then one INSERT per delivery whose ids come back from ``lastrowid`` (no read-back).
        A run of these in one group commit is done by ``_put_processed_many`` instead."""
        message_id, duplicate = self._insert_message(conn, *put_args, status, transformed, error, original)
        if duplicate:
            return message_id, True, None, {}
        now, channel = self._now(), put_args[0]
        ids = {}
        for dest, dstatus, body, derr in rows:
            ids[dest] = conn.execute(
                put_many.DELIVERY_INSERT_SQL,
                put_many.delivery_row(message_id, channel, dest, dstatus, body, derr, transformed, now),
            ).lastrowid
        return message_id, False, status, ids

    def _put_processed_many(self, conn, writes):
        """The writer's batch method for a run of ``_put_processed`` writes (``put_many.py``):
        the run's duplicate lookups in one query per kind, its rows in one statement per table."""
        return put_many.put_many(conn, writes, self._stamp, self.stage, self._now())

    def _stamp(self) -> float:
        """The next message's ``received_at``: it never goes back in id order, even if the wall
        clock steps back, since a text search turns its time window into an id range on that
        promise (queries.py)."""
        self._last_received = max(self._clock(), self._last_received)
        return self._last_received

    def _insert_message(self, conn, channel, raw, type_, control_id, sender, inbound, meta_rows,
                        dedupe_seconds, idempotency_key, message_id, status, transformed, error, original):
        digest = put_many.digest_of(raw)
        now = self._stamp()
        if idempotency_key is not None:
            row = conn.execute(IDEMPOTENCY_SQL, (channel, idempotency_key)).fetchone()
            if row:
                return row[0], True
        if dedupe_seconds > 0:
            row = conn.execute(
                DEDUPE_SQL, (channel, control_id, digest, iso_utc(now - dedupe_seconds))
            ).fetchone()
            if row:
                return row[0], True
        conn.execute(put_many.MESSAGE_INSERT_SQL,
                     put_many.message_row(message_id, channel, iso_utc(now), status, type_, control_id, sender,
                                          inbound, idempotency_key, digest, raw, transformed, error, original))
        if meta_rows:
            conn.executemany(put_many.METADATA_INSERT_SQL, [(message_id, k, v) for k, v in meta_rows])
        self.stage(FTS_INSERT_SQL, (message_id, raw))  # indexed in the same commit, once per batch
        return message_id, False

    def set_message_result(
        self,
        id: int,
        *,
        status: str | None,
        transformed: str | None = None,
        error: str | None = None,
        deliveries: Iterable[dict] = (),
    ) -> defer.Deferred:
        """Record a channel's processing outcome in one write: the message's status, transform
        output and error, and one delivery row per destination (dicts with ``destination``,
        ``status`` (default QUEUED), ``body``, ``error``). Processing the same message again
        (recovery, replay) updates its delivery rows instead of adding more; their attempt history
        stays. ``status=None`` derives it with :func:`derive_status`. Fires with ``(status,
        {destination: delivery id})`` so the caller can feed its queues without a read."""
        try:
            rows = [
                (
                    str(d["destination"]),
                    normalize_status(d.get("status", "QUEUED"), DELIVERY_STATUSES),
                    d.get("body"),
                    d.get("error"),
                )
                for d in deliveries
            ]
            if status is None:
                status = derive_status([r[1] for r in rows], error=error is not None)
            status = normalize_status(status)
        except (KeyError, ValueError) as exc:
            return defer.fail(ValueError(f"bad processing result: {exc}"))
        return self._write(self._set_message_result, id, status, transformed, error, rows)

    def _set_message_result(self, conn, message_id, status, transformed, error, rows):
        now = self._now()
        row = conn.execute("SELECT channel FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise StoreError(f"no message {message_id}")
        conn.execute(
            "UPDATE messages SET status = ?, transformed = ?, error = ?, processed_at = ?"
            " WHERE id = ?",
            (status, transformed, error, now, message_id),
        )
        conn.executemany(
            "INSERT INTO deliveries (message_id, channel, destination, status, error,"
            " body_is_transformed, body, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (message_id, destination) DO UPDATE SET status = excluded.status,"
            " error = excluded.error, body_is_transformed = excluded.body_is_transformed,"
            " body = excluded.body, response = NULL, next_attempt_at = NULL,"
            " updated_at = excluded.updated_at",
            [
                (message_id, row[0], dest, dstatus, derr, 1, None, now)
                if body is not None and body == transformed
                else (message_id, row[0], dest, dstatus, derr, 0, body, now)
                for dest, dstatus, body, derr in rows
            ],
        )
        ids = dict(conn.execute(
            "SELECT destination, id FROM deliveries WHERE message_id = ?", (message_id,)).fetchall())
        return status, ids

    def record_attempt(
        self,
        delivery_id: int,
        *,
        ok: bool,
        error: str | None = None,
        response: str | None = None,
        final_status: str | None = None,
        next_attempt_at=None,
        possible_duplicate: bool = False,
    ) -> defer.Deferred:
        """Record one send attempt and its outcome. ``final_status`` is the delivery's new status
        (SENT, ERROR, ...); None keeps it QUEUED for a retry, or makes it SENT when ``ok``.
        ``next_attempt_at``: datetime, ISO string or epoch seconds. The message's status is then
        re-derived from all its deliveries; the Deferred fires with that status."""
        try:
            final = None if final_status is None else normalize_status(final_status, DELIVERY_STATUSES)
            retry_at = to_iso(next_attempt_at)
        except (TypeError, ValueError) as exc:
            return defer.fail(exc)
        return self._write(
            self._record_attempt, delivery_id, bool(ok), error, response, final, retry_at,
            bool(possible_duplicate),
        )

    def _record_attempt(self, conn, delivery_id, ok, error, response, final, retry_at, dup):
        now = self._now()
        row = conn.execute(
            "SELECT message_id, status FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no delivery {delivery_id}")
        message_id, current = row
        new_status = final or ("SENT" if ok else current)
        conn.execute(
            "INSERT INTO attempts (delivery_id, at, ok, possible_duplicate, error, response)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (delivery_id, now, int(ok), int(dup), error, response),
        )
        conn.execute(
            "UPDATE deliveries SET status = ?, attempts = attempts + 1, error = ?, response = ?,"
            " next_attempt_at = ?, updated_at = ? WHERE id = ?",
            (new_status, error, response, retry_at, now, delivery_id),
        )
        return self._rederive(conn, [message_id])[message_id]

    def record_sent(self, sent: list[tuple[int, str | None]]) -> defer.Deferred:
        """Record many successful attempts ``(delivery_id, response)`` in one write: what
        ``record_attempt(id, ok=True, response=..., final_status="SENT")`` does for each, set at
        a time.  A busy destination queue records its SENTs once per reactor turn this way: one
        write per SENT (six statements, a savepoint, a Deferred) was a third of the writer's work
        on the end-to-end benchmark."""
        return self._write(self._record_sent, list(sent))

    def _record_sent(self, conn, sent):
        now = self._now()
        for start in range(0, len(sent), 500):  # well under SQLite's bound-parameter limit
            chunk = sent[start:start + 500]
            conn.executemany(
                "INSERT INTO attempts (delivery_id, at, ok, possible_duplicate, error, response)"
                " VALUES (?, ?, 1, 0, NULL, ?)", [(delivery_id, now, response) for delivery_id, response in chunk])
            conn.executemany(
                "UPDATE deliveries SET status = 'SENT', attempts = attempts + 1, error = NULL, response = ?,"
                " next_attempt_at = NULL, updated_at = ? WHERE id = ?",
                [(response, now, delivery_id) for delivery_id, response in chunk])
            marks = ",".join("?" * len(chunk))
            message_ids = [row[0] for row in conn.execute(
                f"SELECT DISTINCT message_id FROM deliveries WHERE id IN ({marks})", [d for d, _ in chunk])]
            self._rederive(conn, message_ids)

    @staticmethod
    def _rederive(conn, message_ids: list[int]) -> dict[int, str]:
        """Derive each message's status from its deliveries again (two reads, one executemany
        for those that changed); ``{id: status}``."""
        if not message_ids:
            return {}
        marks = ",".join("?" * len(message_ids))
        current = {row[0]: (row[1], row[2]) for row in conn.execute(
            f"SELECT id, status, error FROM messages WHERE id IN ({marks})", message_ids)}
        statuses: dict[int, list[str]] = {}
        for message_id, status in conn.execute(
                f"SELECT message_id, status FROM deliveries WHERE message_id IN ({marks})", message_ids):
            statuses.setdefault(message_id, []).append(status)
        derived, changed = {}, []
        for message_id, (status, error) in current.items():
            derived[message_id] = derive_status(statuses.get(message_id, []), filtered=status == "FILTERED",
                                                error=error is not None)
            if derived[message_id] != status:
                changed.append((derived[message_id], message_id))
        conn.executemany("UPDATE messages SET status = ? WHERE id = ?", changed)
        return derived

    def add_event(self, kind: str, *, channel: str | None = None, message_id: int | None = None,
                  detail: str = "") -> defer.Deferred:
        """Record an engine event (ids and reasons only, never content). Fires with its id."""
        return self._write(self._add_event, kind, channel, message_id, detail)

    def _add_event(self, conn, kind, channel, message_id, detail):
        return conn.execute(
            "INSERT INTO events (at, channel, message_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
            (self._now(), channel, message_id, kind, detail),
        ).lastrowid

    def mark_file(self, channel: str, sha256: str, name: str, status: str, messages: int = 0) -> defer.Deferred:
        """Record that a file source finished a file (``done``: every message committed, or
        ``error``: refused), by content hash; ``file_seen`` finds it. Fires with the row id."""
        return self._write(self._mark_file, channel, sha256, name, status, int(messages))

    def _mark_file(self, conn, channel, sha256, name, status, messages):
        return conn.execute(
            "INSERT INTO source_files (channel, sha256, name, status, messages, done_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (channel, sha256, name, status, messages, self._now()),
        ).lastrowid

    # --- replay, audit, retention -------------------------------------------------------------

    def record_replay(self, message_id: int, *, filtered: bool, transformed: str | None, error: str | None,
                      rows: Iterable[tuple], destination: str | None = None, by: str) -> defer.Deferred:
        """Store a replay's new outcome for one message in one write, keeping the earlier outcome
        in its history and adding a ``replayed`` event naming ``by`` (see ``replay.py``).
        ``rows``: the destinations' outcomes as ``delivery_rows`` checks them; ``destination``:
        replay to that one only. Fires with ``(status, {destination: delivery id})``, or fails
        with LookupError for an unknown message."""
        return self._write(self._record_replay, message_id, bool(filtered), transformed, error, list(rows),
                           destination, by)

    def _record_replay(self, conn, message_id, filtered, transformed, error, rows, destination, by):
        return replay_sql.replay_result(conn, message_id, filtered, transformed, error, rows, destination, by,
                                        now=self._clock())

    def append_audit(self, who: str, action: str, target: str = "", detail=None) -> defer.Deferred:
        """Add one row to the audit log, chained to the newest (``audit.py``). ``detail``: JSON-able
        ids, names, counts and statuses, never message content. Fires with the row's id once it
        has committed."""
        return self._write(self._append_audit, who, action, target, audit_sql.canonical_detail(detail))

    def _append_audit(self, conn, who, action, target, detail):
        return audit_sql.append(conn, self._now(), who, action, target, detail)

    def prune_batch(self, cutoff, *, include_errors: bool = False, limit: int = retention_sql.BATCH,
                    vacuum_pages: int = retention_sql.VACUUM_PAGES) -> defer.Deferred:
        """Prune the content of up to ``limit`` messages received before ``cutoff`` (ISO string,
        datetime or epoch seconds) in one write, then give up to ``vacuum_pages`` free pages
        back (``retention.py``). Fires with how many it pruned: fewer than ``limit`` means none
        is left."""
        try:
            cutoff = to_iso(cutoff)
        except (TypeError, ValueError) as exc:
            return defer.fail(exc)
        return self._write(functools.partial(retention_sql.prune_batch, cutoff=cutoff, include_errors=include_errors,
                                             limit=int(limit), vacuum_pages=int(vacuum_pages)))

    def record_pruned(self, pruned: int, cutoff, *, by: str, include_errors: bool = False,
                      now: float | None = None) -> defer.Deferred:
        """The PHI-free ``pruned`` event of a pass that pruned ``pruned`` messages received before
        ``cutoff``, ``by`` whom (``retention``, ``cli``). Fires with the event's id."""
        try:
            cutoff = to_iso(cutoff)
        except (TypeError, ValueError) as exc:
            return defer.fail(exc)
        return self._write(retention_sql.record_pruned, int(pruned), cutoff, by, bool(include_errors),
                           self._clock() if now is None else now)

    @staticmethod
    def prune_offline(path, cutoff, include_errors: bool = False, now: float | None = None) -> tuple[int, int, int]:
        """``switchboard prune``: prune everything received before ``cutoff`` through a writer
        connection of this process's own, beside a running daemon or without one, each batch its
        own short transaction; then record the ``pruned`` event and give every free page back.
        Returns ``(pruned, bytes before, bytes after)``; raises StoreError with a sentence for the
        user (the store cannot be opened, has another schema, or is busy)."""
        return retention_sql.prune_offline(path, to_iso(cutoff), bool(include_errors),
                                           time.time() if now is None else now)

    # --- reads --------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError("the store is closed")
            conn = connect_reader(self.path)
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def close_readers(self) -> None:
        """Close this process's read connections (the CLI, once it has printed)."""
        self._close_readers()

    def _on_closed(self) -> None:
        self._close_readers()

    def _close_readers(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._local = threading.local()

    def search(self, channel=None, status=None, since=None, until=None, type=None,
               control_id=None, meta: dict | None = None, text: str | None = None,
               limit=100, offset=0, before_id: int | None = None) -> list[dict]:
        """Message summaries matching every given filter, newest first (``messages --json``);
        see ``queries.search``."""
        return q.search(self._reader(), channel=channel, status=status, since=since, until=until,
                        type=type, control_id=control_id, meta=meta, text=text, limit=limit,
                        offset=offset, before_id=before_id)

    def search_plan(self, **filters) -> list[str]:
        """SQLite's query plan for ``search(**filters)``: to check a search uses an index."""
        sql, params = q.search_sql(**filters)
        return self.explain(sql, params)

    def explain(self, sql: str, params=()) -> list[str]:
        return [r[3] for r in self._reader().execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]

    def get_message(self, id: int) -> dict | None:
        """Summary plus raw, transformed, error and destinations (``show --json``)."""
        return q.get_message(self._reader(), id)

    def get_original(self, id: int) -> bytes | None:
        """The bytes message ``id`` arrived as when they were invalid for its charset, else None."""
        return q.get_original(self._reader(), id)

    def channel_counts(self) -> dict[str, dict[str, int]]:
        return q.channel_counts(self._reader())

    def unprocessed(self, channel: str) -> list[int]:
        return q.unprocessed(self._reader(), channel)

    def queued_destinations(self) -> list[tuple[str, str]]:
        return q.queued_destinations(self._reader())

    def next_queued(self, channel: str, destination: str, limit: int = 100, after: int = 0) -> list[dict]:
        return q.next_queued(self._reader(), channel, destination, limit, after)

    def metadata_for(self, message_ids: list[int]) -> dict[int, dict[str, str]]:
        return q.metadata_for(self._reader(), message_ids)

    def file_seen(self, channel: str, sha256: str) -> dict | None:
        """The ``done`` record of a file with this content on this channel, or None."""
        return q.file_seen(self._reader(), channel, sha256)

    def recent_events(self, limit: int = 100, channel=None, message_id=None) -> list[dict]:
        return q.recent_events(self._reader(), limit, channel, message_id)

    def queue_stats(self) -> dict[tuple[str, str], dict]:
        """Depth and oldest queued time of every durable queue (metrics, alerts, the admin API)."""
        return q.queue_stats(self._reader())

    def traffic_by_minute(self, channel: str, since) -> dict[str, dict[str, int]]:
        """Per minute since ``since`` (a datetime or epoch seconds): messages received on
        ``channel`` and how many of them are SENT and ERROR (``stats.py``)."""
        return stats_sql.traffic_by_minute(self._reader(), channel, to_iso(since))

    def count_matches(self, cap: int = 10_000, **filters) -> int:
        """How many messages ``search(**filters)`` would list, counted up to ``cap`` (``stats.py``)."""
        return stats_sql.count_matches(self._reader(), cap, **filters)

    def daily_counts(self, since, channel: str | None = None) -> dict[str, dict[str, int]]:
        """Per UTC day since ``since``: received, sent, filtered, errors, queued (``stats.py``)."""
        return stats_sql.daily_counts(self._reader(), to_iso(since) if since is not None else "0000", channel)

    def replay_candidates(self, **selection):
        """What a replay selects, in id order, page by page; see ``queries.replay_candidates``."""
        return q.replay_candidates(self._reader(), **selection)

    def audit_entries(self, *, limit: int | None = None, who: str | None = None,
                      action: str | None = None) -> list[dict]:
        """Audit rows, newest first, ``detail`` decoded (``switchboard audit``)."""
        return audit_sql.entries(self._reader(), limit=limit, who=who, action=action)

    def verify_audit(self) -> ChainCheck:
        """Walk the audit log's hash chain: ``.ok``, ``.rows`` and one sentence per problem."""
        return audit_sql.verify_chain(self._reader())

    def count_prunable(self, cutoff, include_errors: bool = False) -> dict[str, int]:
        """Per status, how many messages received before ``cutoff`` still hold content (``prune
        --dry-run``); ``prunable_statuses(include_errors)`` says which of them a prune clears."""
        return retention_sql.count_prunable(self._reader(), to_iso(cutoff), bool(include_errors))

    def report(self, *, since=None, channel: str | None = None, now=None) -> dict:
        """The collections KPIs over the messages received since ``since`` (a datetime; None:
        all), on one channel or all: the dict ``switchboard report --json`` prints (``report.py``)."""
        return report_sql.build_report(self._reader(), since=since, channel=channel, now=now)


def _pragma_check(path, pragma: str) -> list[str]:
    """Run one of SQLite's own checks; a file SQLite cannot even read is one finding."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        return [f"cannot open the file ({getattr(exc, 'sqlite_errorname', None) or exc})"]
    try:
        rows = conn.execute(f"PRAGMA {pragma}(100)").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()
    findings = [line for (row,) in rows for line in str(row).splitlines() if line.strip()]
    return [] if findings == ["ok"] else [f for f in findings if f != "*** in database main ***"] or findings


def damaged_store_steps(path) -> str:
    """The recovery, as commands to type: a dump of every row SQLite can still read, loaded into a
    new file (the ``sed`` turns the dump's closing ROLLBACK, written when it met damage, into a
    COMMIT so that what was read is kept), the schema version set (a dump does not carry it), and
    the files swapped; the damaged file and its -wal are kept.  ``.recover`` salvages more where
    it works, but the sqlite3 3.40 command fails on any file with sqlite_stat1 ("SQL logic
    error"): docs/reliability-and-security.md."""
    version = _header_user_version(path)
    return (f"stop the daemon; `sqlite3 {path} .dump | sed 's/^ROLLBACK; -- due to errors$/COMMIT;/' "
            f"| sqlite3 {path}.recovered` (copies every row SQLite can still read); "
            f"`sqlite3 {path}.recovered 'PRAGMA user_version = {version}'`; "
            f"`mv {path} {path}.damaged` (with its -wal and -shm files, if any); "
            f"`mv {path}.recovered {path}`; then `switchboard check --store` and `switchboard run`")


def _header_user_version(path) -> int:
    """The schema version in the file's header (bytes 60-63 of page 1), which survives damage
    elsewhere; this Switchboard's own version when the header cannot be read."""
    from engine.store.sqlite.schema import SCHEMA_VERSION

    try:
        with open(path, "rb") as file:
            header = file.read(100)
    except OSError:
        return SCHEMA_VERSION
    if len(header) < 64 or not header.startswith(b"SQLite format 3\x00"):
        return SCHEMA_VERSION
    version = int.from_bytes(header[60:64], "big")
    return version if 0 < version <= SCHEMA_VERSION else SCHEMA_VERSION


# What a read of a damaged (or locked) store raises; the CLI turns it into one sentence.
StoreReadError = sqlite3.DatabaseError


def describe_read_error(error: sqlite3.DatabaseError) -> str:
    """One sentence for a read that SQLite refused (never a traceback): damage, or something else."""
    name = getattr(error, "sqlite_errorname", None) or type(error).__name__
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(error):
        return (f"the message store is damaged ({name}: {error}); nothing was changed. "
                "`switchboard check --store` lists what SQLite finds and the steps to recover")
    return f"the message store could not be read ({name}: {error})"
