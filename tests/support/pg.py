"""PostgreSQL for the tests: the server's address from one environment variable, and fresh
databases made and dropped around each test that wants one.

``SWITCHBOARD_TEST_PG`` (default ``postgresql://127.0.0.1:5432/``, user ``postgres``, trust auth
on 127.0.0.1): when it does not answer, tests that need PostgreSQL are skipped locally; ``.ci/run``
installs and starts Debian's ``postgresql`` first, so CI always runs them.

``private_server()``: a PostgreSQL instance of a test's own (initdb in a temporary directory, its
own port and socket), for tests that stop and start the server; the shared one is never touched.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
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


# --- a private PostgreSQL server (tests that stop and start it) ------------------------------------


def _server_binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (Debian keeps them out of PATH), or None."""
    import glob
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PrivateServer:
    """A PostgreSQL instance of its own in a temporary directory, on its own port, so that a test
    can stop and start it without touching the shared server (``SWITCHBOARD_TEST_PG``). initdb
    refuses root: as root it runs as the ``postgres`` user (``runuser``)."""

    def __init__(self, directory: Path, binaries: Path, as_user: list[str], port: int) -> None:
        self.directory, self.binaries, self.as_user, self.port = directory, binaries, as_user, port
        self.data = directory / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/switchboard"

    def _run(self, *command: str, timeout: float = 60) -> None:
        import subprocess

        result = subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()[-500:]}")

    def init(self) -> None:
        self._run(str(self.binaries / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        self.start()
        with psycopg_connect(self.url.rsplit("/", 1)[0] + "/postgres") as conn:
            conn.execute('CREATE DATABASE "switchboard"')

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.directory / "server.log"), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")


def psycopg_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


@contextmanager
def private_server():
    """A ``PrivateServer`` started for the block and removed after it; skips the test when this
    machine cannot run one (no PostgreSQL server binaries, or root without a ``postgres`` user)."""
    import pwd
    import shutil
    import socket
    import tempfile

    binaries = _server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and initdb refuses root: no 'postgres' user to run it as")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root, and initdb refuses root: no runuser to run it as 'postgres'")
        as_user = [runuser, "-u", "postgres", "--"]
    directory = Path(tempfile.mkdtemp(prefix="sbpg-"))   # short: it holds the server's Unix socket
    if owner is not None:
        os.chown(directory, owner.pw_uid, owner.pw_gid)
        if not os.stat("/dev/null").st_mode & 0o002:
            # Some containers give /dev/null no write right for other users, and initdb writes to
            # it: in a mount namespace of its own, a writable null device is bound over it.
            unshare = shutil.which("unshare")
            if unshare is None:
                shutil.rmtree(directory, ignore_errors=True)
                pytest.skip("/dev/null is not writable by the 'postgres' user (initdb writes to it) and "
                            "there is no unshare to give it a private one")
            null = directory / "null"
            as_user = [unshare, "-m", "sh", "-c",
                       f'[ -e {null} ] || mknod -m 666 {null} c 1 3; mount --bind {null} /dev/null && exec "$@"',
                       "sh", *as_user]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = PrivateServer(directory, binaries, as_user, port)
    try:
        try:
            server.init()
        except RuntimeError as error:
            pytest.skip(f"cannot run a private PostgreSQL server here: {error}")
        yield server
    finally:
        try:
            server.stop("immediate")
        except Exception:  # noqa: BLE001 - already stopped, or never started
            pass
        shutil.rmtree(directory, ignore_errors=True)
