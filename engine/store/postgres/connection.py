"""PostgreSQL connections that speak the DB-API dialect the store's shared SQL modules use.

The store's read and write logic (``sqlite/queries.py``, ``replay.py``, ``audit.py``,
``report.py``, the write methods of ``sqlite/store.py``) is written in plain SQL against a
connection with ``execute(sql, params)``, ``executemany``, ``cursor.lastrowid`` and ``?``
placeholders. Rather than keep a second copy of each module, PostgreSQL gets a thin connection
that accepts the same calls:

- ``?`` placeholders become ``%s`` (the shared SQL holds no literal ``%`` or ``?``);
- an ``INSERT`` into a table with an ``id`` column gets ``RETURNING id``, which is its
  ``lastrowid`` (psycopg has none);
- a counted subquery gets the name PostgreSQL 15 requires (``FROM (SELECT ...) AS counted``);
- a handful of SQLite-only statements are mapped to their PostgreSQL meaning (``DIALECT``): the
  audit log's last handed-out id comes from its sequence, ``BEGIN IMMEDIATE`` is ``BEGIN``, and
  ``PRAGMA`` statements (WAL checkpoints, foreign-key deferral) have nothing to do here.

Translations are cached per SQL text. Errors stay psycopg's (the writer turns them into
StoreError, naming the SQLSTATE only, never a bound value).

``PgConnection`` wraps the writer's one connection. Each write (``SAVEPOINT op`` ... ``RELEASE op``)
runs in psycopg's pipeline mode: its statements go out without waiting for one another, and only
a result the write reads (a duplicate lookup) or the end of the write waits for the server; the end
syncs, so a failing statement fails its own write, never the next one. A write of one message
then waits for the server twice (its duplicate lookup, its end) instead of once per statement
(measured: 3-15 % more writes per second on this shared machine, bench/README.md "PostgreSQL").
A run of ingest writes done together (``SAVEPOINT run`` ... ``RELEASE run``, ``sqlite/put_many.py``)
rides one pipeline the same way: it waits for the server once for all its duplicate lookups, once
for its delivery ids when it has deliveries, and once at its end.
An ``INSERT`` that names its ``id`` (a message's, reserved beforehand) needs no ``RETURNING``. It also reconnects after the server or an administrator
dropped it (the next batch then starts on a fresh connection; the batch that was
cut fails with StoreError and its senders get AE). ``PooledReader`` serves the read side from a
``psycopg_pool.ConnectionPool``: a statement outside a transaction borrows a connection just for
itself; ``BEGIN`` ... ``COMMIT`` (``queries.snapshot``) keeps one for the thread until it ends.
"""

from __future__ import annotations

import re
import threading

import psycopg
from psycopg import pq

from engine.store.sqlite.schema import StoreError

# The writer's savepoints: "op" around one write, "run" around a run of writes done together.
_SAVEPOINT = frozenset({"SAVEPOINT op", "SAVEPOINT run"})
_RELEASE = frozenset({"RELEASE op", "RELEASE run"})
_ROLLBACK_TO = frozenset({"ROLLBACK TO op", "ROLLBACK TO run"})
ID_TABLES = frozenset({"messages", "deliveries", "attempts", "events", "audit", "source_files"})
_INSERT = re.compile(r"\s*INSERT\s+INTO\s+(\w+)\s*(\(\s*id\s*,)?", re.IGNORECASE)
_SKIP = object()
_UNNAMED = re.compile(r"(count\(\*\) FROM \(SELECT [^()]* LIMIT %s\))(?! AS)")  # PostgreSQL 15 names subqueries

# SQLite statements the shared modules issue, and what they mean on PostgreSQL.
DIALECT = {
    "BEGIN IMMEDIATE": "BEGIN",
    "SELECT seq FROM sqlite_sequence WHERE name = 'audit'":
        "SELECT last_value FROM audit_id_seq WHERE is_called",
}


