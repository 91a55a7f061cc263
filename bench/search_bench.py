"""Search speed over a large store (DESIGN §5: indexed search <= 5 ms, text search <= 100 ms over
a million messages).

Generates N messages (default 1,000,000) straight into a store file through the real schema
(``store_schema.migrate``: every index, the full-text index, the planner statistics), then
times ``Store.search`` for each kind of query the CLI and the admin API offer and prints a
table of medians.

    .venv/bin/python bench/search_bench.py [--messages 1000000] [--runs 15] [--keep DIR]
    make bench-search

The messages are synthetic HL7 v2 (no real person): ADT/ORU/DFT/SIU of ~1.1 KB with varied
family and given names (so a name is a word in ~0.1-1 % of messages), MRNs, account numbers,
addresses and phone numbers, a free-text NTE, three metadata fields (mrn, account, facility),
statuses as a busy engine has them (mostly SENT, some FILTERED, ERROR, QUEUED), on ten channels
of unequal volume, received over 60 days in id order. Generation writes in big transactions with
``synchronous=OFF`` (a bench shortcut; the daemon commits every message durably) and indexes the
text in bulk at the end, the way a migration would.

Each query is run ``--runs`` times with different values (another MRN, another hour), and the
median is reported with the slowest run. The file was just written, so the OS page cache is
warm: these are a running engine's numbers, not a cold start's. Every query is a read through a
read-only connection, as the CLI and the admin API make them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from engine.store.sqlite.store import Store  # noqa: E402
from engine.store.sqlite.schema import FTS_TABLE, connect_writer, iso_utc, migrate  # noqa: E402

START = 1_790_000_000.0  # received_at of the first message (epoch seconds)
DAYS = 60
CHANNELS = [("ehr-adt", 30), ("ehr-billing", 20), ("lab-results", 15), ("radiology", 8),
            ("scheduling", 7), ("pharmacy", 6), ("agency-payments", 5), ("placements", 4),
            ("recalls", 3), ("account-status", 2)]
TYPES = [("ADT^A08", 30), ("ADT^A04", 12), ("ADT^A01", 8), ("ADT^A03", 8), ("ORU^R01", 20),
         ("DFT^P03", 12), ("SIU^S12", 6), ("MDM^T02", 4)]
STATUSES = [("SENT", 90), ("FILTERED", 5), ("TRANSFORMED", 2), ("ERROR", 2), ("QUEUED", 1)]
FAMILY = """SMITH JOHNSON WILLIAMS BROWN JONES GARCIA MILLER DAVIS RODRIGUEZ MARTINEZ HERNANDEZ
LOPEZ GONZALEZ WILSON ANDERSON THOMAS TAYLOR MOORE JACKSON MARTIN LEE PEREZ THOMPSON WHITE HARRIS
SANCHEZ CLARK RAMIREZ LEWIS ROBINSON WALKER YOUNG ALLEN KING WRIGHT SCOTT TORRES NGUYEN HILL FLORES
GREEN ADAMS NELSON BAKER HALL RIVERA CAMPBELL MITCHELL CARTER ROBERTS GOMEZ PHILLIPS EVANS TURNER
DIAZ PARKER CRUZ EDWARDS COLLINS REYES STEWART MORRIS MORALES MURPHY COOK ROGERS GUTIERREZ ORTIZ
MORGAN COOPER PETERSON BAILEY REED KELLY HOWARD RAMOS KIM COX WARD RICHARDSON WATSON BROOKS CHAVEZ
WOOD JAMES BENNETT GRAY MENDOZA RUIZ HUGHES PRICE ALVAREZ CASTILLO SANDERS PATEL MYERS LONG ROSS
FOSTER JIMENEZ""".split()
GIVEN = """JAMES MARY ROBERT PATRICIA JOHN JENNIFER MICHAEL LINDA DAVID ELIZABETH WILLIAM BARBARA
RICHARD SUSAN JOSEPH JESSICA THOMAS SARAH CHARLES KAREN CHRISTOPHER LISA DANIEL NANCY MATTHEW BETTY
ANTHONY MARGARET MARK SANDRA DONALD ASHLEY STEVEN KIMBERLY PAUL EMILY ANDREW DONNA JOSHUA MICHELLE
KENNETH CAROL KEVIN AMANDA BRIAN DOROTHY GEORGE MELISSA TIMOTHY DEBORAH JOSÉ ZOË""".split()
STREETS = "MAIN OAK PINE MAPLE CEDAR ELM WASHINGTON LAKE HILL PARK VIEW FIRST SECOND THIRD".split()
CITIES = [("SPRINGFIELD", "IL", "627"), ("PEORIA", "IL", "616"), ("DECATUR", "IL", "625"),
          ("CHAMPAIGN", "IL", "618"), ("BLOOMINGTON", "IL", "617"), ("URBANA", "IL", "618")]
NOTES = ("patient called about balance payment plan declined insurance pending review statement "
         "mailed guarantor updated address verified voicemail left promised payment dispute "
         "collections hold charity application received").split()
FACILITIES = ["MERCY", "STJOHN", "MEMORIAL", "CHILDRENS", "NORTHSIDE"]
SEGMENT_TYPES = {"ADT": "ADT_A01", "ORU": "ORU_R01", "DFT": "DFT_P03", "SIU": "SIU_S12", "MDM": "MDM_T02"}


def weighted(pairs, rng: random.Random, n: int) -> list:
    values, weights = zip(*pairs)
    return rng.choices(values, weights=weights, k=n)


def mrn(n: int) -> str:
    return f"MRN{n * 2654435761 % 10**8:08d}"


def account(n: int) -> str:
    return f"ACCT{n * 40503 % 10**8:08d}"


def patient(n: int) -> int:
    """Messages come about patients, several per patient (a visit makes a few)."""
    return n // 3


def message(n: int, type_: str, rng: random.Random, when: float) -> str:
    p = patient(n)
    prng = random.Random(p)  # the patient's own details, the same in each of their messages
    family, given = prng.choice(FAMILY), prng.choice(GIVEN)
    city, state, zip3 = prng.choice(CITIES)
    street = f"{prng.randrange(1, 9999)} {prng.choice(STREETS)} ST"
    phone = f"({prng.choice(['217', '309', '312'])}){prng.randrange(200, 999)}-{prng.randrange(10000):04d}"
    dob = f"19{prng.randrange(30, 99)}{prng.randrange(1, 13):02d}{prng.randrange(1, 29):02d}"
    facility = FACILITIES[p % len(FACILITIES)]
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(when))
    code, trigger = type_.split("^")
    segments = [
        f"MSH|^~\\&|EPIC|{facility}|SWITCHBOARD|AGENCY|{stamp}||{type_}^{SEGMENT_TYPES[code]}|CTRL{n:010d}|P|2.5.1",
        f"EVN|{trigger}|{stamp}|||{prng.choice(GIVEN)[0]}{prng.choice(FAMILY)}^{prng.choice(FAMILY)}",
        f"PID|1||{mrn(p)}^^^{facility}^MR||{family}^{given}^{prng.choice('ABCDEFGHJKLMNPRSTW')}^^^^L||{dob}|"
        f"{prng.choice('MF')}|||{street}^^{city}^{state}^{zip3}{prng.randrange(100):02d}^USA^H||{phone}^PRN^PH|||"
        f"{prng.choice('SMWD')}||{account(p)}^^^{facility}^AN|999-{prng.randrange(100):02d}-{prng.randrange(10000):04d}",
        f"PV1|1|{rng.choice('OIE')}|{rng.choice(['CLINIC', 'WARD', 'ER'])}^{rng.randrange(100, 999)}^1^{facility}||||"
        f"{rng.randrange(10**6, 10**7)}^{rng.choice(FAMILY)}^{rng.choice(GIVEN)}^^^DR|||MED||||1|||||"
        f"VN{n:08d}|{rng.choice(['SELF', 'BCBS', 'MCR', 'MCD'])}",
    ]
    if code == "ORU":
        segments += [f"OBR|1|{n}|{n}|{rng.choice(['CBC', 'BMP', 'LIPID', 'A1C'])}^PANEL|||{stamp}"]
        segments += [f"OBX|{i}|NM|{rng.randrange(1000, 9999)}-{rng.randrange(10)}^{rng.choice(['WBC', 'HGB', 'PLT', 'GLU', 'NA', 'K'])}"
                     f"||{rng.randrange(10, 400) / 10}|{rng.choice(['g/dL', 'mmol/L', '10*3/uL'])}|||||F" for i in range(1, 6)]
    else:
        segments += [
            f"GT1|1||{family}^{given}||{street}^^{city}^{state}^{zip3}00^USA|{phone}||{dob}|||SE",
            f"IN1|1|{rng.choice(['SELFPAY', 'BCBS01', 'MCR01'])}|{rng.randrange(10**5, 10**6)}|"
            f"{rng.choice(['SELF PAY', 'BLUE CROSS', 'MEDICARE'])}||||||||||||{family}^{given}|SE|{dob}",
            f"ZAC|BALANCE^{rng.randrange(100, 10**6) / 100}|AGE^{rng.randrange(400)}|PLACEMENT^"
            f"{rng.choice(['PRIMARY', 'SECONDARY', 'NONE'])}",
        ]
    segments.append("NTE|1||" + " ".join(rng.choice(NOTES) for _ in range(rng.randrange(35, 90))))
    return "\r".join(segments) + "\r"


def generate(path: str, total: int, seed: int = 7, chunk: int = 50_000) -> dict:
    """Write ``total`` messages into a new store at ``path``; return what the queries need."""
    conn = connect_writer(path)
    migrate(conn)
    conn.execute("PRAGMA synchronous=OFF")   # bench shortcut: nothing here needs to survive a crash
    conn.execute("PRAGMA cache_size=-262144")  # 256 MB while loading (random metadata values)
    rng = random.Random(seed)
    step = DAYS * 86400 / total
    sample = {"mrn": [], "account": [], "control_id": [], "family": []}
    started = time.perf_counter()
    raw_bytes = 0
    for base in range(0, total, chunk):
        count = min(chunk, total - base)
        channels = weighted(CHANNELS, rng, count)
        types = weighted(TYPES, rng, count)
        statuses = weighted(STATUSES, rng, count)
        rows, meta = [], []
        for i in range(count):
            n = base + i + 1
            when = START + n * step
            raw = message(n, types[i], rng, when)
            raw_bytes += len(raw)
            at = iso_utc(when)
            status = statuses[i]
            rows.append((n, channels[i], at, status, types[i], f"CTRL{n:010d}", "EPIC", "hl7",
                         at, hashlib.sha256(raw.encode()).hexdigest(),
                         "processing failed: destination refused" if status == "ERROR" else None, raw))
            p = patient(n)
            meta += [(n, "mrn", mrn(p)), (n, "account", account(p)),
                     (n, "facility", FACILITIES[p % len(FACILITIES)])]
            if rng.random() < max(0.0002, 50 / total):
                sample["mrn"].append(mrn(p))
                sample["account"].append(account(p))
                sample["control_id"].append((channels[i], f"CTRL{n:010d}"))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO messages (id, channel, received_at, status, type, control_id, sender, inbound,"
            " processed_at, sha256, error, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO metadata (message_id, key, value) VALUES (?, ?, ?)", meta)
        conn.execute("COMMIT")
        done = base + count
        print(f"\r  generated {done:,} / {total:,} messages ({time.perf_counter() - started:.0f} s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {FTS_TABLE} (rowid, raw) SELECT id, raw FROM messages")
    conn.execute("UPDATE text_index SET indexed_through = (SELECT max(id) FROM messages)")
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    sample["family"] = FAMILY[:]
    return {"seconds": time.perf_counter() - started, "raw_bytes": raw_bytes, "sample": sample,
            "size": os.path.getsize(path)}


def queries(sample: dict, rng: random.Random, total: int) -> list[tuple[str, str, callable]]:
    """(kind, label, make_filters(run)) for each query of the table."""
    span = DAYS * 86400

    def at(fraction: float) -> float:
        return START + fraction * span

    def hour(run):
        start = at(rng.random() * 0.98)
        return {"since": start, "until": start + 3600}

    def day(run):
        start = at(rng.random() * 0.98)
        return {"since": start, "until": start + 86400}

    pick = lambda key: lambda run: sample[key][run % len(sample[key])]  # noqa: E731
    mrns, accounts, cids, families = pick("mrn"), pick("account"), pick("control_id"), pick("family")
    return [
        ("index", "newest 100, no filter", lambda r: {}),
        ("index", "meta mrn=X", lambda r: {"meta": {"mrn": mrns(r)}}),
        ("index", "meta account=X", lambda r: {"meta": {"account": accounts(r)}}),
        ("index", "channel + meta mrn=X", lambda r: {"channel": "ehr-adt", "meta": {"mrn": mrns(r)}}),
        ("index", "meta mrn=X + facility=Y", lambda r: {"meta": {"mrn": mrns(r), "facility": "MERCY"}}),
        ("index", "control id", lambda r: {"control_id": cids(r)[1]}),
        ("index", "channel + control id", lambda r: {"channel": cids(r)[0], "control_id": cids(r)[1]}),
        ("index", "time window: 1 hour", hour),
        ("index", "time window: 1 day, channel", lambda r: {**day(r), "channel": "radiology"}),
        ("index", "channel + status ERROR", lambda r: {"channel": "ehr-billing", "status": "ERROR"}),
        ("index", "status QUEUED", lambda r: {"status": "QUEUED"}),
        ("index", "status ERROR + 1 day", lambda r: {**day(r), "status": "ERROR"}),
        ("index", "type ADT^A08", lambda r: {"type": "ADT^A08"}),
        ("index", "type ADT (every trigger)", lambda r: {"type": "ADT"}),
        ("index", "channel + type ADT + 1 day", lambda r: {**day(r), "channel": "ehr-adt", "type": "ADT"}),
        ("index", "page 50 (offset 4,900)", lambda r: {"offset": 4900}),
        ("index", "keyset page (before_id)", lambda r: {"before_id": total // 2 + r}),
        ("text", "text: an MRN", lambda r: {"text": mrns(r)}),
        ("text", "text: an account number", lambda r: {"text": accounts(r)}),
        ("text", "text: family name (first 100)", lambda r: {"text": families(r)}),
        ("text", "text: family + given name", lambda r: {"text": f"{families(r)} MARY"}),
        ("text", "text: prefix MRN0012*", lambda r: {"text": f"MRN{r % 100:02d}12*"}),
        ("text", "text: common word (first 100)", lambda r: {"text": "balance"}),
        ("text", "text: name + channel", lambda r: {"text": families(r), "channel": "lab-results"}),
        ("text", "text: name + 1 day", lambda r: {"text": families(r), **day(r)}),
        ("text", "text: common word + 1 day", lambda r: {"text": "balance", **day(r)}),
        ("text", "text: name + channel + 1 day", lambda r: {"text": families(r), "channel": "pharmacy", **day(r)}),
        ("text", "text: MRN + last 30 days", lambda r: {"text": mrns(r), "since": at(0.5)}),
        ("text", "text: MRN + status SENT", lambda r: {"text": mrns(r), "status": "SENT"}),
        ("text", "text: name + control id", lambda r: {"text": families(r), "control_id": cids(r)[1]}),
        ("text", "text: name + meta mrn", lambda r: {"text": families(r), "meta": {"mrn": mrns(r)}}),
        # A word in most messages with a channel holding none of them: walking the word's matches
        # would read them all (0.7-2.7 s); the channel's few messages are probed instead.
        ("text", "text: common word + channel without it", lambda r: {"text": "balance", "channel": "none"}),
        ("text", "same, within 1 day", lambda r: {"text": "balance", "channel": "none", **day(r)}),
    ]


def measure(path: str, info: dict, runs: int, total: int) -> list[dict]:
    store = Store.open_readonly(path)
    rng = random.Random(11)
    results = []
    try:
        for kind, label, make in queries(info["sample"], rng, total):
            store.search(**make(0))  # warm this query's pages once
            times, sizes = [], []
            for run in range(runs):
                filters = make(run + 1)
                start = time.perf_counter()
                rows = store.search(**filters)
                times.append((time.perf_counter() - start) * 1000)
                sizes.append(len(rows))
            results.append({"kind": kind, "label": label, "median_ms": statistics.median(times),
                            "max_ms": max(times), "rows": statistics.median(sizes)})
    finally:
        store.close_readers()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keep", metavar="DIR", help="write the store into DIR and keep it")
    parser.add_argument("--reuse", action="store_true", help="with --keep: measure the store kept there")
    args = parser.parse_args()
    workdir = args.keep or tempfile.mkdtemp(prefix="switchboard-search-")
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, f"search-{args.messages}.db")
    try:
        if args.reuse and os.path.exists(path + ".json"):
            with open(path + ".json") as f:
                info = json.load(f)
        else:
            print(f"generating {args.messages:,} messages into {path}", file=sys.stderr)
            for leftover in (path, path + "-wal", path + "-shm"):
                if os.path.exists(leftover):
                    os.remove(leftover)
            info = generate(path, args.messages)
            with open(path + ".json", "w") as f:
                json.dump(info, f)
        print(f"generated in {info['seconds']:.0f} s: {info['size'] / 2**20:,.0f} MB "
              f"({info['size'] / args.messages:,.0f} B per message, raw {info['raw_bytes'] / args.messages:,.0f} B)")
        results = measure(path, info, args.runs, args.messages)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    goal = {"index": 5.0, "text": 100.0}
    print(f"\n{args.messages:,} messages, median of {args.runs} runs (each with other values), warm page cache\n")
    print("| query | kind | median ms | slowest ms | rows | goal |")
    print("|---|---|---|---|---|---|")
    for r in results:
        met = "met" if r["median_ms"] <= goal[r["kind"]] else "NOT met"
        print(f"| {r['label']} | {r['kind']} | {r['median_ms']:.2f} | {r['max_ms']:.2f} | {r['rows']:.0f} | "
              f"<= {goal[r['kind']]:.0f} ms: {met} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
