"""Full-text search on PostgreSQL: the same words as SQLite's FTS5 index, in a ``tsvector``.

Users type the same query language on both stores (``sqlite/text.py``): words of letters and
digits, all required, in any order, ``*`` at the end of a word for a prefix. To find the same
messages, the words are not cut by a PostgreSQL text-search parser (its ``default`` parser keeps
``12.5``, ``a-b``, e-mail addresses and paths as tokens of their own) but here, in Python, the
way FTS5's ``unicode61`` tokenizer cuts them: a run of letters and digits is a word, everything
else separates, lower case, diacritics removed. ``array_to_tsvector`` stores those words as they
are; a query is a ``tsquery`` of the same words (``'doe' & 'jane':*``), so no stemming, no stop
words, and no query syntax reaches the server from a user.

Where results can still differ (docs/two-nodes.md): Python's and SQLite's ideas of which
characters are letters follow different Unicode versions, so a rare script may split differently;
and a word longer than 2,046 bytes is not indexed by PostgreSQL (too long for a ``tsvector``).

The words are written in bulk after each message's commit (writer ``stage``), as with FTS5, and
``text_index`` keeps the high-water mark that ``catch_up`` and pruning rely on. GIN keeps no order:
a search of a common word reads all its matches (a bitmap) and sorts them by id, where FTS5 walks
its doclist newest first, so a word in most of a million messages costs more here.
"""

from __future__ import annotations

import re
import unicodedata

from engine.store.sqlite.text import MAX_WORDS, WATERMARK_SQL  # noqa: F401 - shared
from engine.store.sqlite import text as sqlite_text
from engine.store.sqlite.text import _WORD

TEXT_INSERT_SQL = "INSERT INTO message_text (id, words) VALUES (?, array_to_tsvector(?::text[]))"
TEXT_DELETE_SQL = "DELETE FROM message_text WHERE id = ?"
MATCH_EXISTS = "EXISTS (SELECT 1 FROM message_text t WHERE t.id = m.id AND t.words @@ ?::tsquery)"
MATCH_FROM = "message_text f JOIN messages m ON m.id = f.id"
MATCH_WHERE = "f.words @@ ?::tsquery"
MATCH_ROWID = "f.id"

_TOKEN = re.compile(r"[^\W_]+")
_LONGEST = 2046  # bytes: PostgreSQL's limit for one lexeme


def _fold(text: str) -> str:
    """Lower case without diacritics (FTS5 ``remove_diacritics 2``: José -> jose)."""
    text = text.lower()
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def words(raw: str | None) -> list[str]:
    """A message's distinct words, as the index stores them."""
    if not raw:
        return []
    found = dict.fromkeys(_TOKEN.findall(_fold(raw)))
    return [w for w in found if len(w.encode("utf-8")) <= _LONGEST]


def match_expression(text: str) -> str:
    """The ``tsquery`` for a user's words: ``'doe' & 'jane':*``. ValueError as in SQLite."""
    terms = [w.lower() for w in _WORD.findall(str(text))]
    if not terms:
        raise ValueError("text search needs at least one word (letters or digits)")
    if len(terms) > MAX_WORDS:
        raise ValueError(f"text search takes at most {MAX_WORDS} words")
    out = []
    for term in dict.fromkeys(terms):
        prefix = term.endswith("*")
        for word in _TOKEN.findall(_fold(term.rstrip("*"))) or [""]:
            if word:
                out.append(f"'{word}'")
        if prefix and out:
            out[-1] += ":*"
    if not out:
        raise ValueError("text search needs at least one word (letters or digits)")
    return " & ".join(dict.fromkeys(out))


def catch_up(conn) -> int:
    """``sqlite/text.py``'s catch-up (the same high-water mark), into ``message_text``."""
    return sqlite_text.catch_up(conn, TEXT_INSERT_SQL + " ON CONFLICT (id) DO NOTHING",
                                lambda rows: [(message_id, words(raw)) for message_id, raw in rows])


def _count_matches(conn, text: str, cap: int) -> int:
    return conn.execute("SELECT count(*) FROM (SELECT 1 FROM message_text WHERE words @@ ?::tsquery LIMIT ?)",
                        (match_expression(text), cap)).fetchone()[0]


def probe_is_cheaper(conn, filters: dict) -> bool:
    """``sqlite/text.py``'s rule (same thresholds), counting matches in ``message_text``."""
    return sqlite_text.probe_is_cheaper(conn, filters, count_matches=_count_matches)