def translate(sql: str, returning: bool, _cache: dict = {}) -> str | object:  # noqa: B006 - the cache
    key = (sql, returning)
    found = _cache.get(key)
    if found is not None:
        return found
    if sql in DIALECT:
        out = DIALECT[sql]
    elif sql.lstrip().upper().startswith("PRAGMA"):
        out = _SKIP
    else:
        out = _UNNAMED.sub(r"\1 AS counted", sql.replace("?", "%s"))
        match = _INSERT.match(sql)
        if (returning and match and match.group(1).lower() in ID_TABLES and not match.group(2)
                and "RETURNING" not in sql.upper()):
            out += " RETURNING id"
    _cache[key] = out
    return out


class Result:
    """What ``execute`` returns: the rows already fetched, and ``lastrowid``."""

    __slots__ = ("_rows", "_at", "lastrowid", "rowcount")

    def __init__(self, rows: list, lastrowid=None, rowcount: int = -1):
        self._rows, self._at, self.lastrowid, self.rowcount = rows, 0, lastrowid, rowcount

    def fetchone(self):
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list:
        rows, self._at = self._rows[self._at:], len(self._rows)
        return rows

    def fetchmany(self, size: int = 1) -> list:
        rows = self._rows[self._at:self._at + size]
        self._at += len(rows)
        return rows

    def __iter__(self):
        return iter(self.fetchall())


class LazyResult(Result):
    """A statement sent in pipeline mode: its rows are fetched (waiting for the server) only when
    read; ``lastrowid`` is known without waiting when the INSERT named its id."""

    __slots__ = ("_cur", "_named")

    def __init__(self, cur, named):
        self._rows, self._at, self.rowcount = None, 0, -1
        self._cur, self._named = cur, named

    def _fetched(self) -> list:
        if self._rows is None:
            self._rows = self._cur.fetchall()
        return self._rows

    @property
    def lastrowid(self):
        if self._named is not None:
            return self._named
        rows = self._fetched()
        return rows[0][0] if rows else None

    def fetchone(self):
        self._fetched()
        return super().fetchone()

    def fetchall(self) -> list:
        self._fetched()
        return super().fetchall()

    def fetchmany(self, size: int = 1) -> list:
        self._fetched()
        return super().fetchmany(size)


def _named_id(sql: str, params):
    match = _INSERT.match(sql)
    return params[0] if match and match.group(2) and params else None


def _run(conn: psycopg.Connection, sql: str, params, lazy: bool = False) -> Result:
    out = translate(sql, True)
    if out is _SKIP:
        return Result([])
    cur = conn.execute(out, params if params else None, prepare=None)
    named = _named_id(sql, params)
    returning = out.endswith(" RETURNING id")
    if lazy:
        return LazyResult(cur, named)
    rows = cur.fetchall() if cur.description is not None else []
    lastrowid = rows[0][0] if rows and returning else named
    return Result(rows, lastrowid, cur.rowcount)


def _run_many(conn: psycopg.Connection, sql: str, seq) -> None:
    out = translate(sql, False)
    if out is _SKIP:
        return
    params = list(seq)
    if params:
        with conn.cursor() as cur:
            cur.executemany(out, params)


def connect(url: str, **options) -> psycopg.Connection:
    """An autocommit connection (the store issues BEGIN/COMMIT itself); StoreError if refused."""
    try:
        return psycopg.connect(url, autocommit=True, **options)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the PostgreSQL store ({_reason(exc)})") from None


