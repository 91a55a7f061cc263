"""Where a PostgreSQL write's time goes: the writer's statements for one message, 60 batches of 8,
on one connection, each statement waited for (plain) or the write pipelined (as the store does).

    .venv/bin/python bench/pg_statements.py --store-url postgresql://127.0.0.1:5432/
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgdb import fresh_database  # noqa: E402

from engine.store.postgres.connection import PgConnection  # noqa: E402
from engine.store.postgres.schema import migrate  # noqa: E402
from engine.store.sqlite.schema import DEDUPE_SQL  # noqa: E402

INSERT = ("INSERT INTO messages (id, channel, received_at, status, sha256, raw)"
          " VALUES (?, 'ch', '2026', 'RECEIVED', 'x', ?)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-url", required=True)
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    conn = PgConnection(fresh_database(args.store_url))
    migrate(conn.raw)
    raw = "MSH|^~\\\\&|EPIC|MERCY|AGENCY|COLLECT|20261125030412||ADT^A08|X|P|2.5.1\\r" + "ZPD|" + "X" * 1000 + "\\r"
    n = 0
    for mode in ("plain", "pipelined", "plain", "pipelined"):
        began, committing = time.perf_counter(), 0.0
        for _ in range(args.batches):
            conn.execute("BEGIN")
            for _ in range(8):
                n += 1
                (conn.execute if mode == "pipelined" else conn.raw.execute)("SAVEPOINT op")
                conn.execute(DEDUPE_SQL, ("ch", f"C{n}", "x", "2020")).fetchone()
                _ = conn.execute(INSERT, (n, raw)).lastrowid
                (conn.execute if mode == "pipelined" else conn.raw.execute)("RELEASE op")
            at = time.perf_counter()
            conn.execute("COMMIT")
            committing += time.perf_counter() - at
        elapsed = time.perf_counter() - began
        writes = args.batches * 8
        print(f"{mode:10} {(elapsed - committing) / writes * 1e6:6.0f} us of statements per write,"
              f" {committing / args.batches * 1e3:5.2f} ms per 8-write COMMIT, {writes / elapsed:5.0f} writes/s")
    conn.close()


if __name__ == "__main__":
    main()
