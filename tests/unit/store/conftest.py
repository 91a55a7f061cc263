"""The store's one test suite, run on both backends: every test that takes the ``store`` fixture
runs on SQLite and on PostgreSQL (a fresh database per test, dropped after it), unless it is
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


@pytest.fixture
def store_location(backend, tmp_path):
    """Where a test's store lives: an SQLite file, or a fresh PostgreSQL database's URL."""
    if backend == "sqlite":
        yield tmp_path / "store.db"
        return
    with pg.database() as url:
        yield url


@pytest_twisted.async_yield_fixture
async def store(store_location, clock):
    s = pg.open_store_at(store_location, clock=clock)
    yield s
    await s.close()
