"""Where a PostgreSQL write's time goes: the writer's statements for one message, batches of 8 on
one connection, in four ways that take turns (medians over ``--rounds``):

- ``plain``: each statement waited for;
- ``pipelined``: the store's way (``engine/store/postgres/connection.py``): a write's statements in
  pipeline mode, waiting for its duplicate lookup and its end;
- ``batch-pipeline``: one pipeline over the whole batch, waiting only for each duplicate lookup
  (not safe as it stands: a failed write's error would surface in the next write);
- ``batched-lookup``: the batch's duplicate lookups in one query, then its inserts pipelined with
  one wait, each in its own savepoint;
- ``run-executemany`` and ``run-multirow``: the store's batch-wide write as it is built
  (``engine/store/sqlite/put_many.py`` through ``PgConnection``: one ``SAVEPOINT run``, the
  batch's lookups in one query, one wait), its message rows by ``executemany`` in the pipeline
  (what the store does) or by one multi-row INSERT.

    .venv/bin/python bench/pg_statements.py --store-url postgresql://127.0.0.1:5432/
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgdb import fresh_database  # noqa: E402

from engine.store.postgres.connection import PgConnection, _run  # noqa: E402
from engine.store.postgres.schema import migrate  # noqa: E402
from engine.store.sqlite.put_many import DEDUPE_MANY_SQL  # noqa: E402
from engine.store.sqlite.schema import DEDUPE_SQL  # noqa: E402

INSERT = ("INSERT INTO messages (id, channel, received_at, status, sha256, raw)"
          " VALUES (?, 'ch', '2026', 'RECEIVED', 'x', ?)")
LOOKUP_MANY = ("SELECT control_id, id FROM messages WHERE channel = %s AND control_id = ANY(%s)"
               " AND sha256 = %s AND received_at >= %s")
MODES = ("plain", "pipelined", "batch-pipeline", "batched-lookup", "run-executemany", "run-multirow")


def batch(conn: PgConnection, mode: str, ids: list[int], raw: str) -> None:
    """One group commit's worth of writes (8 messages) in ``mode``."""
    conn.execute("BEGIN")
    if mode == "plain":
        for n in ids:
            conn.raw.execute("SAVEPOINT op")
            conn.execute(DEDUPE_SQL, ("ch", f"C{n}", "x", "2020")).fetchone()
            _ = conn.execute(INSERT, (n, raw)).lastrowid
            conn.raw.execute("RELEASE op")
    elif mode == "pipelined":
        for n in ids:
            conn.execute("SAVEPOINT op")
            conn.execute(DEDUPE_SQL, ("ch", f"C{n}", "x", "2020")).fetchone()
            _ = conn.execute(INSERT, (n, raw)).lastrowid
            conn.execute("RELEASE op")
    elif mode == "batch-pipeline":
        with conn.raw.pipeline():
            for n in ids:
                conn.raw.execute("SAVEPOINT op")
                _run(conn.raw, DEDUPE_SQL, ("ch", f"C{n}", "x", "2020"), lazy=True).fetchone()
                _run(conn.raw, INSERT, (n, raw), lazy=True)
                conn.raw.execute("RELEASE op")
    elif mode.startswith("run-"):
        conn.execute("SAVEPOINT run")
        rows = ", ".join(["(?, ?, ?, ?, ?)"] * len(ids))
        conn.execute(DEDUPE_MANY_SQL.format(rows=rows),
                     [v for n in ids for v in (n, "ch", f"C{n}", "x", "2020")]).fetchall()
        if mode == "run-executemany":
            conn.executemany(INSERT, [(n, raw) for n in ids])
        else:
            values = ", ".join(["(?, 'ch', '2026', 'RECEIVED', 'x', ?)"] * len(ids))
            conn.execute(INSERT.split(" VALUES ")[0] + " VALUES " + values, [v for n in ids for v in (n, raw)])
        conn.execute("RELEASE run")
    else:
        conn.raw.execute(LOOKUP_MANY, ("ch", [f"C{n}" for n in ids], "x", "2020")).fetchall()
        with conn.raw.pipeline():
            for n in ids:
                conn.raw.execute("SAVEPOINT op")
                _run(conn.raw, INSERT, (n, raw), lazy=True)
                conn.raw.execute("RELEASE op")
    conn.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-url", required=True)
    parser.add_argument("--batches", type=int, default=40, help="batches of 8 per mode and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    conn = PgConnection(fresh_database(args.store_url))
    migrate(conn.raw)
    raw = "MSH|^~\\\\&|EPIC|MERCY|AGENCY|COLLECT|20261125030412||ADT^A08|X|P|2.5.1\\r" + "ZPD|" + "X" * 1000 + "\\r"
    n = 0
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _round in range(args.rounds):
        for mode in MODES:
            began = time.perf_counter()
            for _ in range(args.batches):
                batch(conn, mode, list(range(n + 1, n + 9)), raw)
                n += 8
            rates[mode].append(args.batches * 8 / (time.perf_counter() - began))
    reference = statistics.median(rates["pipelined"])
    for mode in MODES:
        median = statistics.median(rates[mode])
        print(f"{mode:15} median {median:6.0f} writes/s ({median / reference:.2f} of pipelined);"
              f" rounds {[round(rate) for rate in rates[mode]]}")
    conn.close()


if __name__ == "__main__":
    main()
