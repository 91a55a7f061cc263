"""Store throughput: N concurrent callers of ``put_processed`` through the real reactor.

Each caller loops put -> wait for the commit -> put, like an MLLP connection that ACKs only once
the message is stored (stored as RECEIVED: the message row, its metadata and its words, no
deliveries). Prints messages per second and writes per commit, without metadata and
with two metadata fields whose values are scattered like real MRNs and account numbers (each is
one random-keyed index insert, which is what costs most: about one 4 KB WAL page per field per
message once the index outgrows a batch), and the bytes stored per message for a full pipeline
(received, transformed, one destination queued then sent).

    .venv/bin/python bench/store_bench.py [--messages 40000] [--concurrency 1 64]
    .venv/bin/python bench/store_bench.py --delivery-ids   # how the batch-wide write learns delivery ids
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.internet import defer, task  # noqa: E402

from engine.store import Store  # noqa: E402


def adt_a08(n: int) -> str:
    """A synthetic 1.1 KB ADT^A08 (no real person), unique per n like real traffic."""
    segments = [
        f"MSH|^~\\&|EPIC|MERCY|AGENCY|COLLECT|20261125030412||ADT^A08^ADT_A01|CTRL{n:09d}|P|2.5.1",
        "EVN|A08|20261125030412|||JSMITH^SMITH^JOHN",
        f"PID|1||{mrn(n)}^^^MERCY^MR||DOE^JANE^Q^^^^L||19700101|F|||123 MAIN ST^^SPRINGFIELD"
        "^IL^62701^USA^H||(217)555-0100^PRN^PH|||S||{account(n)}^^^MERCY^AN|999-99-9999",
        "PV1|1|O|CLINIC^101^1^MERCY||||1234567^WELBY^MARCUS^^^DR|||MED||||1|||1234567^WELBY^MARCUS"
        "^^^DR|OP|VN0000001|SELF|||||||||||||||||||MERCY||||||20261120080000|20261120090000",
        "GT1|1||DOE^JANE^Q||123 MAIN ST^^SPRINGFIELD^IL^62701^USA|(217)555-0100||19700101|F||SE",
        "IN1|1|SELFPAY|SELF|SELF PAY||||||||||||DOE^JANE^Q|SE|19700101|123 MAIN ST^^SPRINGFIELD^IL",
        "NK1|1|DOE^JOHN^R|SPO^SPOUSE|123 MAIN ST^^SPRINGFIELD^IL^62701^USA|(217)555-0101",
        "DG1|1|I10|R07.9^CHEST PAIN, UNSPECIFIED^I10||20261120|A",
        "ZAC|BALANCE^1234.56|AGE^120|LASTPAY^20260701|PLACEMENT^PRIMARY",
    ]
    text = "\r".join(segments) + "\r"
    return text + "ZPD|" + "X" * max(0, 1100 - len(text) - 5) + "\r"


def mrn(n: int) -> str:
    """Scattered like real MRNs (a random-keyed index insert each), unlike the sequential n."""
    return f"MRN{n * 2654435761 % 10**8:08d}"


def account(n: int) -> str:
    return f"ACCT{n * 40503 % 10**8:08d}"


def transformed_for(n: int) -> str:
    return json.dumps(
        {
            "account": account(n),
            "mrn": mrn(n),
            "guarantor": {"family": "DOE", "given": "JANE", "dob": "1970-01-01"},
            "address": {"line": "123 MAIN ST", "city": "SPRINGFIELD", "state": "IL", "zip": "62701"},
            "balance": "1234.56",
            "age_days": 120,
            "service_date": "2026-11-20",
            "facility": "MERCY",
            "placement": "PRIMARY",
            "phone": "(217)555-0100",
            "reference": f"CTRL{n:09d}",
            "notes": "self-pay balance aged past 90 days; no payment plan on file" * 3,
        }
    )


async def ingest(store: Store, total: int, concurrency: int, with_meta: bool) -> float:
    counter = iter(range(total))
    messages = [adt_a08(i) for i in range(total)]
    metas = [{"mrn": mrn(n), "account": account(n)} if with_meta else None for n in range(total)]

    async def caller():
        for n in counter:
            await store.put_processed(
                "bench", messages[n], message_id=store.reserve_id(), status="RECEIVED", type="ADT^A08",
                control_id=f"CTRL{n:09d}", meta=metas[n], dedupe_seconds=86400,
            )

    start = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(caller()) for _ in range(concurrency)])
    return time.perf_counter() - start


async def storage(store: Store, total: int) -> None:
    """The whole life of each message, to measure what the store keeps per message."""
    async def one(n):
        body = transformed_for(n)
        _mid, _dup, _status, ids = await store.put_processed(
            "size", adt_a08(n), message_id=store.reserve_id(), status="QUEUED", transformed=body,
            deliveries=[{"destination": "agency-api", "status": "QUEUED", "body": body}],
            type="ADT^A08", control_id=f"CTRL{n:09d}", meta={"mrn": mrn(n), "account": account(n)},
            dedupe_seconds=86400,
        )
        await store.record_attempt(ids["agency-api"], ok=True, response='{"status":"accepted"}',
                                   final_status="SENT")

    sem = defer.DeferredSemaphore(64)
    await defer.gatherResults([sem.run(lambda n=n: defer.ensureDeferred(one(n))) for n in range(total)])


def open_bench_store(tmp: str, reactor, store_url: str | None) -> Store:
    """An SQLite store in ``tmp``, or (``--store-url``) a PostgreSQL one in a fresh database."""
    if not store_url:
        return Store(os.path.join(tmp, "bench.db"), reactor)
    from pgdb import fresh_database

    from engine.store.postgres.store import PgStore

    return PgStore(fresh_database(store_url), reactor)


async def main(reactor, args) -> None:
    for with_meta in (False, True):
        for concurrency in args.concurrency:
            with tempfile.TemporaryDirectory() as tmp:
                store = open_bench_store(tmp, reactor, args.store_url)
                total = args.messages if concurrency > 1 else min(args.messages, 5000)
                elapsed = await ingest(store, total, concurrency, with_meta)
                stats = dict(store.stats)
                await store.close()
            print(
                f"put RECEIVED  metadata={2 if with_meta else 0} concurrency={concurrency:<3d} "
                f"messages={total:<6d} {total / elapsed:9,.0f} msg/s "
                f"{elapsed / total * 1e6:7.1f} us/msg  commits={stats['commits']} "
                f"writes/commit={stats['ops'] / max(1, stats['commits']):.1f}"
            )
    if args.no_size or args.store_url:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "size.db")
        store = Store(path, reactor)
        await storage(store, args.size_messages)
        await store.close()
        raw_size = len(adt_a08(0))
        per = os.path.getsize(path) / args.size_messages
        print(f"stored size   {per:,.0f} bytes per message (raw {raw_size} B, transformed "
              f"{len(transformed_for(0))} B, 1 destination sent, 2 metadata fields)")


def delivery_ids(rounds: int) -> None:
    """``--delivery-ids``: SQLite's three ways to insert a batch's delivery rows and learn their ids
    (the batch-wide ingest write, ``engine/store/sqlite/put_many.py``), CPU per row (process time,
    best of ``rounds``), each batch rolled back so every way sees the same table: one INSERT per
    row and its ``lastrowid`` (the one-write-at-a-time path); one multi-row INSERT ... RETURNING;
    ``executemany`` and one SELECT of the rows back by message id range."""
    from engine.store.sqlite import put_many
    from engine.store.sqlite.schema import connect_writer, migrate

    with tempfile.TemporaryDirectory() as tmp:
        conn = connect_writer(os.path.join(tmp, "ids.db"))
        migrate(conn)
        conn.executemany(put_many.MESSAGE_INSERT_SQL, [put_many.message_row(
            n, "ch", "2026", "QUEUED", "", f"C{n}", "", "hl7", None, "x", "raw", "T", None, None) for n in range(1, 9)])

        def lastrowid(rows):
            return {(r[0], r[2]): conn.execute(put_many.DELIVERY_INSERT_SQL, r).lastrowid for r in rows}

        def returning(rows):
            return put_many.insert_deliveries(conn, rows)

        def read_back(rows):
            conn.executemany(put_many.DELIVERY_INSERT_SQL, rows)
            wanted = {r[0] for r in rows}
            return {(m, d): i for i, m, d in conn.execute(
                "SELECT id, message_id, destination FROM deliveries WHERE message_id BETWEEN ? AND ?",
                (min(wanted), max(wanted))) if m in wanted}

        for per_message in (1, 3):
            rows = [put_many.delivery_row(n, "ch", f"dest{k}", "QUEUED", "T", None, "T", "2026")
                    for n in range(1, 9) for k in range(per_message)]
            for name, way in (("lastrowid", lastrowid), ("returning", returning), ("read-back", read_back)):
                best = float("inf")
                for _ in range(rounds):
                    began = time.process_time()
                    for _ in range(200):
                        conn.execute("BEGIN")
                        assert len(way(rows)) == len(rows)
                        conn.execute("ROLLBACK")
                    best = min(best, time.process_time() - began)
                print(f"delivery ids  {per_message} per message, batches of 8 messages: {name:10} "
                      f"{best / 200 / len(rows) * 1e6:5.1f} us per row (BEGIN/ROLLBACK included)")
        conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delivery-ids", action="store_true", help="only the delivery-id comparison (SQLite)")
    parser.add_argument("--messages", type=int, default=40000)
    parser.add_argument("--size-messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--store-url", metavar="URL", help="PostgreSQL server: a fresh database per run")
    parser.add_argument("--no-size", action="store_true", help="skip the stored-size measure")
    args = parser.parse_args()
    if args.delivery_ids:
        delivery_ids(rounds=7)
        sys.exit(0)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args)))
