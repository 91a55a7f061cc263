"""The store's single writer thread with group commit (the machinery behind every store write).

Why one writer (DESIGN §2): SQLite takes one writer at a time, and a commit costs an fsync
(~0.16 ms here) plus the pages it writes, so sharing a commit among many writes is the win.
Every write is a callable queued to a single thread that owns the read-write connection. The
thread blocks on its queue, then takes *everything* that accumulated meanwhile and runs it in
one ``BEGIN IMMEDIATE ... COMMIT``, each write in its own SAVEPOINT so one failing write is
rolled back alone. A run of consecutive writes of one kind whose method is marked ``batched_by``
(the ingest write, ``put_processed``) is instead done by that kind's batch method in one call
and one SAVEPOINT: its lookups in one query, its rows in one statement per table, which on
PostgreSQL saves a server round trip per statement. If the batch method raises, the run is rolled
back to its savepoint and done again one write per savepoint, so a bad write still fails alone.
Only after COMMIT returns are the writes' Deferreds fired, all of them in one
``reactor.callFromThread``: "ACKed means stored". No timer: while one commit fsyncs, the next
batch forms by itself, so a lone caller pays one fsync per write and many callers share them
("flush on the next tick, not on a timer").

If a batch cannot commit (disk full, I/O error, read-only file, busy, or SQLite rolled the whole
transaction back after SQLITE_FULL/IOERR inside a write) every write of the batch fails with
``StoreError``; nothing uncommitted is ever reported as stored, and nothing is retried as if it
had succeeded. The thread carries on with the next batch, so the daemon recovers by itself once
the fault clears.

Kept apart from ``store.py`` (which holds what is written and read) so each stays short. It is a
base class rather than an object the Store owns so that ``Store._write``, ``Store.stats`` and the
tests' ``_before_commit`` hook live on the store itself. ``_write`` is private: code outside
``engine/store/`` calls the store's named methods, never SQL of its own.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from engine.store.sqlite.schema import StoreError

log = Logger(namespace="engine.store.sqlite.store")  # the namespace it had in store.py
_STOP = object()
MAX_RUN = 256  # writes per batch-method call: bounds its statements and the redo if it fails


def batched_by(method_name: str) -> Callable:
    """Mark a write method as one whose consecutive writes the writer may do together with the
    writer's method ``method_name(conn, [args, ...]) -> [result, ...]`` (one result per write, in
    order, each what the write method would have returned for those args)."""
    def mark(fn: Callable) -> Callable:
        fn.batched_by = method_name
        return fn
    return mark


class _TransactionLost(Exception):
    """A failed run's rollback could not save the transaction (its cause says why)."""


def _op_error(exc: Exception, db_errors: tuple = (sqlite3.Error,)) -> Exception:
    """Database errors become StoreError (error code and the database's text, which never holds
    bound values, so no message content); other exceptions (bad arguments) pass through as they are."""
    if isinstance(exc, db_errors):
        code = getattr(exc, "sqlite_errorname", None) or getattr(exc, "sqlstate", None) or ""
        err = StoreError(f"store write failed: {code} {exc}")
        err.__cause__ = exc
        return err
    return exc


