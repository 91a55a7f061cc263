"""Retention: prune message content older than ``[store] retention`` (DESIGN §3.1), while the
daemon runs and by hand (``switchboard prune``).

Pruning clears a message's content and keeps its record: ``raw``, ``transformed``, ``original``
(the bytes kept when decoding was lossy, RELIABILITY 17), every delivery's body and response and
every attempt's response are set to NULL, its words leave the full-text index, and ``pruned = 1``.
Its id, channel, times, type, control id, status, metadata, error reasons, delivery statuses,
attempt times and outcomes, events and the audit log stay, so ``messages`` still finds it,
``status`` still counts it and ``show`` says its content was pruned.

What is never pruned on its own:

- ERROR messages are kept until resolved (replayed and sent) so someone can see what failed and
  replay it; ``include_errors`` (``prune --include-errors``) prunes them too, unless one of their
  destinations is still QUEUED.
- QUEUED and RECEIVED messages are kept, even with ``include_errors``: they are unfinished work
  (a queued delivery's body is what will be sent; a RECEIVED message is processed after a
  restart), and pruning them would lose messages that were ACKed.

Small batches: one batch (``BATCH`` messages) is one write through the store's writer, so it
commits among the ingest writes instead of holding the write lock; the daemon sends the next
batch once the last one committed, on a later reactor turn. Measured (``bench/search_bench.py``
messages, 1.1 KB HL7, 2 cores): ~35 us per message (FTS5 re-reading the words it deletes, the
row deleted and inserted again, see ``prune_batch``) and ~13 us per page given back, so a
100-message batch holds the writer ~4-5 ms: writes committed alongside it wait that long once
per batch, and pruning clears 10,000-20,000 messages/s when the writer has nothing else to do. Each
batch gives up to ``VACUUM_PAGES`` free pages back to the file system (``incremental_vacuum``:
the store is created with ``auto_vacuum=INCREMENTAL``). Pruning 20 % of a 60,000-message store
this way shrank the file by 1.1 KB per pruned message.

The daemon checks every ``interval`` seconds (the retention / 1000, between 1 s and 60 s: a
30-day window is checked every minute) and prunes until nothing older than the window is left.
The CLI writes the store with its own connection while the daemon runs: WAL and the busy
timeout make the two writers take turns, and pruning inserts no messages, so the daemon's id
counter is unaffected.
"""

from __future__ import annotations

import json
import time

from twisted.internet import defer, task
from twisted.logger import Logger

from engine.store.sqlite.schema import FTS_DELETE_SQL, iso_utc
from engine.store.sqlite.text import indexed_through

log = Logger(namespace="switchboard.retention")

BATCH = 100
VACUUM_PAGES = 256  # 1 MB a batch, ~3 ms
PRUNABLE = ("SENT", "FILTERED", "TRANSFORMED")
KEPT = ("ERROR", "QUEUED", "RECEIVED")


def statuses(include_errors: bool) -> tuple[str, ...]:
    return PRUNABLE + ("ERROR",) if include_errors else PRUNABLE


# Every column but the content, in table order (raw, transformed and original are left out, so the
# row inserted again holds NULL for them).
_KEPT_COLUMNS = ("id, channel, received_at, status, type, control_id, sender, inbound, processed_at,"
                 " idempotency_key, sha256, error")


def _candidates(conn, cutoff: str, include_errors: bool, limit: int) -> list[tuple]:
    """Up to ``limit`` prunable messages received before ``cutoff``, oldest first per status:
    their kept columns, then ``raw``. Only messages the full-text index already holds (below
    its high-water mark), so every 'delete' removes words that were added."""
    last = last_id_before(conn, cutoff)
    mark = min(indexed_through(conn), last)
    rows: list = []
    for status in statuses(include_errors):
        if len(rows) >= limit or not mark:
            break
        guard = ("" if status != "ERROR" else
                 " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id"
                 " AND d.status = 'QUEUED')")
        rows += conn.execute(
            f"SELECT {_KEPT_COLUMNS}, raw FROM messages WHERE pruned = 0 AND status = ?"
            f" AND id <= ? AND received_at < ?{guard} ORDER BY id LIMIT ?",
            (status, mark, cutoff, limit - len(rows)),
        ).fetchall()
    return rows


def last_id_before(conn, cutoff: str) -> int:
    """The id of the last message received before ``cutoff`` (0 if none): ids grow with
    received_at, so every older message has an id at most this."""
    row = conn.execute("SELECT id FROM messages WHERE received_at < ? ORDER BY received_at DESC, id DESC"
                       " LIMIT 1", (cutoff,)).fetchone()
    return row[0] if row else 0


