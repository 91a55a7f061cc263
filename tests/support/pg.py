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


def sql(url: str, statement: str, params=()) -> list:
    """Run one statement on ``url`` (a test's look behind the store); the rows, if any."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []
