"""Full-text search over message content (``messages --text``): the words of a query, and the
index's high-water mark.

The index (``messages_fts``, schema.py m006) holds the words of every message's ``raw`` text,
tokenized by SQLite's unicode61: a word is a run of letters and digits, everything else (HL7's
``|^~\\&``, spaces, punctuation) separates words, case and diacritics are ignored. So
``DOE^JANE`` holds the words ``doe`` and ``jane``, and ``MRN00123`` is one word.

A query is split the same way here and every word must occur (AND), in any order: the index keeps
no positions (``detail=none``, a third of the size of a full index) so it cannot test that words
are adjacent. A word ending in ``*`` matches as a prefix (``SMI*``). Each word is passed to FTS5
as a quoted string, so no query syntax (``OR``, ``NEAR``, ``-``, quotes) reaches it from a user.

Why a high-water mark: the writer indexes messages a commit or a few behind the commit that
stores them (writer.py ``stage``: in bulk, 256 at a time or after 0.5 s). ``text_index``
records, in the transaction that indexes them, the highest message id indexed; pruning removes
a message's words only below it (a 'delete' for words never added would corrupt the index), and
a store reopened after a crash first indexes every message above it (``catch_up``).
"""

from __future__ import annotations

import re
import sqlite3

from engine.store.sqlite.schema import FTS_INSERT_SQL, FTS_TABLE, normalize_status

_WORD = re.compile(r"[^\W_]+\*?")  # letters and digits (unicode61's token characters), then an optional *
MAX_WORDS = 16

# How a search reaches the index (queries.search_sql); postgres/text.py has its own.
MATCH_EXISTS = f"EXISTS (SELECT 1 FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? AND rowid = m.id)"
MATCH_FROM = f"{FTS_TABLE} f CROSS JOIN messages m ON m.id = f.rowid"
MATCH_WHERE = f"f.{FTS_TABLE} MATCH ?"
MATCH_ROWID = "f.rowid"

WATERMARK_SQL = "UPDATE text_index SET indexed_through = ? WHERE id = 1 AND indexed_through < ?"


def match_expression(text: str) -> str:
    """The FTS5 MATCH expression for a user's words: ``"doe" AND "jane"*``.

    Raises ValueError for text without a letter or a digit, or with too many words."""
    words = [w.lower() for w in _WORD.findall(str(text))]
    if not words:
        raise ValueError("text search needs at least one word (letters or digits)")
    if len(words) > MAX_WORDS:
        raise ValueError(f"text search takes at most {MAX_WORDS} words")
    terms = []
    for word in dict.fromkeys(words):  # each word once, in order
        prefix = word.endswith("*")
        word = word.rstrip("*")
        terms.append(f'"{word}"*' if prefix else f'"{word}"')
    return " AND ".join(terms)


def indexed_through(conn: sqlite3.Connection) -> int:
    """The highest message id whose words are in the index (every lower one is, too)."""
    row = conn.execute("SELECT indexed_through FROM text_index WHERE id = 1").fetchone()
    return row[0] if row else 0


def catch_up(conn: sqlite3.Connection, insert_sql: str = FTS_INSERT_SQL, prepare=None) -> int:
    """Index the messages stored after the high-water mark (a crash came between their commit
    and their indexing); in its own transaction. Returns how many were indexed. ``insert_sql``
    and ``prepare`` (``(id, raw)`` rows -> its parameters): the PostgreSQL store's own index."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        mark = indexed_through(conn)
        rows = conn.execute(
            "SELECT id, raw FROM messages WHERE id > ? AND raw IS NOT NULL AND pruned = 0 ORDER BY id",
            (mark,),
        ).fetchall()
        if rows:
            conn.executemany(insert_sql, rows if prepare is None else prepare(rows))
        top = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
        conn.execute(WATERMARK_SQL, (top, top))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(rows)


def integrity_check(conn: sqlite3.Connection) -> None:
    """FTS5's own check that the index matches the content table (raises sqlite3.DatabaseError
    when it does not). Messages above the high-water mark are not indexed yet, so run it with
    nothing held (after ``Store.flush_staged``)."""
    conn.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")


# A text search walks the word's matches newest first (~0.8 us each) until it has a page; a word
# in most messages with a channel or status that holds few of them walks them all (measured over
# 1,000,000 messages: 0.7-2.7 s). Probing the text index once per message of a small channel
# instead costs 12-34 us a message. So when the word has at least COMMON_WORD matches (counting
# them to that cap: ~4 ms) and the channel/status at most FEW_MESSAGES (~0.2 ms), the channel
# or status drives: either way the walk stays under ~85 ms.
COMMON_WORD = 100_000
FEW_MESSAGES = 2_500


def probe_is_cheaper(conn: sqlite3.Connection, filters: dict, count_matches=None) -> bool:
    """Whether a text search with these filters should walk the channel's (or status's)
    messages and probe the index for each, rather than walk the word's matches.
    ``count_matches(conn, text, cap)``: how many messages hold the words, up to ``cap`` (FTS5's
    count by default; the PostgreSQL store passes its own)."""
    if filters.get("control_id") is not None or filters.get("meta"):
        return False  # those drive already
    where, params = [], []
    for key in ("channel", "status"):
        if filters.get(key) is not None:
            where.append(f"{key} = ?")
            params.append(filters[key] if key == "channel" else normalize_status(filters[key]))
    if not where:
        return False
    if (count_matches or _count_matches)(conn, filters["text"], COMMON_WORD) < COMMON_WORD:
        return False
    held = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM messages WHERE {' AND '.join(where)} LIMIT ?)",
        (*params, FEW_MESSAGES),
    ).fetchone()[0]
    return held < FEW_MESSAGES


def _count_matches(conn: sqlite3.Connection, text: str, cap: int) -> int:
    return conn.execute(
        f"SELECT count(*) FROM (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? LIMIT ?)",
        (match_expression(text), cap),
    ).fetchone()[0]