def prune_batch(conn, cutoff: str, *, include_errors: bool = False, limit: int = BATCH,
                vacuum_pages: int = VACUUM_PAGES) -> int:
    """Prune up to ``limit`` messages received before ``cutoff`` (ISO UTC) in the caller's
    transaction; then give up to ``vacuum_pages`` free pages back. Returns how many it pruned.

    A pruned message's row is deleted and inserted again without its content rather than
    updated: SQLite rebalances a table page that a DELETE leaves under a third full (so whole
    pages come free for the vacuum), but an UPDATE that shrinks a row leaves the page as it is,
    and since new messages are appended at the end of the table, that space would never be used
    again (measured: pruning 20 % of a store by UPDATE freed no page at all). Foreign keys are
    deferred for the moment the row is away (its metadata and deliveries point at it)."""
    rows = _candidates(conn, cutoff, include_errors, limit)
    if rows:
        conn.executemany(FTS_DELETE_SQL, [(row[0], row[-1]) for row in rows if row[-1] is not None])
        ids = [row[0] for row in rows]
        marks = ",".join("?" * len(ids))
        conn.execute("PRAGMA defer_foreign_keys = ON")
        try:
            conn.execute(f"DELETE FROM messages WHERE id IN ({marks})", ids)
            conn.executemany(
                f"INSERT INTO messages ({_KEPT_COLUMNS}, pruned) VALUES ({','.join('?' * 12)}, 1)",
                [row[:-1] for row in rows])
        finally:
            conn.execute("PRAGMA defer_foreign_keys = OFF")  # the next write checks at once again
        conn.execute(f"UPDATE deliveries SET body = NULL, response = NULL WHERE message_id IN ({marks})"
                     " AND (body IS NOT NULL OR response IS NOT NULL)", ids)
        conn.execute("UPDATE attempts SET response = NULL WHERE response IS NOT NULL AND delivery_id IN"
                     f" (SELECT id FROM deliveries WHERE message_id IN ({marks}))", ids)
    vacuum(conn, vacuum_pages)
    return len(rows)


def vacuum(conn, pages: int) -> int:
    """Give up to ``pages`` free pages back to the file system; returns how many.

    One ``PRAGMA incremental_vacuum(1)`` per page: SQLite frees one page per step of that
    statement, and Python's sqlite3 steps a statement that returns no columns only once, so
    ``incremental_vacuum(N)`` from Python frees a single page (measured: ~13 us a page)."""
    free = min(int(pages), conn.execute("PRAGMA freelist_count").fetchone()[0])
    for _ in range(free):
        conn.execute("PRAGMA incremental_vacuum(1)")
    return free


def count_prunable(conn, cutoff: str, include_errors: bool = False) -> dict[str, int]:
    """Per status, how many messages received before ``cutoff`` still hold content: those a
    prune would clear and those it keeps (``--dry-run``). Index-only counts."""
    counts = {}
    last = last_id_before(conn, cutoff)
    for status in PRUNABLE + KEPT:
        counts[status] = conn.execute(
            "SELECT count(*) FROM messages WHERE pruned = 0 AND status = ? AND id <= ? AND received_at < ?",
            (status, last, cutoff),
        ).fetchone()[0]
    if include_errors and counts["ERROR"]:
        counts["ERROR_QUEUED"] = conn.execute(  # ERROR messages still queued somewhere: kept
            "SELECT count(*) FROM messages WHERE pruned = 0 AND status = 'ERROR' AND id <= ?"
            " AND received_at < ? AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id"
            " AND d.status = 'QUEUED')", (last, cutoff)).fetchone()[0]
    return counts


def record_event(conn, pruned: int, cutoff: str, by: str, include_errors: bool, now: float) -> None:
    """One PHI-free ``events`` row per pass that pruned something."""
    detail = json.dumps({"messages": pruned, "older_than": cutoff, "by": by,
                         "include_errors": include_errors}, sort_keys=True)
    conn.execute("INSERT INTO events (at, channel, message_id, kind, detail) VALUES (?, NULL, NULL, 'pruned', ?)",
                 (iso_utc(now), detail))


def check_interval(retention: float) -> float:
    return min(60.0, max(1.0, retention / 1000.0))