def _reason(exc: psycopg.Error) -> str:
    """A PostgreSQL error for a log line: its SQLSTATE or class, first line (no bound values)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.sqlstate or type(exc).__name__}: {text}" if text else (exc.sqlstate or type(exc).__name__)


# The writer's statements are prepared once and planned at every execution.  A generic plan is
# made while the store is empty, where every index costs the same: the duplicate lookup then kept
# idx_messages_channel_received and walked the channel's whole dedupe window per message as the
# table grew (2.5-3.4 ms of server CPU per message by the end of a 10,000-message run; bench/README.md,
# "A second core").  A custom plan sees the table's size and takes idx_messages_dedupe.
WRITER_OPTIONS = "-c plan_cache_mode=force_custom_plan"


class PgConnection:
    """The writer's connection, with the sqlite3 calls the writer and the write SQL use."""

    def __init__(self, url: str):
        self.url = url
        self.raw = connect(url, connect_timeout=10, options=WRITER_OPTIONS)
        self._pipe = None   # psycopg's Pipeline while a write runs

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)

    def execute(self, sql: str, params=()) -> Result:
        if self.raw.closed or self.raw.broken:
            if sql in ("ROLLBACK", "COMMIT") or sql in _RELEASE or sql in _ROLLBACK_TO:
                raise psycopg.OperationalError("the connection to the store was lost")
            # the next transaction starts on a fresh connection (psycopg's error if it cannot)
            self._pipe = None
            self.raw = psycopg.connect(self.url, autocommit=True, connect_timeout=5, options=WRITER_OPTIONS)
        if sql in _SAVEPOINT:
            self._end_pipeline(quiet=True)
            self._pipe = self.raw.pipeline()
            self._pipe.__enter__()
            self.raw.execute(sql)
            return Result([])
        if self._pipe is not None:
            if sql in _RELEASE:
                self.raw.execute(sql)
                self._end_pipeline()   # the write's first error, if any, raises here: in the write
                return Result([])
            if sql in ("ROLLBACK", "COMMIT") or sql in _ROLLBACK_TO:
                self._end_pipeline(quiet=True)
            else:
                return _run(self.raw, sql, params, lazy=True)
        return _run(self.raw, sql, params)

    def _end_pipeline(self, quiet: bool = False) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        try:
            pipe.__exit__(None, None, None)
        except psycopg.Error:
            if not quiet:
                raise

    def executemany(self, sql: str, seq) -> None:
        _run_many(self.raw, sql, seq)

    def close(self) -> None:
        self._pipe = None
        self.raw.close()


class PooledReader:
    """The read side: statements on pooled connections, a thread's snapshot on one of them."""

    def __init__(self, pool):
        self.pool = pool
        self._local = threading.local()
        # Set while the node's lease round cannot reach the server (several nodes): a read then
        # fails at once instead of waiting for the pool's timeout, since some reads run in the
        # reactor (a queue's refill) and a wait there would hold every channel's answers.
        self.unreachable: str | None = None

    def execute(self, sql: str, params=()) -> Result:
        pinned = getattr(self._local, "conn", None)
        if pinned is None and self.unreachable is not None:
            raise psycopg.OperationalError(f"the database is unreachable ({self.unreachable}); read not tried")
        if sql == "BEGIN" and pinned is None:
            self._local.conn = pinned = self.pool.getconn()
            try:
                pinned.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            except BaseException:
                self._release()
                raise
            return Result([])
        if pinned is not None:
            if sql in ("COMMIT", "ROLLBACK"):
                try:
                    pinned.execute(sql)
                finally:
                    self._release()
                return Result([])
            return _run(pinned, sql, params)
        try:
            with self.pool.connection() as conn:
                return _run(conn, sql, params)
        except psycopg.OperationalError as exc:
            self._probe(exc)
            raise

    def _probe(self, exc: psycopg.OperationalError) -> None:
        """A read could not get a connection: when the server itself refuses one (not a pool busy
        with other reads), the next reads fail at once until a lease round reaches it again."""
        if type(exc).__name__ != "PoolTimeout":
            return
        try:
            psycopg.connect(self.pool.conninfo, connect_timeout=2).close()
        except psycopg.Error as refused:
            self.unreachable = _reason(refused)

    def _release(self) -> None:
        conn, self._local.conn = self._local.conn, None
        if conn.info.transaction_status != pq.TransactionStatus.IDLE and not conn.broken:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                pass
        self.pool.putconn(conn)

    def executemany(self, sql: str, seq) -> None:
        raise StoreError("the read side of the store does not write")
