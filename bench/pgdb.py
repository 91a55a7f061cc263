"""PostgreSQL for the benchmarks (``--store-url``): a fresh database per daemon on the server the
option names, dropped when the run ends, so every figure starts from an empty store like SQLite's."""

from __future__ import annotations

import atexit
import uuid
from urllib.parse import urlsplit, urlunsplit

_made: list[str] = []


def _with_db(server: str, name: str) -> str:
    parts = urlsplit(server)
    netloc = parts.netloc if "@" in parts.netloc else f"postgres@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, "/" + name, parts.query, ""))


def fresh_database(server: str) -> str:
    """A new empty database on ``server`` (postgresql://host:port/); its URL. Dropped at exit."""
    import psycopg

    name = f"sbbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_with_db(server, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(server, name)
    _made.append(url)
    return url


@atexit.register
def _drop_all() -> None:
    if not _made:
        return
    import psycopg

    for url in _made:
        parts = urlsplit(url)
        try:
            with psycopg.connect(urlunsplit((parts.scheme, parts.netloc, "/postgres", "", "")), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001 - a leftover database is reported, not fatal
            print(f"could not drop {parts.path}: {exc}")