class Retention:
    """The daemon's pruning loop: every ``interval`` seconds, prune batches until none is left.

    ``start()`` after the store opened, ``stop()`` (a Deferred: the batch in flight commits)
    before it closes. ``retention`` <= 0 keeps everything and starts nothing."""

    def __init__(self, store, retention: float, reactor, *, batch: int = BATCH,
                 interval: float | None = None, clock=time.time) -> None:
        self.store = store
        self.retention = float(retention)
        self.reactor = reactor
        self.batch = batch
        self.interval = check_interval(self.retention) if interval is None else interval
        self.clock = clock
        self.pruned_total = 0
        self._loop: task.LoopingCall | None = None
        self._pass: defer.Deferred | None = None
        self._stopping = False

    def start(self) -> None:
        if self.retention <= 0 or self._loop is not None:
            return
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)
        log.info("retention: pruning content older than {seconds:.0f} s, checked every {interval:.0f} s",
                 seconds=self.retention, interval=self.interval)

    def _tick(self) -> defer.Deferred:
        self._pass = self.run_pass()
        return self._pass

    @defer.inlineCallbacks
    def run_pass(self):
        """Prune batch after batch (each on a later reactor turn) until a batch comes back short.
        Never fails: a store error is logged and the next check tries again."""
        pruned = 0
        if self.retention <= 0:  # "0" keeps everything
            return pruned
        cutoff = iso_utc(self.clock() - self.retention)
        try:
            while not self._stopping:
                n = yield self.store.write(lambda conn: prune_batch(conn, cutoff, limit=self.batch))
                pruned += n
                if n < self.batch:
                    break
                yield task.deferLater(self.reactor, 0, lambda: None)
            if pruned:
                yield self.store.write(record_event, pruned, cutoff, "retention", False, self.clock())
        except Exception as error:
            log.error("retention: pruning stopped after {n} message(s): {error}", n=pruned, error=str(error))
        if pruned:
            self.pruned_total += pruned
            log.info("retention: pruned the content of {n} message(s) received before {cutoff}",
                     n=pruned, cutoff=cutoff)
        return pruned

    def stop(self) -> defer.Deferred:
        """Stop checking; the Deferred fires once the batch in flight (if any) has committed."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        running = self._pass
        if running is None or running.called:
            return defer.succeed(None)
        done = defer.Deferred()
        running.addBoth(lambda result: (done.callback(None), result)[1])
        return done


# --- switchboard prune ---------------------------------------------------------------------------


def add_prune_arguments(parser) -> None:
    parser.add_argument("--older-than", metavar="DURATION",
                        help="prune messages received longer ago than this, e.g. 30d (default: [store] retention)")
    parser.add_argument("--include-errors", action="store_true",
                        help="prune ERROR messages too (QUEUED and RECEIVED ones are never pruned)")
    parser.add_argument("--dry-run", action="store_true", help="count what would be pruned; change nothing")


def prune_command(args, path) -> int:
    """``switchboard prune``: the same batches as the daemon's, through a connection of its own."""
    import sqlite3

    from engine.cli.common import open_store
    from engine.cli.common import CommandError
    from engine.store.sqlite.schema import SCHEMA_VERSION, connect_writer, user_version
    from engine.core.units import parse_duration

    config, store = open_store(path)
    store.close_readers()
    if args.older_than is not None:
        try:
            older_than = parse_duration(args.older_than)
        except ValueError as error:
            raise CommandError(str(error)) from None
        if older_than <= 0:
            raise CommandError("--older-than must be more than 0")
    else:
        older_than = config.store.retention
        if older_than <= 0:
            print("[store] retention is 0 (keep everything): nothing pruned; give --older-than to prune by hand")
            return 0
    now = time.time()
    cutoff = iso_utc(now - older_than)
    try:
        conn = connect_writer(str(config.store.path))
    except sqlite3.Error as error:
        raise CommandError(f"cannot open the store for writing ({error.sqlite_errorname})") from None
    try:
        if user_version(conn) != SCHEMA_VERSION:
            raise CommandError("the store's schema is not this Switchboard's; start the daemon once to migrate it")
        if args.dry_run:
            return _report_dry_run(count_prunable(conn, cutoff, args.include_errors), cutoff, args.include_errors)
        before = _size(conn)
        pruned = _prune_all(conn, cutoff, args.include_errors, now)
        _vacuum_all(conn)
        after = _size(conn)
    except sqlite3.Error as error:
        raise CommandError(f"the store is busy or not writable ({error.sqlite_errorname}); every batch"
                           " pruned so far is committed, the one under way was rolled back: run prune again") from None
    finally:
        conn.close()
    print(f"pruned the content of {pruned} message(s) received before {cutoff}; "
          f"store {before / 2**20:,.1f} MB -> {after / 2**20:,.1f} MB")
    return 0


def _transaction(conn, fn, *args):
    conn.execute("BEGIN IMMEDIATE")
    try:
        value = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return value


def _prune_all(conn, cutoff: str, include_errors: bool, now: float) -> int:
    """Batch after batch, each its own short transaction, so the daemon's writer gets its turns."""
    total = 0
    while True:
        n = _transaction(conn, lambda c: prune_batch(c, cutoff, include_errors=include_errors, vacuum_pages=0))
        total += n
        if n < BATCH:
            break
    if total:
        _transaction(conn, record_event, total, cutoff, "cli", include_errors, now)
    return total


def _vacuum_all(conn, pages: int = 2048) -> None:
    while _transaction(conn, vacuum, pages):
        pass


def _size(conn) -> int:
    return conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]


def _report_dry_run(counts: dict, cutoff: str, include_errors: bool) -> int:
    pruned = statuses(include_errors)
    would = sum(counts[s] for s in pruned) - counts.get("ERROR_QUEUED", 0)
    kept = {s: n for s, n in counts.items() if s not in pruned and s != "ERROR_QUEUED" and n}
    if counts.get("ERROR_QUEUED"):
        kept["ERROR (a destination still QUEUED)"] = counts["ERROR_QUEUED"]
    print(f"would prune the content of {would} message(s) received before {cutoff} (dry run: nothing changed)")
    for status in pruned:
        print(f"  {status:12} {counts[status]}")
    if kept:
        print("kept: " + ", ".join(f"{n} {s}" for s, n in kept.items()))
    return 0
