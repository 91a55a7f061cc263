"""The message store: SQLite behind one writer thread with group commit.

Why one writer (DESIGN §2): SQLite takes one writer at a time and the cost of a commit is one
fsync (~0.16 ms here) whatever it holds. So every write is a callable queued to a single thread
that owns the read-write connection. The thread blocks on its queue, then takes *everything* that
accumulated meanwhile and runs it in one ``BEGIN IMMEDIATE ... COMMIT``, each write in its own
SAVEPOINT so one failing write is rolled back alone. Only after COMMIT returns are the writes'
Deferreds fired, all of them in one ``reactor.callFromThread``: "ACKed means stored". No timer:
while one commit fsyncs, the next batch forms by itself, so a lone caller pays one fsync per
write and many callers share them ("flush on the next tick, not on a timer").

If a batch cannot commit (disk full, I/O error, read-only file, busy, or SQLite rolled the whole
transaction back after SQLITE_FULL/IOERR inside a write) every write of the batch fails with
``StoreError``; nothing uncommitted is ever reported as stored, and nothing is retried as if it
had succeeded. The thread carries on with the next batch, so the daemon recovers by itself once
the fault clears.

Reads never go through the writer: each thread gets its own read-only connection (WAL readers do
not block the writer), so the CLI can use ``Store.open_readonly(path)`` while the daemon runs.

Measured with ``bench/store_bench.py`` on this machine (2 cores, fsync ~0.16 ms, 1.1 KB ADT^A08,
dedupe on, 2 metadata fields; numbers in the bench's output):
    64 concurrent callers:            ~31,000 put_received/s (~190 writes per commit)
    1 caller, put -> wait -> put:      ~3,300 put_received/s (~0.30 ms each: one fsync + overhead)
    stored size, full pipeline:        ~2.3 KB per message (raw 1.1 KB + transformed 0.5 KB)
Writes use the sqlite3 connection directly, not sqlite-utils' ``table.insert``: measured here,
``Table.insert`` costs ~110 µs per row (it introspects the table on every call) against ~6 µs
for a prepared ``INSERT``, which would cap ingest near 9,000 rows/s on the writer thread alone.
sqlite-utils builds the schema (``store_schema.py``).
"""

from __future__ import annotations

import hashlib
import queue
import sqlite3
import threading
import time
from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.logger import Logger

from . import store_queries as q
from .store_schema import (  # noqa: F401 - DEDUPE_SQL, IDEMPOTENCY_SQL re-exported for tests
    DEDUPE_SQL,
    DELIVERY_STATUSES,
    IDEMPOTENCY_SQL,
    MESSAGE_STATUSES,
    StoreError,
    derive_status,
    connect_reader,
    connect_writer,
    iso_utc,
    migrate,
    normalize_status,
    to_iso,
)

__all__ = ["Store", "StoreError", "derive_status", "MESSAGE_STATUSES", "DELIVERY_STATUSES"]

log = Logger()
_STOP = object()


def _op_error(exc: Exception) -> Exception:
    """SQLite errors become StoreError (error code and SQLite's text, which never holds bound
    values, so no message content); other exceptions (bad arguments) pass through as they are."""
    if isinstance(exc, sqlite3.Error):
        err = StoreError(f"store write failed: {getattr(exc, 'sqlite_errorname', '')} {exc}")
        err.__cause__ = exc
        return err
    return exc


class Store:
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
        self.stats = {"commits": 0, "batches": 0, "ops": 0, "failed_batches": 0, "max_batch": 0}
        self._writer = writer
        self._accepting = writer
        self._close_waiters: list[defer.Deferred] = []
        self._closed = False
        self._before_commit: Callable[[sqlite3.Connection], None] | None = None  # test hook
        if not writer:
            self._reader()  # fail now, with a clear StoreError, if the store is missing or old
            return
        if reactor is None:
            from twisted.internet import reactor  # late: let the application pick its reactor
        self._reactor = reactor
        try:
            self._conn = connect_writer(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store ({exc.sqlite_errorname})") from exc
        try:
            migrate(self._conn)
            self._next_id = self._conn.execute("SELECT coalesce(max(id), 0) + 1 FROM messages").fetchone()[0]
        except BaseException:
            self._conn.close()
            raise
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    @classmethod
    def open_readonly(cls, path) -> "Store":
        return cls(path, writer=False)

    def _now(self) -> str:
        return iso_utc(self._clock())

    # --- the writer ---------------------------------------------------------------------------

    def write(self, fn: Callable[..., Any], *args) -> defer.Deferred:
        """Queue ``fn(conn, *args)`` to run in the writer thread inside the next transaction.
        The Deferred fires with its return value once that transaction has committed, or fails
        with the exception it raised (SQLite errors as StoreError), or with StoreError if the
        transaction could not commit."""
        if not self._accepting:
            return defer.fail(StoreError("the store is closed to writes"))
        d = defer.Deferred()
        self._queue.put((fn, args, d))
        return d

    def _run(self) -> None:
        get, get_nowait, empty = self._queue.get, self._queue.get_nowait, queue.Empty
        stopping = False
        while not stopping:
            batch = [get()]
            while True:
                try:
                    batch.append(get_nowait())
                except empty:
                    break
            ops = [item for item in batch if item is not _STOP]
            stopping = len(ops) != len(batch)
            if ops:
                try:
                    results, failure = self._commit(ops)
                except BaseException as exc:  # a bug here must not kill the only writer
                    results, failure = [(d, False, exc) for _, _, d in ops], exc
                self._reactor.callFromThread(self._fire, results, failure, len(ops))
        self._finish()

    def _commit(self, ops: list) -> tuple[list, Exception | None]:
        """Run one batch in one transaction. Returns (results, batch_failure)."""
        conn = self._conn
        self.stats["batches"] += 1
        self.stats["ops"] += len(ops)
        self.stats["max_batch"] = max(self.stats["max_batch"], len(ops))
        results: list = []
        failure: Exception | None = None
        try:
            if conn.in_transaction:  # left over from a rollback that itself failed
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            failure = self._batch_error("begin", exc)
        if failure is None:
            for fn, args, d in ops:
                opened = False
                try:
                    conn.execute("SAVEPOINT op")
                    opened = True
                    value = fn(conn, *args)
                    conn.execute("RELEASE op")
                except Exception as exc:
                    if not self._undo(conn, opened):
                        failure = self._batch_error("write", exc)
                        break
                    results.append((d, False, _op_error(exc)))
                else:
                    results.append((d, True, value))
        if failure is None:
            try:
                if self._before_commit is not None:
                    self._before_commit(conn)
                conn.execute("COMMIT")
                self.stats["commits"] += 1
            except Exception as exc:
                failure = self._batch_error("commit", exc)
        if failure is not None:
            self.stats["failed_batches"] += 1
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # retried before the next BEGIN
            results = [(d, False, failure) for _, _, d in ops]
        return results, failure

    @staticmethod
    def _undo(conn: sqlite3.Connection, opened: bool) -> bool:
        """Roll back one failed write; False when the whole transaction is lost (SQLite rolls
        it all back after SQLITE_FULL, IOERR, BUSY or NOMEM) or the rollback itself failed."""
        if opened:
            try:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            except sqlite3.Error:
                return False
        return conn.in_transaction

    @staticmethod
    def _batch_error(stage: str, exc: BaseException) -> StoreError:
        code = getattr(exc, "sqlite_errorname", type(exc).__name__)
        err = StoreError(f"store {stage} failed ({code}); the batch was not stored")
        err.__cause__ = exc
        return err

    def _fire(self, results: list, failure: Exception | None, size: int) -> None:
        """In the reactor: fire a whole batch's Deferreds (one callFromThread per batch)."""
        if failure is not None:
            log.error("store batch of {size} writes not stored: {reason}", size=size, reason=str(failure))
        for d, ok, value in results:
            if ok:
                d.callback(value)
            else:
                d.errback(value)

    def _finish(self) -> None:
        """In the writer thread, after the last batch: checkpoint and close the connection."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # a reader in another process holds the WAL: it is checkpointed next time
        self._conn.close()
        self._reactor.callFromThread(self._closed_now)

    def _closed_now(self) -> None:
        self._close_readers()
        self._closed = True
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)

    def close(self) -> defer.Deferred:
        """Refuse new writes, commit what is pending, stop the writer, checkpoint, close."""
        if not self._writer or self._closed:
            self._close_readers()
            self._closed = True
            return defer.succeed(None)
        d = defer.Deferred()
        self._close_waiters.append(d)
        if self._accepting:
            self._accepting = False
            self._queue.put(_STOP)
        return d

    # --- writes -------------------------------------------------------------------------------

    def put_received(
        self,
        channel: str,
        raw: str,
        *,
        type: str = "",
        control_id: str = "",
        sender: str = "",
        inbound: str = "hl7",
        meta: dict | None = None,
        dedupe_seconds: float = 0,
        idempotency_key: str | None = None,
    ) -> defer.Deferred:
        """Store a received message (status RECEIVED). Fires with ``(id, duplicate)``.

        A duplicate stores nothing and returns the earlier message's id: same bytes on the same
        channel within ``dedupe_seconds`` (when > 0), or the same ``idempotency_key`` on the same
        channel at any age (a key is the client's explicit word, so it does not expire with the
        byte window)."""
        if not self._accepting:  # before reserve_id: a read-only or closed store has no ids
            return defer.fail(StoreError("the store is closed to writes"))
        meta_rows = [(str(k), str(v)) for k, v in (meta or {}).items()]
        return self.write(
            self._put_received,
            channel, raw, type, control_id, sender, inbound, meta_rows,
            float(dedupe_seconds), idempotency_key, self.reserve_id(),
        )

    def reserve_id(self) -> int:
        """Hand out the next message id in the reactor thread, before the message is stored.

        The channel runs its pipeline (templates see ``id``) before the one write that stores the
        message together with its outcome (``put_processed``): one commit per message instead of
        two.  Ids come from one counter and the single writer inserts them in the order they were
        reserved; an id reserved for a duplicate is simply never used."""
        message_id = self._next_id
        self._next_id += 1
        return message_id

    def put_processed(self, channel: str, raw: str, *, message_id: int, status: str, transformed=None,
                      error=None, deliveries: Iterable[dict] = (), type: str = "", control_id: str = "",
                      sender: str = "", inbound: str = "hl7", meta: dict | None = None,
                      dedupe_seconds: float = 0, idempotency_key: str | None = None) -> defer.Deferred:
        """``put_received`` and ``set_message_result`` as ONE write (one fsync before the ACK).

        Fires with ``(id, duplicate, status, {destination: delivery id})``; a duplicate stores
        nothing and fires ``(earlier id, True, None, {})``."""
        meta_rows = [(str(k), str(v)) for k, v in (meta or {}).items()]
        rows = [(str(d["destination"]), normalize_status(d.get("status", "QUEUED"), DELIVERY_STATUSES),
                 d.get("body"), d.get("error")) for d in deliveries]
        put_args = (channel, raw, type, control_id, sender, inbound, meta_rows, float(dedupe_seconds),
                    idempotency_key, message_id)
        return self.write(self._put_processed, put_args, normalize_status(status), transformed, error, rows)

    def _put_processed(self, conn, put_args, status, transformed, error, rows):
        message_id, duplicate = self._put_received(conn, *put_args)
        if duplicate:
            return message_id, True, None, {}
        status, ids = self._set_message_result(conn, message_id, status, transformed, error, rows)
        return message_id, False, status, ids

    def _put_received(self, conn, channel, raw, type_, control_id, sender, inbound, meta_rows,
                      dedupe_seconds, idempotency_key, message_id=None):
        try:
            digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()
        except UnicodeEncodeError:
            raise StoreError("message text is not valid Unicode; not stored") from None
        now = self._clock()
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
        message_id = conn.execute(
            "INSERT INTO messages (id, channel, received_at, status, type, control_id, sender,"
            " inbound, idempotency_key, sha256, raw) VALUES (?, ?, ?, 'RECEIVED', ?, ?, ?, ?, ?, ?, ?)",
            (message_id, channel, iso_utc(now), type_, control_id, sender, inbound, idempotency_key,
             digest, raw),
        ).lastrowid
        if meta_rows:
            conn.executemany(
                "INSERT INTO metadata (message_id, key, value) VALUES (?, ?, ?)",
                [(message_id, k, v) for k, v in meta_rows],
            )
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
        return self.write(self._set_message_result, id, status, transformed, error, rows)

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
        return self.write(
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
        return self._rederive(conn, message_id)

    @staticmethod
    def _rederive(conn, message_id: int) -> str:
        status, error = conn.execute(
            "SELECT status, error FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        statuses = [r[0] for r in conn.execute(
            "SELECT status FROM deliveries WHERE message_id = ?", (message_id,)
        ).fetchall()]
        derived = derive_status(statuses, filtered=status == "FILTERED", error=error is not None)
        if derived != status:
            conn.execute("UPDATE messages SET status = ? WHERE id = ?", (derived, message_id))
        return derived

    def add_event(self, kind: str, *, channel: str | None = None, message_id: int | None = None,
                  detail: str = "") -> defer.Deferred:
        """Record an engine event (ids and reasons only, never content). Fires with its id."""
        return self.write(self._add_event, kind, channel, message_id, detail)

    def _add_event(self, conn, kind, channel, message_id, detail):
        return conn.execute(
            "INSERT INTO events (at, channel, message_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
            (self._now(), channel, message_id, kind, detail),
        ).lastrowid

    def mark_file(self, channel: str, sha256: str, name: str, status: str, messages: int = 0) -> defer.Deferred:
        """Record that a file source finished a file (``done``: every message committed, or
        ``error``: refused), by content hash; ``file_seen`` finds it. Fires with the row id."""
        return self.write(self._mark_file, channel, sha256, name, status, int(messages))

    def _mark_file(self, conn, channel, sha256, name, status, messages):
        return conn.execute(
            "INSERT INTO source_files (channel, sha256, name, status, messages, done_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (channel, sha256, name, status, messages, self._now()),
        ).lastrowid

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

    def _close_readers(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._local = threading.local()

    def search(self, channel=None, status=None, since=None, until=None, type=None,
               control_id=None, meta: dict | None = None, limit=100, offset=0) -> list[dict]:
        """Message summaries matching every given filter, newest first (``messages --json``)."""
        return q.search(self._reader(), channel=channel, status=status, since=since, until=until,
                        type=type, control_id=control_id, meta=meta, limit=limit, offset=offset)

    def search_plan(self, **filters) -> list[str]:
        """SQLite's query plan for ``search(**filters)``: to check a search uses an index."""
        sql, params = q.search_sql(**filters)
        return self.explain(sql, params)

    def explain(self, sql: str, params=()) -> list[str]:
        return [r[3] for r in self._reader().execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]

    def get_message(self, id: int) -> dict | None:
        """Summary plus raw, transformed, error and destinations (``show --json``)."""
        return q.get_message(self._reader(), id)

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

    def replay_candidates(self, **selection) -> list[dict]:
        """What a replay selects, in id order; see ``store_queries.replay_candidates``."""
        return q.replay_candidates(self._reader(), **selection)