class GroupCommitWriter:
    """One thread owning the read-write connection; ``_write`` queues work to it.

    A subclass calls ``_start_writer(conn, reactor)`` once its connection is migrated, and may
    override ``_on_closed`` (run in the reactor once the connection is closed)."""

    _writer = False      # True once a subclass has a read-write connection
    _db_errors: tuple = (sqlite3.Error,)  # what the connection raises (PostgreSQL: psycopg.Error)
    _begin_sql = "BEGIN IMMEDIATE"
    hold_rows = 256      # staged statements are run once this many are held...
    hold_seconds = 0.5   # ...or the oldest has waited this long
    _accepting = False
    _closed = False

    def _init_writer_state(self) -> None:
        self.stats = {"commits": 0, "batches": 0, "ops": 0, "failed_batches": 0, "max_batch": 0, "flushes": 0,
                      "runs": 0, "run_writes": 0, "run_fallbacks": 0}
        self._close_waiters: list[defer.Deferred] = []
        self._before_commit: Callable[[sqlite3.Connection], None] | None = None  # test hook
        self._op_staged: list[tuple[str, tuple]] = []  # the running write's staged statements
        self._held: list[tuple[str, tuple]] = []  # staged by committed writes, not yet run
        self._held_since: float | None = None
        self._flush_requested = False

    def _start_writer(self, conn: sqlite3.Connection, reactor) -> None:
        self._conn = conn
        self._reactor = reactor
        self._accepting = True
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def _write(self, fn: Callable[..., Any], *args) -> defer.Deferred:
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
            wait = self._held_wait()
            try:
                batch = [get() if wait is None else get(timeout=wait)]
            except empty:  # held statements are due and no write came to carry them
                self._flush_held()
                continue
            while True:
                try:
                    batch.append(get_nowait())
                except empty:
                    break
            ops = [item for item in batch if item is not _STOP]
            stopping = len(ops) != len(batch)
            if ops:
                try:
                    results, failure = self._commit(ops, flush=stopping)
                except BaseException as exc:  # a bug here must not kill the only writer
                    results, failure = [(d, False, exc) for _, _, d in ops], exc
                self._reactor.callFromThread(self._fire, results, failure, len(ops))
        if self._held:
            self._flush_held()
        self._finish()

    def _commit(self, ops: list, flush: bool = False) -> tuple[list, Exception | None]:
        """Run one batch in one transaction. Returns (results, batch_failure)."""
        conn = self._conn
        if ops:
            self.stats["batches"] += 1
            self.stats["ops"] += len(ops)
            self.stats["max_batch"] = max(self.stats["max_batch"], len(ops))
        results: list = []
        failure: Exception | None = None
        try:
            if conn.in_transaction:  # left over from a rollback that itself failed
                conn.execute("ROLLBACK")
            conn.execute(self._begin_sql)
        except self._db_errors as exc:
            failure = self._batch_error("begin", exc)
        staged: list[tuple[str, tuple]] = []
        start = 0
        while failure is None and start < len(ops):
            end = self._run_end(ops, start)
            if end - start > 1:
                try:
                    done = self._write_run(conn, ops[start:end], results, staged)
                except _TransactionLost as lost:
                    failure = self._batch_error("write", lost.__cause__)
                    break
                if done:
                    start = end
                    continue
            for fn, args, d in ops[start:end]:  # one write at a time (a failed run falls back here)
                opened = False
                self._op_staged = []
                try:
                    conn.execute("SAVEPOINT op")
                    opened = True
                    value = fn(conn, *args)
                    conn.execute("RELEASE op")
                except Exception as exc:
                    if not self._undo(conn, opened):
                        failure = self._batch_error("write", exc)
                        break
                    results.append((d, False, _op_error(exc, self._db_errors)))
                else:
                    staged += self._op_staged
                    results.append((d, True, value))
            start = end
        held = self._held + staged
        since = self._held_since if self._held else time.monotonic()
        flushing = bool(held) and (flush or self._flush_requested or len(held) >= self.hold_rows
                                   or time.monotonic() - since >= self.hold_seconds)
        if failure is None and flushing:
            try:
                self._run_staged(conn, held)
                self._staged_ran(conn, held)
            except Exception as exc:
                failure = self._batch_error("write", exc)
        if failure is None:
            try:
                if self._before_commit is not None:
                    self._before_commit(conn)
                conn.execute("COMMIT")
                self.stats["commits" if ops else "flushes"] += 1
            except Exception as exc:
                failure = self._batch_error("commit", exc)
        if failure is None:  # what this batch staged is now held (or ran): keep it for later
            self._held_since = since
            self._held = [] if flushing else held
            self._flush_requested = False
        if failure is not None:  # earlier batches' held statements stay held; this batch's go
            self.stats["failed_batches"] += 1
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except self._db_errors:
                pass  # retried before the next BEGIN
            results = [(d, False, failure) for _, _, d in ops]
        return results, failure

    def stage(self, sql: str, params: tuple) -> None:
        """From inside a write: run ``sql`` with ``params`` later, in a batch's transaction after
        its writes, once ``hold_rows`` statements are staged or the oldest has waited
        ``hold_seconds`` (or on ``flush_staged`` / close); dropped if the write itself fails.

        For derived data that is far cheaper written in bulk: the full-text index. FTS5 writes
        a new index segment at every SAVEPOINT and every COMMIT that follows an index insert,
        and each segment has a fixed cost plus a cost per distinct word, so indexing each message
        inside its own write, or even once per commit, costs several times what one statement for
        a few hundred messages does (figures: bench/README.md, "Store"). The subclass records in ``_staged_ran`` (same transaction) how far the derived data
        goes, so a crash between a message's commit and its indexing is repaired at the next
        start. Staged statements run in order, consecutive ones with the same SQL as one
        ``executemany``; if they fail, the batch fails like a failed COMMIT and they stay held."""
        self._op_staged.append((sql, params))

    def flush_staged(self) -> defer.Deferred:
        """Run every held statement in the next commit; fires once it has committed."""
        return self._write(self._request_flush)

    def _request_flush(self, conn) -> None:
        self._flush_requested = True

    def _staged_ran(self, conn: sqlite3.Connection, staged: list[tuple[str, tuple]]) -> None:
        """In the flushing transaction, after the held statements ran (a subclass hook)."""

    def _held_wait(self) -> float | None:
        """Seconds until the held statements are due; None when nothing is held."""
        if not self._held:
            return None
        return max(0.0, self._held_since + self.hold_seconds - time.monotonic())

    def _flush_held(self) -> None:
        """Run the held statements in a transaction of their own (no write came to carry them).
        On failure they stay held and are tried again ``hold_seconds`` later, not in a loop."""
        try:
            _results, failure = self._commit([], flush=True)
        except Exception as exc:  # a bug here must not kill the only writer
            failure = exc
        if failure is not None:
            log.error("store: held writes not run yet: {reason}", reason=str(failure))
            self._held_since = time.monotonic()

    @staticmethod
    def _run_staged(conn: sqlite3.Connection, staged: list[tuple[str, tuple]]) -> None:
        start = 0
        while start < len(staged):
            sql, end = staged[start][0], start + 1
            while end < len(staged) and staged[end][0] == sql:
                end += 1
            conn.executemany(sql, [params for _sql, params in staged[start:end]])
            start = end

    def _undo(self, conn: sqlite3.Connection, opened: bool, savepoint: str = "op") -> bool:
        """Roll back one failed write (or run); False when the whole transaction is lost (SQLite
        rolls it all back after SQLITE_FULL, IOERR, BUSY or NOMEM) or the rollback itself failed."""
        if opened:
            try:
                conn.execute(f"ROLLBACK TO {savepoint}")
                conn.execute(f"RELEASE {savepoint}")
            except self._db_errors:
                return False
        return conn.in_transaction

    @staticmethod
    def _run_end(ops: list, start: int) -> int:
        """Where the run of writes beginning at ``start`` ends: consecutive writes marked
        ``batched_by`` the same batch method, at most ``MAX_RUN`` of them; a lone write otherwise."""
        kind = getattr(ops[start][0], "batched_by", None)
        end = start + 1
        if kind is None:
            return end
        limit = min(len(ops), start + MAX_RUN)
        while end < limit and getattr(ops[end][0], "batched_by", None) == kind:
            end += 1
        return end

    def _write_run(self, conn, run: list, results: list, staged: list) -> bool:
        """Do a run of writes of one kind with their batch method, inside one savepoint. False
        when the batch method raised: the run is rolled back to that savepoint and the caller
        does its writes one at a time, so a bad write fails alone. Raises ``_TransactionLost``
        when the rollback cannot save the transaction."""
        batch = getattr(self, run[0][0].batched_by)
        opened = False
        self._op_staged = []
        try:
            conn.execute("SAVEPOINT run")
            opened = True
            values = batch(conn, [args for _fn, args, _d in run])
            if len(values) != len(run):
                raise RuntimeError(f"{run[0][0].batched_by} gave {len(values)} results for {len(run)} writes")
            conn.execute("RELEASE run")
        except Exception as exc:
            if not self._undo(conn, opened, "run"):
                raise _TransactionLost() from exc
            self.stats["run_fallbacks"] += 1
            return False
        staged += self._op_staged
        results.extend((d, True, value) for (_fn, _args, d), value in zip(run, values))
        self.stats["runs"] += 1
        self.stats["run_writes"] += len(run)
        return True

    @staticmethod
    def _batch_error(stage: str, exc: BaseException) -> StoreError:
        code = getattr(exc, "sqlite_errorname", None) or getattr(exc, "sqlstate", None) or type(exc).__name__
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
        self._close_writer_connection()
        self._reactor.callFromThread(self._closed_now)

    def _close_writer_connection(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # a reader in another process holds the WAL: it is checkpointed next time
        self._conn.close()

    def _closed_now(self) -> None:
        self._on_closed()
        self._closed = True
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)

    def _on_closed(self) -> None:
        """In the reactor, once the writer's connection is closed (a subclass closes readers)."""

    def close(self) -> defer.Deferred:
        """Refuse new writes, commit what is pending, stop the writer, checkpoint, close."""
        if not self._writer or self._closed:
            self._on_closed()
            self._closed = True
            return defer.succeed(None)
        d = defer.Deferred()
        self._close_waiters.append(d)
        if self._accepting:
            self._accepting = False
            self._queue.put(_STOP)
        return d
