"""``switchboard store copy``: move a whole store between SQLite and PostgreSQL, ids and all.

Every row of every table is copied as it is: message, delivery, attempt, event and audit ids,
statuses (so QUEUED deliveries stay queued and resume on the new store), times, content and the
audit log's hash chain, which still verifies because its rows are unchanged. The target must be
empty (a fresh file or database): copying into a store that already holds messages would mix two
histories, so it is refused. The target's schema is made by the migrations a first start runs; its id sequences are moved past the copied ids (and the audit
sequence to the last id the source handed out, so a removed newest row still shows); its full-text
index is built from the copied content.

Rows are read page by page in id order and written in one transaction on the target: a copy that
fails half-way leaves the target empty. ``fingerprint`` (counts and a SHA-256 per table over
every row in id order) is how the tests, and a careful operator, check that the copy is faithful.
"""

from __future__ import annotations

import hashlib

from engine.store import is_url
from engine.store.sqlite.schema import StoreError

# Tables in an order that satisfies their foreign keys, each with its columns (the same on both).
TABLES: dict[str, tuple[str, ...]] = {
    "messages": ("id", "channel", "received_at", "status", "type", "control_id", "sender", "inbound",
                 "processed_at", "pruned", "idempotency_key", "sha256", "error", "raw", "transformed", "original"),
    "metadata": ("message_id", "key", "value"),
    "deliveries": ("id", "message_id", "channel", "destination", "status", "attempts", "next_attempt_at",
                   "updated_at", "error", "body_is_transformed", "response", "body"),
    "attempts": ("id", "delivery_id", "at", "ok", "possible_duplicate", "error", "response"),
    "events": ("id", "at", "channel", "message_id", "kind", "detail"),
    "audit": ("id", "at", "who", "action", "target", "detail", "prev_hash", "hash"),
    "source_files": ("id", "channel", "sha256", "name", "status", "messages", "done_at"),
}
_ORDER = {"metadata": "message_id, key"}
PAGE = 1000


def _connect(location, *, write: bool):
    try:
        return _open(location, write)
    except StoreError:
        raise
    except Exception as error:  # sqlite3: a file that cannot be created or opened
        code = getattr(error, "sqlite_errorname", None) or type(error).__name__
        raise StoreError(f"cannot open the store {location} ({code})") from None


def _open(location, write: bool):
    if is_url(location):
        from engine.store.postgres.connection import PgConnection

        return PgConnection(location)
    from engine.store.sqlite.schema import connect_reader, connect_writer

    return connect_writer(str(location)) if write else connect_reader(str(location))


def _rows(conn, table: str):
    columns = TABLES[table]
    order = _ORDER.get(table, "id")
    offset_key = None
    if table == "metadata":  # no single id: page by offset (a small table beside messages)
        offset = 0
        while True:
            page = conn.execute(f"SELECT {', '.join(columns)} FROM metadata ORDER BY {order} LIMIT ? OFFSET ?",
                                (PAGE, offset)).fetchall()
            if not page:
                return
            yield from page
            offset += len(page)
    while True:
        where = "" if offset_key is None else " WHERE id > ?"
        params = (PAGE,) if offset_key is None else (offset_key, PAGE)
        page = conn.execute(f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY id LIMIT ?", params).fetchall()
        if not page:
            return
        yield from page
        offset_key = page[-1][0]


def _normal(row) -> tuple:
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


def _audit_last_id(conn, location) -> int:
    if is_url(location):
        row = conn.execute("SELECT last_value FROM audit_id_seq WHERE is_called").fetchone()
    else:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    return row[0] if row else 0


def copy_store(source, target, progress=None) -> dict[str, int]:
    """Copy every row of the store at ``source`` into the empty store at ``target`` (each an
    SQLite path or a PostgreSQL URL). Returns the rows copied per table. StoreError (a sentence
    for the user) when the target is not empty or either side cannot be used."""
    if str(source) == str(target):
        raise StoreError("the source and the target are the same store")
    src = _connect(source, write=False)
    try:
        dst = _connect(target, write=True)
    except BaseException:
        src.close()
        raise
    copied = {}
    try:
        _prepare(dst, target)
        held = sum(dst.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("messages", "events", "audit"))
        if held:
            raise StoreError("the target store is not empty; copy only into a new file or an empty database")
        dst.execute("BEGIN IMMEDIATE")
        try:
            for table, columns in TABLES.items():
                insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                batch, count = [], 0
                for row in _rows(src, table):
                    batch.append(_normal(row))
                    if len(batch) >= PAGE:
                        dst.executemany(insert, batch)
                        count += len(batch)
                        batch = []
                if batch:
                    dst.executemany(insert, batch)
                    count += len(batch)
                copied[table] = count
                if progress:
                    progress(table, count)
            _advance_sequences(dst, target, _audit_last_id(src, source))
            dst.execute("COMMIT")
        except BaseException:
            if dst.in_transaction:
                dst.execute("ROLLBACK")
            raise
        _index_text(dst, target)
    except StoreError:
        raise
    except Exception as error:  # psycopg / sqlite3: the code and the server's words, never row content
        code = getattr(error, "sqlstate", None) or getattr(error, "sqlite_errorname", None) or type(error).__name__
        first = str(error).splitlines()[0] if str(error) else ""
        raise StoreError(f"the copy failed ({code}: {first}); the target was left as it was") from None
    finally:
        src.close()
        dst.close()
    return copied


def _advance_sequences(dst, target, audit_last: int) -> None:
    if is_url(target):
        top = dst.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
        dst.execute("SELECT setval('message_id_blocks', ?, false)", (top + 1,))
        for table in ("deliveries", "attempts", "events", "audit", "source_files"):
            top = dst.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
            if table == "audit":
                top = max(top, audit_last)
            if top:
                dst.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), ?)", (top,))
    else:
        top = dst.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0]
        if audit_last > top:
            dst.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'audit'", (audit_last,))


def _index_text(dst, target) -> None:
    if is_url(target):
        from engine.store.postgres.text import catch_up
    else:
        from engine.store.sqlite.text import catch_up
    catch_up(dst)


def _prepare(dst, target) -> None:
    """The target's schema, as a first start makes it."""
    if is_url(target):
        from engine.store.postgres.schema import migrate

        migrate(dst.raw)
    else:
        from engine.store.sqlite.schema import migrate

        migrate(dst)


def fingerprint(location) -> dict[str, tuple[int, str]]:
    """Per table: (rows, SHA-256 over every row in id order): what a faithful copy keeps."""
    conn = _connect(location, write=False)
    try:
        result = {}
        for table in TABLES:
            digest, count = hashlib.sha256(), 0
            for row in _rows(conn, table):
                digest.update(repr(_normal(row)).encode("utf-8"))
                count += 1
            result[table] = (count, digest.hexdigest())
        return result
    finally:
        conn.close()
