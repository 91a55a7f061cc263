"""The message store behind one interface: all SQL lives in this package.

Callers outside ``engine/store/`` import from here (``from engine.store import Store, StoreError``)
and reach the store only through ``Store``'s methods, never a connection or SQL of their own:

- messages in: ``reserve_id``, ``put_processed``, ``set_message_result``, ``add_event``,
  ``mark_file``;
- deliveries: ``record_attempt``, ``record_sent``, ``queued_destinations``, ``next_queued``,
  ``queue_stats``;
- reads and search: ``search``, ``get_message``, ``get_original``, ``metadata_for``,
  ``channel_counts``, ``unprocessed``, ``file_seen``, ``recent_events``;
- replay: ``replay_candidates``, ``record_replay``;
- retention: ``prune_batch``, ``record_pruned``, ``count_prunable``, ``Store.prune_offline``;
- audit: ``append_audit``, ``audit_entries``, ``verify_audit``;
- report: ``report``;
- life: ``open_store`` / ``Store(path)`` (the writer), ``open_readonly`` (readers, e.g. the CLI
  beside a running daemon), ``flush_staged``, ``close_readers``, ``close``.

``derive_status`` is the one rule turning destinations' statuses into a message's (DESIGN §3.4).
The SQLite implementation is ``engine/store/sqlite/``: one module per concern, ``store.py``
binding them into ``Store``. ``engine/store/postgres/`` is the same interface on PostgreSQL
(``PgStore``, chosen by ``[store] url``); it shares the SQLite modules' SQL and logic.
"""

from __future__ import annotations

from engine.store.sqlite.replay import delivery_rows
from engine.store.sqlite.retention import BATCH as PRUNE_BATCH
from engine.store.sqlite.retention import statuses as prunable_statuses
from engine.store.sqlite.schema import (
    DELIVERY_STATUSES,
    MESSAGE_STATUSES,
    StoreError,
    derive_status,
    normalize_status,
)
from engine.store.sqlite.store import ChainCheck, Store

__all__ = [
    "ChainCheck",
    "DELIVERY_STATUSES",
    "MESSAGE_STATUSES",
    "PRUNE_BATCH",
    "Store",
    "StoreError",
    "delivery_rows",
    "derive_status",
    "describe",
    "is_url",
    "store_class",
    "normalize_status",
    "open_readonly",
    "open_store",
    "prunable_statuses",
]


def is_url(location) -> bool:
    """Whether a store location is a PostgreSQL URL (else an SQLite file's path)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def describe(section) -> str:
    """The ``[store]`` location for a message to a person: the path, or the URL without its password."""
    url = getattr(section, "url", "")
    if not url:
        return str(section.path)
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def store_class(location):
    """The Store class for a location: ``PgStore`` for a PostgreSQL URL, else SQLite's."""
    if is_url(location):
        from engine.store.postgres.store import PgStore  # late: psycopg only when it is used

        return PgStore
    return Store


def open_store(section, reactor=None) -> Store:
    """The daemon's store from the config's ``[store]`` section (its ``url``, else its ``path``):
    the writer thread started and the schema migrated. Raises StoreError if it cannot be opened."""
    location = getattr(section, "url", "") or section.path
    return store_class(location)(location, reactor=reactor)


def open_readonly(location) -> Store:
    """A store that only reads (never migrates, refuses writes): the CLI's, beside a running
    daemon or without one. ``location``: a path or a PostgreSQL URL. Raises StoreError if the
    store is missing or of another schema."""
    return store_class(location).open_readonly(location)
