"""The store's one test suite, run on both backends: every test that takes the ``store`` fixture
runs on SQLite and on PostgreSQL (a fresh database per test module, dropped after it, and emptied
before each test: creating one costs ~0.7 s, emptying one ~20 ms), unless it is
marked ``sqlite_only`` (it checks SQLite's own machinery: query plans, pragmas, the file, FTS5).
PostgreSQL's address comes from ``SWITCHBOARD_TEST_PG`` (tests/support/pg.py); when it does not
answer, the PostgreSQL runs are skipped here and ``.ci/run`` starts one in CI."""

from __future__ import annotations

import pytest
import pytest_twisted

from support import pg

BACKENDS = ("sqlite", "postgres")


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: a store test of SQLite's own machinery (one backend)")


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames and not metafunc.definition.get_closest_marker("sqlite_only"):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request):
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="module")
def pg_database():
    """One PostgreSQL database for a test module, with the store's schema."""
    with pg.database() as url:
        pg.migrated(url)
        yield url


@pytest.fixture
def store_location(backend, tmp_path, request):
    """Where a test's store lives: an SQLite file, or an emptied PostgreSQL database's URL."""
    if backend == "sqlite":
        return tmp_path / "store.db"
    url = request.getfixturevalue("pg_database")
    pg.empty(url)
    return url


@pytest_twisted.async_yield_fixture
async def store(store_location, clock):
    s = pg.open_store_at(store_location, clock=clock)
    yield s
    await s.close()
