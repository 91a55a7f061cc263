"""PostgreSQL for the tests: the server's address from one environment variable, and fresh
databases made and dropped around each test that wants one.

``SWITCHBOARD_TEST_PG`` (default ``postgresql://127.0.0.1:5432/``, user ``postgres``, trust auth
on 127.0.0.1): when it does not answer, tests that need PostgreSQL are skipped locally; ``.ci/run``
installs and starts Debian's ``postgresql`` first, so CI always runs them.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

SERVER = os.environ.get("SWITCHBOARD_TEST_PG", "postgresql://127.0.0.1:5432/")
_answers: bool | None = None


def _url(database: str) -> str:
    parts = urlsplit(SERVER)
    netloc = parts.netloc if "@" in parts.netloc else f"postgres@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, "/" + database, parts.query, ""))


def available() -> bool:
    """Whether the test server answers (asked once per run)."""
    global _answers
    if _answers is None:
        try:
            import psycopg

            psycopg.connect(_url("postgres"), connect_timeout=3).close()
            _answers = True
        except Exception:  # noqa: BLE001 - any failure means "not here"
            _answers = False
    return _answers


def require() -> None:
    if not available():
        pytest.skip(f"PostgreSQL does not answer at {SERVER} (set SWITCHBOARD_TEST_PG)")


def create_database(prefix: str = "sbtest") -> str:
    """A new empty database; returns its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _url(name)


def drop_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database(prefix: str = "sbtest"):
    """A fresh database for the block (skips the test when the server is not there)."""
    require()
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)


def migrated(url: str) -> None:
    """Give a database the store's schema (as the first start of a node does)."""
    import psycopg

    from engine.store.postgres.schema import migrate

    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)


def empty(url: str) -> None:
    """Empty every table of a migrated database (ids start again at 1)."""
    sql(url, "TRUNCATE messages, metadata, deliveries, attempts, events, audit, source_files, message_text"
             " RESTART IDENTITY; UPDATE text_index SET indexed_through = 0")


def sql(url: str, statement: str, params=()) -> list:
    """Run one statement on ``url`` (a test's look behind the store); the rows, if any."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


# --- looks behind a store of either backend (the store tests) --------------------------------------


def open_store_at(location, **options):
    """The store at an SQLite path or a PostgreSQL URL (what ``[store]`` path / url select)."""
    from engine.store import store_class

    return store_class(location)(location, **options)


def is_postgres(store) -> bool:
    return isinstance(getattr(store, "path", None), str) and str(store.path).startswith("postgres")


def indexed_through(store) -> int:
    """The full-text index's high-water mark, read past the store."""
    if is_postgres(store):
        return sql(store.path, "SELECT indexed_through FROM text_index WHERE id = 1")[0][0]
    import sqlite3

    conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT indexed_through FROM text_index WHERE id = 1").fetchone()[0]
    finally:
        conn.close()


def check_text_index(store) -> None:
    """The full-text index holds exactly the words of the unpruned content up to its mark:
    FTS5's own integrity check on SQLite; on PostgreSQL, each indexed row's words are its
    message's words and no unpruned message below the mark is missing."""
    if not is_postgres(store):
        import sqlite3

        from engine.store.sqlite import text as store_text

        conn = sqlite3.connect(store.path)
        try:
            store_text.integrity_check(conn)
        finally:
            conn.close()
        return
    from engine.store.postgres.text import words

    mark = indexed_through(store)
    content = dict(sql(store.path, "SELECT id, raw FROM messages WHERE pruned = 0 AND raw IS NOT NULL AND id <= %s",
                       (mark,)))
    indexed = dict(sql(store.path, "SELECT id, words::text FROM message_text"))
    assert set(indexed) == set(content), (sorted(indexed), sorted(content))
    for message_id, raw in content.items():
        expected = sql(store.path, "SELECT array_to_tsvector(%s::text[])::text", (words(raw),))[0][0]
        assert indexed[message_id] == expected, message_id


def migrated_sqlite(path) -> None:
    """An empty SQLite store at ``path`` (as a first start makes it)."""
    from engine.store.sqlite.schema import connect_writer, migrate

    conn = connect_writer(str(path))
    try:
        migrate(conn)
    finally:
        conn.close()


# --- the real daemon on PostgreSQL (end-to-end tests) -----------------------------------------------


def use_store(daemon, url: str) -> None:
    """Point a ``support.daemon.Daemon``'s config at PostgreSQL: ``[store] url`` instead of its
    ``path`` (the node's own files, the admin token among them, stay under var/)."""
    text = daemon.config.read_text()
    assert 'path = "var/switchboard.db"' in text
    daemon.config.write_text(text.replace('path = "var/switchboard.db"', f'url = "{url}"', 1))


@pytest.fixture
def store_backend(request):
    """Parametrize a daemon test with ``["sqlite", "postgres"]`` (indirect): gives ``apply(daemon)``
    which, for PostgreSQL, makes a fresh database, points the daemon at it and drops it after the
    test. Import it into a test module (``from support.pg import store_backend``)."""
    backend = getattr(request, "param", "sqlite")
    made: list[str] = []

    def apply(daemon):
        if backend == "postgres":
            require()
            made.append(create_database("sbe2e"))
            use_store(daemon, made[-1])
        return daemon

    apply.backend = backend
    yield apply
    for url in made:
        drop_database(url)
