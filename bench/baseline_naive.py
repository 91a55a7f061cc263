"""The naive reference: python-hl7's asyncio MLLP server, a full parse and one commit per message.

This is what one would write first, and what the issue measured at ~590 / 650 msg/s (1 / 8
connections): ``hl7.mllp.start_hl7_server`` hands each connection a reader whose
``readmessage()`` does a full ``hl7.parse``; each message is INSERTed into SQLite with the
default journal and ``synchronous=FULL`` and committed on its own, on the event loop, before the
ACK built by ``Message.create_ack`` is written back. It is deliberately not optimised: it is the
yardstick the engine is compared with.

    python bench/baseline_naive.py --port 0 --db /tmp/naive.db   # prints "READY <port>"
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sqlite3
import sys

import hl7
import hl7.mllp

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    control_id TEXT,
    type TEXT,
    raw TEXT NOT NULL
)
"""


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=FULL")
    db.execute(SCHEMA)
    db.commit()
    return db


def make_handler(db: sqlite3.Connection):
    """A per-connection coroutine: read, parse, store, commit, ACK, until the peer goes away."""

    async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not writer.is_closing():
                try:
                    message = await reader.readmessage()
                except (asyncio.IncompleteReadError, hl7.mllp.InvalidBlockError, ValueError):
                    break
                msh = message.segment("MSH")
                db.execute(
                    "INSERT INTO messages (received_at, control_id, type, raw) VALUES (?, ?, ?, ?)",
                    (
                        datetime.datetime.now(datetime.timezone.utc).isoformat(),
                        str(msh(10)),
                        str(msh(9)),
                        str(message),
                    ),
                )
                db.commit()
                writer.writemessage(message.create_ack("AA"))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handle


async def serve(host: str, port: int, db_path: str) -> None:
    db = open_db(db_path)
    server = await hl7.mllp.start_hl7_server(
        make_handler(db), host=host, port=port, encoding="utf-8", limit=1024 * 1024
    )
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="naive python-hl7 + SQLite MLLP server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", required=True, help="SQLite file (created if missing)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.db))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
