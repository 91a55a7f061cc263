"""The message store's data model: statuses, timestamps, connection pragmas and migrations.

Kept apart from ``store.py`` so the writer thread's code stays short and so a reader (the CLI)
can check the schema version without pulling in Twisted.

Why these choices:

- **Migrations** are an ordered list of functions, each taking a ``sqlite_utils.Database``;
  ``PRAGMA user_version`` records how many have run. Each runs in its own ``BEGIN IMMEDIATE``
  transaction together with the version bump, and the version is re-read inside that transaction,
  so two processes opening a fresh store at once cannot both apply a step. Tables are created with
  ``Database.create_table`` (not ``Table.create``, which wraps itself in ``with conn:`` and would
  commit our migration transaction half-way). Partial indexes are plain SQL: sqlite-utils'
  ``create_index`` has no ``WHERE``.
- **Times** are ISO 8601 UTC strings with milliseconds (``2026-11-25T03:04:12.123Z``): the same
  text the API shows, and fixed width, so string order is time order and a window test is a
  plain index range.
- ``auto_vacuum=INCREMENTAL`` must be set before the first table exists (it cannot be switched on
  later without a full VACUUM); pruning will give pages back with ``PRAGMA incremental_vacuum``.
- **Indexes** follow the searches of DESIGN §3.6. Two are partial, which SQLite and PostgreSQL
  both support: the queue index holds only QUEUED deliveries (so claiming work and listing the
  queues at start touch the live queue, not the whole delivery history, and a delivery leaving
  the queue deletes one small entry), and the idempotency-key index holds only messages that
  came with a key. Every index insert costs a 4 KB WAL page per leaf it touches, so keys that
  grow with time are cheap and random ones are not (m002); each index was measured against the
  reads it serves (``bench/index_cost.py``), and two holding the same keys became one (m008).
  Fixed planner statistics (m005) keep SQLite from walking a whole channel when a control id or
  metadata value would find the rows.
- A delivery whose content is exactly the channel's transform output (the usual case: no
  destination transform) stores ``body_is_transformed = 1`` and no copy of the body; readers take
  ``messages.transformed``. That copy would be a third of the §5 budget of 3 KB per message.
- Large columns (raw, transformed, body, response) come last in their rows: SQLite decodes a
  record left to right, so summaries never step over message content.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # imported by migrate() when a migration runs: ~3.7 MB resident (click, tabulate)
    import sqlite_utils

# --- statuses (DESIGN §3.4) ---------------------------------------------------------------------

from engine.core.statuses import (  # noqa: F401 - the store's vocabulary
    DELIVERY_STATUSES,
    MESSAGE_STATUSES,
    derive_status,
    normalize_status,
)


class StoreError(Exception):
    """The store could not do what was asked. Messages name ids and SQLite error codes only,
    never message content, so they are safe to log and to return to a sender in an AE."""


# The writer's duplicate lookups (store.py), kept here so the tests can check their plans.
DEDUPE_SQL = (
    "SELECT id FROM messages WHERE channel = ? AND control_id = ? AND sha256 = ?"
    " AND received_at >= ? ORDER BY received_at DESC LIMIT 1"
)
IDEMPOTENCY_SQL = (
    "SELECT id FROM messages WHERE channel = ? AND idempotency_key = ? ORDER BY id DESC LIMIT 1"
)


# --- time ---------------------------------------------------------------------------------------

_last_second: tuple[int, str] = (-1, "")


def iso_utc(epoch: float) -> str:
    """Seconds since the epoch -> '2026-11-25T03:04:12.123Z' (fixed width, sortable).

    The formatted second is cached: the writer stamps every message, mostly within one second."""
    global _last_second
    whole, millis = divmod(int(round(epoch * 1000)), 1000)
    second, text = _last_second
    if second != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _last_second = (whole, text)
    return "%s.%03dZ" % (text, millis)


def to_iso(value: object) -> str | None:
    """Accept a datetime (naive = UTC), an ISO 8601 string, or epoch seconds; return our format.

    Normalizing every bound given to a search keeps the string comparison against stored times
    exact ('2026-11-25T03:04:12Z' and '...12.000Z' must mean the same instant)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return iso_utc(float(value))
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        value = _dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, _dt.datetime):
        raise TypeError(f"expected a datetime or ISO 8601 string, got {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (value.microsecond // 1000)


def from_iso(text: str) -> float:
    """A stored time ('2026-11-25T03:04:12.123Z') -> seconds since the epoch."""
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- connections --------------------------------------------------------------------------------

BUSY_TIMEOUT_MS = 5000


def connect_writer(path: str) -> sqlite3.Connection:
    """The one read-write connection. Autocommit mode (isolation_level=None) because the writer
    issues BEGIN IMMEDIATE / SAVEPOINT / COMMIT itself; used from the writer thread only after
    migrations ran here, hence check_same_thread=False."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    if not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only effective before the first table
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        conn.close()
        raise StoreError(f"the store could not switch to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit: ACKed = on disk
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA temp_store=MEMORY")  # savepoint journals in memory: 30 -> 7 us/write
    return conn


# Each thread that reads the store has its own connection (store.py ``_reader``): the reactor and
# up to ten pool threads (admin API, dashboard, replay, metrics).  With SQLite's default page cache
# (2,000 KiB each) they grew the daemon's memory by steps as pool threads came into use (the soak:
# +5.5 MB over 13 minutes).  The OS page cache holds the file anyway: every query of
# bench/search_bench.py over 300,000 messages took the same time with 512 KiB as with 2,000.
READER_CACHE_KIB = -512


def connect_reader(path: str) -> sqlite3.Connection:
    """A read-only connection (mode=ro): usable while the daemon writes (WAL readers never block
    the writer) and when it is not running. Autocommit, so no snapshot outlives a call."""
    from urllib.parse import quote

    uri = "file:" + quote(str(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA cache_size={READER_CACHE_KIB}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store read-only ({exc.sqlite_errorname})") from exc
    if version != SCHEMA_VERSION:
        conn.close()
        raise StoreError(
            f"the store's schema is version {version}, this Switchboard reads version "
            f"{SCHEMA_VERSION}; start the daemon once to migrate it"
        )
    return conn


# --- migrations ---------------------------------------------------------------------------------


def _m001_initial(db: sqlite_utils.Database) -> None:
    db.create_table(
        "messages",
        {
            "id": int,
            "channel": str,
            "received_at": str,
            "status": str,
            "type": str,
            "control_id": str,
            "sender": str,
            "inbound": str,
            "processed_at": str,
            "pruned": int,
            "idempotency_key": str,
            "sha256": str,
            "error": str,
            "raw": str,
            "transformed": str,
        },
        pk="id",
        not_null=["channel", "received_at", "status", "type", "control_id", "sha256", "pruned"],
        defaults={"type": "", "control_id": "", "sender": "", "inbound": "hl7", "pruned": 0},
    )
    messages = db["messages"]
    messages.create_index(["channel", "received_at"], "idx_messages_channel_received")
    messages.create_index(["channel", "status", "received_at"], "idx_messages_channel_status")
    messages.create_index(["status", "received_at"], "idx_messages_status")
    messages.create_index(["type", "received_at"], "idx_messages_type")
    messages.create_index(["control_id"], "idx_messages_control_id")
    messages.create_index(["received_at"], "idx_messages_received")
    messages.create_index(["channel", "sha256", "received_at"], "idx_messages_dedupe")
    db.execute(
        "CREATE INDEX idx_messages_idempotency ON messages (channel, idempotency_key)"
        " WHERE idempotency_key IS NOT NULL"
    )

    db.create_table(
        "metadata",
        {"message_id": int, "key": str, "value": str},
        pk=("message_id", "key"),
        not_null=["message_id", "key", "value"],
        foreign_keys=[("message_id", "messages", "id")],
    )
    db["metadata"].create_index(["key", "value", "message_id"], "idx_metadata_key_value")

    db.create_table(
        "deliveries",
        {
            "id": int,
            "message_id": int,
            "channel": str,
            "destination": str,
            "status": str,
            "attempts": int,
            "next_attempt_at": str,
            "updated_at": str,
            "error": str,
            "body_is_transformed": int,  # 1: body is messages.transformed, not stored twice
            "response": str,
            "body": str,
        },
        pk="id",
        not_null=["message_id", "channel", "destination", "status", "attempts"],
        defaults={"attempts": 0, "body_is_transformed": 0},
        foreign_keys=[("message_id", "messages", "id")],
    )
    deliveries = db["deliveries"]
    deliveries.create_index(["message_id", "destination"], "idx_deliveries_message", unique=True)
    db.execute(
        "CREATE INDEX idx_deliveries_queued ON deliveries (channel, destination, message_id)"
        " WHERE status = 'QUEUED'"
    )

    db.create_table(
        "attempts",
        {
            "id": int,
            "delivery_id": int,
            "at": str,
            "ok": int,
            "possible_duplicate": int,
            "error": str,
            "response": str,
        },
        pk="id",
        not_null=["delivery_id", "at", "ok", "possible_duplicate"],
        defaults={"possible_duplicate": 0},
        foreign_keys=[("delivery_id", "deliveries", "id")],
    )
    db["attempts"].create_index(["delivery_id"], "idx_attempts_delivery")

    db.create_table(
        "events",
        {"id": int, "at": str, "channel": str, "message_id": int, "kind": str, "detail": str},
        pk="id",
        not_null=["at", "kind"],
        defaults={"detail": ""},
    )
    db["events"].create_index(["at"], "idx_events_at")
    db.execute(
        "CREATE INDEX idx_events_message ON events (message_id) WHERE message_id IS NOT NULL"
    )


def _m002_dedupe_by_control_id(db: sqlite_utils.Database) -> None:
    """Look duplicates up by (channel, control_id, sha256) instead of (channel, sha256).

    A re-sent message has the same bytes, hence the same control id (MSH-10). Control ids mostly
    grow, so this index takes appends, while a sha256-first index takes one random leaf page per
    message: measured, a 64-message commit wrote ~100 more WAL pages with the old one."""
    db.execute("DROP INDEX IF EXISTS idx_messages_dedupe")
    db["messages"].create_index(
        ["channel", "control_id", "sha256", "received_at"], "idx_messages_dedupe"
    )


def _m003_audit(db: sqlite_utils.Database) -> None:
    """The admin API's audit log (engine/admin/audit.py): who viewed, searched, replayed or changed
    what. Each row carries the hash of the row before it (a hash chain), so a removed or edited row
    shows. AUTOINCREMENT (not plain rowid) so ids are never reused and ``sqlite_sequence`` keeps
    the last id handed out even when the newest rows are deleted."""
    db.execute(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
        " who TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL DEFAULT '',"
        " detail TEXT NOT NULL DEFAULT '', prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX idx_audit_at ON audit (at)")


def _m004_source_files(db: sqlite_utils.Database) -> None:
    """Files a file source has taken, by content hash (RELIABILITY 33): a re-dropped identical file
    is recognised and not processed again, across restarts. One row per outcome (``done`` or
    ``error``); the lookup is by (channel, sha256), so it is one index probe per file."""
    db.execute(
        "CREATE TABLE source_files (id INTEGER PRIMARY KEY, channel TEXT NOT NULL,"
        " sha256 TEXT NOT NULL, name TEXT NOT NULL DEFAULT '', status TEXT NOT NULL,"
        " messages INTEGER NOT NULL DEFAULT 0, done_at TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX idx_source_files_sha ON source_files (channel, sha256, status)")


# Row-count estimates of a large store (1M messages, ~10 channels), as sqlite_stat1 rows:
# "rows, then rows per distinct value of the first 1, 2, ... columns of the index".
PLANNER_STATS = {
    ("messages", "idx_messages_channel_received"): "1000000 100000 2",
    ("messages", "idx_messages_channel_status"): "1000000 100000 20000 2",
    ("messages", "idx_messages_status"): "1000000 200000 2",
    ("messages", "idx_messages_type"): "1000000 50000 2",
    ("messages", "idx_messages_received"): "1000000 2",
    ("messages", "idx_messages_dedupe"): "1000000 2 1 1 1",
    ("messages", "idx_messages_idempotency"): "10000 1000 1",
    ("metadata", "sqlite_autoindex_metadata_1"): "2000000 2 1",
    ("metadata", "idx_metadata_key_value"): "2000000 500000 3 1",
    ("deliveries", "idx_deliveries_message"): "1000000 1 1",
    ("deliveries", "idx_deliveries_queued"): "1000 100 100 1",
    ("attempts", "idx_attempts_delivery"): "1200000 1",
}


def _m005_planner_stats(db: sqlite_utils.Database) -> None:
    """Give the query planner the shape of a large store.

    Without statistics SQLite guesses, and it guessed wrong where it matters: a search by channel
    and control id walked the whole channel in time order (to save sorting a handful of rows)
    instead of looking the control id up; a channel + metadata search did the same. Fixed
    sqlite_stat1 rows (SQLite's documented way to steer plans) say that a channel, status or type
    holds many messages and a control id or a metadata value few; ``tests/unit/store/test_store.py`` checks
    the plans. A later ``ANALYZE`` replaces them with measured numbers."""
    db.execute("ANALYZE sqlite_schema")  # creates sqlite_stat1 when it is missing
    db.conn.executemany(
        "DELETE FROM sqlite_stat1 WHERE tbl = ? AND idx = ?", list(PLANNER_STATS)
    )
    db.conn.executemany(
        "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)",
        [(table, index, stat) for (table, index), stat in PLANNER_STATS.items()],
    )
    db.execute("ANALYZE sqlite_schema")  # load them on this connection too


# Full-text search over message content (m006). External content (the text lives in
# messages.raw, the index holds only tokens -> rowids); detail=none and columnsize=0 keep no
# positions and no per-document sizes (no phrase queries, no bm25 ranking: searches want
# "messages holding these words, newest first"), ~160 B per 1.1 KB message. unicode61 already
# treats every character that is not a letter or a digit as a separator, HL7's |^~\& included,
# so each field and component value is a token; remove_diacritics 2 lets JOSE find José.
FTS_TABLE = "messages_fts"
FTS_INSERT_SQL = "INSERT INTO messages_fts (rowid, raw) VALUES (?, ?)"
FTS_DELETE_SQL = "INSERT INTO messages_fts (messages_fts, rowid, raw) VALUES ('delete', ?, ?)"


def _m006_text_search_and_retention(db: sqlite_utils.Database) -> None:
    """``messages --text`` and retention.

    ``messages_fts`` indexes ``raw``. The writer indexes new messages in bulk (writer.py
    ``stage``: at most 256 messages or 0.5 s behind their commit) and ``text_index`` records in
    the same transaction the highest message id indexed, so a store reopened after a crash
    indexes what came after it (``text.catch_up``). Pruning (retention.py) removes a
    message's words with FTS5's 'delete' before it clears the text, and only below that mark.
    Messages already stored are indexed here, once.

    ``idx_messages_unpruned`` holds only messages whose content is still there, by status and
    id: a pruning pass reads each prunable status from its oldest id, so it never steps over the
    (growing) history of messages already pruned nor over the ERROR and QUEUED ones it keeps.
    Ids grow with received_at (the writer stamps it so), so the window's last id bounds the
    range. Keyed on (status, rowid) only, it costs ~20 B per message (with received_at in the
    key: ~55 B, and DESIGN §5 allows 3 KB per message in all); an insert appends to a leaf."""
    db.execute(
        f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(raw, content='messages', content_rowid='id',"
        " detail=none, columnsize=0, tokenize='unicode61 remove_diacritics 2')"
    )
    db.execute(f"INSERT INTO {FTS_TABLE} (rowid, raw) SELECT id, raw FROM messages"
               " WHERE raw IS NOT NULL AND pruned = 0")
    db.execute("CREATE TABLE text_index (id INTEGER PRIMARY KEY CHECK (id = 1),"
               " indexed_through INTEGER NOT NULL)")
    db.execute("INSERT INTO text_index (id, indexed_through) SELECT 1, coalesce(max(id), 0) FROM messages")
    db.execute("CREATE INDEX idx_messages_unpruned ON messages (status) WHERE pruned = 0")
    db.conn.execute("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES"
                    " ('messages', 'idx_messages_unpruned', '300000 60000')")
    db.execute("ANALYZE sqlite_schema")


def _m007_original_bytes(db: sqlite_utils.Database) -> None:
    """RELIABILITY 17: the bytes a message arrived as, when they were not valid for its declared
    charset and decoding replaced some with U+FFFD (``raw`` holds that decoded text). NULL for
    every message that decoded cleanly: one record-header byte per row (measured: 200,000 rows,
    +1.8 % pages on a 90-byte row, ~1.5 B/row). PHI like ``raw``: pruning clears it. ALTER TABLE
    ADD COLUMN only edits the schema: existing rows are not rewritten."""
    db.execute("ALTER TABLE messages ADD COLUMN original BLOB")


def _m008_one_index_by_control_id(db: sqlite_utils.Database) -> None:
    """One index, keyed control id first, for both the duplicate lookup and the control-id
    searches, instead of ``idx_messages_control_id`` (control_id) beside ``idx_messages_dedupe``
    (channel, control_id, sha256, received_at).

    Every index costs each message's commit an insert, a leaf page in the WAL and its checkpoint
    (bench/README.md, "Indexes, each against its cost"). Those two held the same keys in another
    order: (control_id, channel, sha256, received_at) answers a search by control id alone (its
    first column), by channel and control id, and the duplicate lookup (all four), each a seek.
    Control id first keeps the insert where it was for ``idx_messages_control_id``: each sender's
    ids mostly grow, so each appends in its own part of the index."""
    db.execute("DROP INDEX IF EXISTS idx_messages_control_id")
    db.execute("DROP INDEX IF EXISTS idx_messages_dedupe")
    db.execute(
        "CREATE INDEX idx_messages_dedupe ON messages (control_id, channel, sha256, received_at)"
    )
    db.conn.execute(
        "DELETE FROM sqlite_stat1 WHERE idx IN ('idx_messages_control_id', 'idx_messages_dedupe')"
    )
    db.conn.execute(
        "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('messages', 'idx_messages_dedupe', ?)",
        (PLANNER_STATS[("messages", "idx_messages_dedupe")],),
    )
    db.execute("ANALYZE sqlite_schema")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_initial,
    _m002_dedupe_by_control_id,
    _m003_audit,
    _m004_source_files,
    _m005_planner_stats,
    _m006_text_search_and_retention,
    _m007_original_bytes,
    _m008_one_index_by_control_id,
]
SCHEMA_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, migrations=None) -> int:
    """Bring the store up to date; a no-op when it already is. Returns the resulting version."""
    steps = MIGRATIONS if migrations is None else migrations
    if user_version(conn) > len(steps):
        raise StoreError(
            f"the store's schema is version {user_version(conn)}, newer than this Switchboard "
            f"knows ({len(steps)}); refusing to touch it"
        )
    if user_version(conn) == len(steps):
        return len(steps)  # the usual restart: nothing to run, sqlite-utils not even imported
    import sqlite_utils

    db = sqlite_utils.Database(conn, execute_plugins=False)
    for number, step in enumerate(steps, start=1):
        if user_version(conn) >= number:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if user_version(conn) < number:  # another process may have migrated meanwhile
                step(db)
                conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return user_version(conn)


def equal_terms(**columns) -> tuple[list[str], list]:
    """``column = ?`` terms for the filters given (None means "any"), for a WHERE clause."""
    given = [(column, value) for column, value in columns.items() if value is not None]
    return [f"{column} = ?" for column, _ in given], [value for _, value in given]
