"""Full-text search helpers: a user's words become a safe FTS5 expression; the tokenizer splits
HL7 the way the query side does."""

from __future__ import annotations

import pytest

from engine.store.sqlite.schema import connect_writer, migrate
from engine.store.sqlite.text import MAX_WORDS, indexed_through, match_expression


@pytest.mark.parametrize(
    "text, expected",
    [
        ("DOE", '"doe"'),
        ("Doe Jane", '"doe" AND "jane"'),
        ("DOE^JANE|MRN1", '"doe" AND "jane" AND "mrn1"'),
        ("smi*", '"smi"*'),
        ("a_b", '"a" AND "b"'),            # unicode61 does not count _ as a letter
        ('x" OR "y', '"x" AND "or" AND "y"'),
        ("doe DOE", '"doe"'),
        ("José", '"josé"'),
    ],
)
def test_words_become_quoted_terms_joined_by_and(text, expected):
    assert match_expression(text) == expected


def test_too_many_words_are_refused():
    with pytest.raises(ValueError):
        match_expression(" ".join(f"w{i}" for i in range(MAX_WORDS + 1)))


@pytest.mark.parametrize("raw", [
    "MSH|^~\\&|EPIC|MERCY\rPID|1||MRN123^^^H^MR||O'BRIEN^JOSÉ~ALIAS\\F\\X",
    "PID|1||A-123.45_6||Ünïcödé Ωmega 3½",
])
def test_every_word_the_query_side_finds_is_a_single_indexed_token(tmp_path, raw):
    """The query splits text into words itself (FTS5 without positions cannot take phrases), so
    each of its words must be exactly one token of the index's tokenizer, and must find the
    message it came from."""
    conn = connect_writer(str(tmp_path / "t.db"))
    try:
        migrate(conn)
        conn.execute("INSERT INTO messages (id, channel, received_at, status, sha256, raw)"
                     " VALUES (1, 'c', '2026-01-01T00:00:00.000Z', 'SENT', 'x', ?)", (raw,))
        conn.execute("INSERT INTO messages_fts (rowid, raw) VALUES (1, ?)", (raw,))
        for term in match_expression(raw).split(" AND "):
            found = conn.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?", (term,)).fetchall()
            assert found == [(1,)], term
    finally:
        conn.close()


def test_a_new_store_starts_with_nothing_indexed(tmp_path):
    conn = connect_writer(str(tmp_path / "t.db"))
    try:
        migrate(conn)
        assert indexed_through(conn) == 0
        conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        conn.close()
