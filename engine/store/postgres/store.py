"""The message store on PostgreSQL: the SQLite store's interface and logic on psycopg 3.

``PgStore`` is the SQLite ``Store`` with its connections swapped: every write still goes through
the one writer thread and its group commit (``sqlite/writer.py``: everything pending in one
``BEGIN ... COMMIT``, each write (or run of ingest writes) in a SAVEPOINT, the Deferreds fired
only after COMMIT returns, so an ACK still means committed), now on one PostgreSQL connection;
reads go to a ``psycopg_pool`` pool. The SQL of every concern is the shared modules'
(``sqlite/queries.py``, ``replay.py``, ``audit.py``, ``report.py``, ``put_many.py`` and the write
methods of ``sqlite/store.py``), run through ``connection.py``'s translation; what differs on
PostgreSQL lives beside this module: the schema (``schema.py``), the full-text index (``text.py``)
and how pruning clears content (``retention.py``).

Durability is the server's: the store relies on ``synchronous_commit = on`` and ``fsync = on``
(the defaults); docs/two-nodes.md lists the settings.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import psycopg
from psycopg_pool import ConnectionPool
from twisted.internet import defer

from engine.store.postgres import leases as pg_leases
from engine.store.postgres import retention as pg_retention
from engine.store.postgres import text as pg_text
from engine.store.postgres.connection import PgConnection, PooledReader, _reason, connect
from engine.store.postgres.schema import ID_BLOCK, check_version, migrate
from engine.store.sqlite import queries as q
from engine.store.sqlite import stats as stats_sql
from engine.store.sqlite.retention import BATCH
from engine.store.sqlite.schema import FTS_INSERT_SQL, StoreError, from_iso, to_iso
from engine.store.sqlite.store import Store

POOL_SIZE = 4
# How long a read waits for a pooled connection (the pool's default is 30 s): some reads run in the
# reactor; after a wait that ends on a server that refuses connections, reads fail at once until a
# lease round reaches it again (PooledReader).
POOL_WAIT = 3.0


class PgStore(Store):
    """The store on PostgreSQL. ``PgStore(url)`` runs the writer and migrates the schema;
    ``PgStore.open_readonly(url)`` only reads."""

    _db_errors = (psycopg.Error,)
    _begin_sql = "BEGIN"

    def __init__(self, url: str, reactor=None, *, writer: bool = True, clock: Callable[[], float] = time.time,
                 pool_size: int = POOL_SIZE):
        self.url = self.path = url
        self._clock = clock
        self._init_writer_state()
        self._writer = writer
        self._pool = None
        self._lease_conn = None
        self.fences: dict = {}        # (channel, destination) -> (resource, node, token): cluster.py
        self._suspects: set[int] = set()   # deliveries a lost holder may have sent: flagged when recorded
        self._suspects_lock = threading.Lock()
        self._id_end = 0
        self._spare_block: int | None = None
        self._fetching_block = False
        probe = connect(url, connect_timeout=10)  # StoreError with a sentence if the server refuses
        try:
            if writer:
                migrate(probe)
            else:
                check_version(probe)
        except psycopg.Error as exc:
            raise StoreError(f"cannot prepare the PostgreSQL store ({_reason(exc)})") from None
        finally:
            probe.close()
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, name="switchboard-read",
                                    kwargs={"autocommit": True}, check=ConnectionPool.check_connection,
                                    timeout=POOL_WAIT)
        self._readers_view = PooledReader(self._pool)
        if not writer:
            return
        if reactor is None:
            from twisted.internet import reactor  # late: let the application pick its reactor
        conn = PgConnection(url)
        try:
            pg_text.catch_up(conn)
            self._next_id = self._id_end = 0  # the first reserve_id takes a block
            last = conn.execute("SELECT received_at FROM messages ORDER BY id DESC LIMIT 1").fetchone()
            self._last_received = from_iso(last[0]) if last else 0.0
        except BaseException:
            conn.close()
            self._pool.close()
            raise
        self._start_writer(conn, reactor)

    @classmethod
    def open_readonly(cls, url) -> "PgStore":
        return cls(url, writer=False, pool_size=2)

    # --- ids: blocks of a sequence, so several nodes never pick the same id ---------------------

    def reserve_id(self) -> int:
        """The next message id, from this node's current block of ``ID_BLOCK`` ids (a sequence
        hands the blocks out). The next block is fetched in a thread while this one lasts, so the
        reactor waits on the server only when a burst outruns that fetch."""
        if not self._writer:
            raise StoreError("the store is read-only: it has no writer")
        if self._next_id >= self._id_end:
            start = self._spare_block if self._spare_block is not None else self._fetch_block_now()
            self._spare_block = None
            self._next_id, self._id_end = start, start + ID_BLOCK
        if self._spare_block is None and not self._fetching_block and self._id_end - self._next_id <= ID_BLOCK // 2:
            self._prefetch_block()
        message_id = self._next_id
        self._next_id += 1
        return message_id

    def _fetch_block_now(self) -> int:
        try:
            return self._readers_view.execute("SELECT nextval('message_id_blocks')").fetchone()[0]
        except psycopg.Error:
            # The server is away: the message's own write fails the same way (the sender gets AE).
            # An id past the last block keeps reserve_id from raising in the source's path.
            return max(self._id_end, 1)

    def _prefetch_block(self) -> None:
        from twisted.internet import threads

        self._fetching_block = True

        def got(start):
            self._fetching_block = False
            self._spare_block = start

        def failed(_failure):
            self._fetching_block = False

        d = threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                      lambda: self._readers_view.execute("SELECT nextval('message_id_blocks')")
                                      .fetchone()[0])
        d.addCallbacks(got, failed)

    # --- several nodes (engine/runtime/cluster.py) ----------------------------------------------

    def lease_tick(self, node: str, resources: list[str], lease_seconds: float):
        """In a thread: heartbeat and take/renew/give up leases (``leases.tick``)."""
        try:
            if self._lease_conn is None or self._lease_conn.closed or self._lease_conn.broken:
                self._lease_conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            held = pg_leases.tick(self._lease_conn, node, resources, lease_seconds)
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                self._readers_view.unreachable = _reason(exc)
            raise StoreError(f"lease round failed ({_reason(exc)})") from None
        self._readers_view.unreachable = None
        return held

    def release_leases(self, node: str) -> None:
        try:
            if self._lease_conn is not None and not self._lease_conn.closed:
                pg_leases.release(self._lease_conn, node)
        except psycopg.Error:
            pass  # they expire by themselves

    def nodes(self) -> list[dict]:
        """Every node, its last heartbeat and what it holds (``switchboard nodes``)."""
        with self._pool.connection() as conn:
            return pg_leases.nodes(conn)

    def suspect(self, delivery_ids) -> None:
        """After a takeover: these deliveries may have been sent by the node that held their queue
        before (sent, not yet recorded): their next attempt is recorded ``possible_duplicate``."""
        with self._suspects_lock:
            self._suspects.update(delivery_ids)

    def _flag_suspects(self, conn, delivery_ids) -> None:
        with self._suspects_lock:
            flagged = [d for d in delivery_ids if d in self._suspects]
        if flagged:
            conn.execute("UPDATE attempts SET possible_duplicate = 1 WHERE id IN (SELECT max(id) FROM attempts"
                         " WHERE delivery_id = ANY(?) GROUP BY delivery_id)", (flagged,))
            with self._suspects_lock:
                self._suspects.difference_update(flagged)

    def _record_attempt(self, conn, delivery_id, *args):
        if self.fences:
            row = conn.execute("SELECT channel, destination FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is not None:
                pg_leases.check_fence(conn, self.fences, [tuple(row)])
        status = super()._record_attempt(conn, delivery_id, *args)
        if self._suspects:
            self._flag_suspects(conn, [delivery_id])
        return status

    def _record_sent(self, conn, sent):
        if self.fences and sent:
            pairs = conn.execute("SELECT DISTINCT channel, destination FROM deliveries WHERE id = ANY(?)",
                                 ([d for d, _ in sent],)).fetchall()
            pg_leases.check_fence(conn, self.fences, [tuple(p) for p in pairs])
        result = super()._record_sent(conn, sent)
        if self._suspects:
            self._flag_suspects(conn, [d for d, _ in sent])
        return result

    # --- writes: the SQLite store's, with the words of a message cut here -----------------------

    def stage(self, sql: str, params: tuple) -> None:
        if sql == FTS_INSERT_SQL:
            message_id, raw = params
            sql, params = pg_text.TEXT_INSERT_SQL, (message_id, pg_text.words(raw))
        super().stage(sql, params)

    def _staged_ran(self, conn, staged) -> None:
        top = max((params[0] for sql, params in staged if sql == pg_text.TEXT_INSERT_SQL), default=0)
        if top:
            conn.execute(pg_text.WATERMARK_SQL, (top, top))

    def prune_batch(self, cutoff, *, include_errors: bool = False, limit: int = BATCH,
                    vacuum_pages: int = 0) -> defer.Deferred:
        try:
            cutoff = to_iso(cutoff)
        except (TypeError, ValueError) as exc:
            return defer.fail(exc)
        return self._write(lambda conn: pg_retention.prune_batch(conn, cutoff, include_errors=include_errors,
                                                                 limit=int(limit)))

    @staticmethod
    def prune_offline(url, cutoff, include_errors: bool = False, now: float | None = None) -> tuple[int, int, int]:
        return pg_retention.prune_offline(str(url), to_iso(cutoff), bool(include_errors),
                                          time.time() if now is None else now)

    def _close_writer_connection(self) -> None:
        self._conn.close()
        if self._lease_conn is not None:
            self._lease_conn.close()

    # --- reads ----------------------------------------------------------------------------------

    def _reader(self):
        if self._closed:
            raise StoreError("the store is closed")
        return self._readers_view

    def _close_readers(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def search(self, **filters) -> list[dict]:
        return q.search(self._reader(), text_index=pg_text, **filters)

    def count_matches(self, cap: int = 10_000, **filters) -> int:
        return stats_sql.count_matches(self._reader(), cap, text_index=pg_text, **filters)

    def search_plan(self, **filters) -> list[str]:
        sql, params = q.search_sql(**filters, text_index=pg_text)
        return self.explain(sql, params)

    def explain(self, sql: str, params=()) -> list[str]:
        return [row[0] for row in self._reader().execute("EXPLAIN " + sql, params).fetchall()]
