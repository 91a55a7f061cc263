"""Reads of the message store: every search filter and their combinations, the documented
shapes, counts, paging, message-code types, and a plan check for every search the CLI offers."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import pytest_twisted

from engine.store.sqlite import schema as store_schema, text as store_text
from engine.store import Store, StoreError
from engine.store.sqlite.schema import DEDUPE_SQL, IDEMPOTENCY_SQL
from engine.store.sqlite.queries import search_sql
from engine.store.sqlite.schema import connect_writer, migrate, to_iso
from support.pg import is_postgres
from support.store import assert_indexed, control_ids, hl7, plans_of, populate, put, settle


# --- reads ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_search_filters(store, clock):
    start = clock.now
    await populate(store, clock)
    assert control_ids(store.search()) == ["e", "d", "c", "b", "a"]  # newest first
    assert control_ids(store.search(channel="lab")) == ["e", "c"]
    assert control_ids(store.search(status="error")) == ["b"]  # status words are case-insensitive
    assert control_ids(store.search(status="RECEIVED")) == ["e"]
    assert control_ids(store.search(type="ADT^A08")) == ["e", "d", "a"]
    assert control_ids(store.search(control_id="c")) == ["c"]
    assert control_ids(store.search(meta={"mrn": "M1"})) == ["d", "c", "a"]
    assert control_ids(store.search(meta={"mrn": "M1", "account": "X3"})) == ["d"]
    since = dt.datetime.fromtimestamp(start + 1, dt.timezone.utc)
    assert control_ids(store.search(since=since)) == ["e", "d", "c", "b"]
    until = to_iso(start + 1).replace(".000Z", "Z")  # a plain ISO string works too
    assert control_ids(store.search(until=until)) == ["b", "a"]
    assert control_ids(store.search(since=start + 1, until=start + 3, channel="ehr")) == ["d", "b"]
    assert control_ids(store.search(channel="ehr", type="ADT^A08", status="queued")) == ["d"]
    assert control_ids(store.search(limit=2, offset=1)) == ["d", "c"]
    with pytest.raises(ValueError):
        store.search(status="delivered")


@pytest_twisted.ensureDeferred
async def test_a_summary_and_a_full_message_have_the_documented_shape(store, clock):
    ids = await populate(store, clock)
    summary = store.search(control_id="a")[0]
    assert set(summary) == {"id", "channel", "status", "received_at", "type", "control_id", "meta"}
    assert summary["meta"] == {"mrn": "M1", "account": "X1"}
    message = store.get_message(ids["a"])
    assert {"raw", "transformed", "error", "destinations"} <= set(message)
    assert {k: message[k] for k in summary} == summary
    json.dumps(message)  # the CLI prints it as it is
    assert store.get_message(999_999) is None


@pytest_twisted.ensureDeferred
async def test_channel_counts_and_unprocessed(store, clock):
    ids = await populate(store, clock)
    assert store.channel_counts() == {
        "ehr": {"received": 3, "filtered": 0, "queued": 1, "sent": 1, "errored": 1},
        "lab": {"received": 2, "filtered": 1, "queued": 0, "sent": 0, "errored": 0},
    }
    assert store.unprocessed("lab") == [ids["e"]]
    assert store.unprocessed("ehr") == []


@pytest_twisted.ensureDeferred
async def test_the_read_only_store_sees_the_daemons_writes(store):
    message_id, _ = await put(store, "ehr", hl7("C1"), control_id="C1")
    reader = type(store).open_readonly(store.path)
    try:
        assert [m["id"] for m in reader.search()] == [message_id]
        if not is_postgres(store):  # every reading thread has its own connection, with a small page cache
            assert reader._reader().execute("PRAGMA cache_size").fetchone()[0] == store_schema.READER_CACHE_KIB
        (ok, error), = await settle([put(reader, "ehr", hl7("C2"), control_id="C2")])
        assert not ok and isinstance(error, StoreError)  # it has no writer
    finally:
        await reader.close()


def test_opening_a_missing_store_read_only_is_a_store_error(tmp_path):
    with pytest.raises(StoreError):
        Store.open_readonly(tmp_path / "absent.db")


SINCE, UNTIL = "2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z"
ONE_OF_EACH = {  # every filter `switchboard messages` and the admin API offer
    "channel": {"channel": "ehr"},
    "status": {"status": "error"},
    "since": {"since": SINCE},
    "until": {"until": UNTIL},
    "window": {"since": SINCE, "until": UNTIL},
    "type": {"type": "ADT^A08"},
    "type code": {"type": "ADT"},
    "control id": {"control_id": "C1"},
    "meta": {"meta": {"mrn": "M1"}},
    "two meta": {"meta": {"mrn": "M1", "account": "X1"}},
    "text": {"text": "DOE"},
    "text prefix": {"text": "MRN*"},
    "before id": {"before_id": 3},
    "offset": {"offset": 2, "limit": 2},
}
COMBINATIONS = (
    [{}]
    + list(ONE_OF_EACH.values())
    + [{"channel": "ehr", **f} for name, f in ONE_OF_EACH.items() if name != "channel"]
    + [{"text": "DOE", **f} for name, f in ONE_OF_EACH.items() if not name.startswith("text")]
    + [{"channel": "ehr", "status": "queued", "since": SINCE, "until": UNTIL, "type": "ADT", "text": "JANE"},
       {"channel": "ehr", "type": "ADT", "meta": {"mrn": "M1"}, "before_id": 9},
       {"status": "sent", "control_id": "a", "text": "MRN1", "meta": {"account": "X1"}}]
)


@pytest.mark.parametrize("filters", COMBINATIONS, ids=lambda f: ",".join(sorted(f)) or "none")
@pytest.mark.sqlite_only  # SQLite's query plans
@pytest_twisted.ensureDeferred
async def test_every_search_uses_an_index(store, clock, filters):
    """Every statement a search runs, for each filter alone, with a channel, with text, and a few
    of everything: no plan reads a table or the full-text index from end to end."""
    await populate(store, clock)
    await store.flush_staged()
    assert_indexed(plans_of(store, lambda: store.search(**filters)))


@pytest.mark.parametrize(
    "filters, driver",
    [
        ({"channel": "ehr", "control_id": "C1"}, "idx_messages_dedupe"),
        ({"control_id": "C1"}, "idx_messages_dedupe"),  # control id first (m008)
        ({"channel": "ehr", "meta": {"mrn": "M1"}}, "idx_metadata_key_value"),
    ],
)
@pytest.mark.sqlite_only  # SQLite's query plans
@pytest_twisted.ensureDeferred
async def test_selective_searches_look_up_instead_of_walking_a_channel(store, filters, driver):
    plan = " | ".join(store.search_plan(**filters))
    assert driver in plan
    assert "idx_messages_channel_received" not in plan


def test_planner_statistics_name_real_indexes(tmp_path):
    conn = connect_writer(str(tmp_path / "s.db"))
    try:
        migrate(conn)
        indexes = set(conn.execute("SELECT tbl_name, name FROM sqlite_master WHERE type = 'index'"))
        stats = set(conn.execute("SELECT tbl, idx FROM sqlite_stat1"))
    finally:
        conn.close()
    assert set(store_schema.PLANNER_STATS) <= indexes
    assert set(store_schema.PLANNER_STATS) <= stats


@pytest.mark.sqlite_only  # SQLite's query plans
@pytest_twisted.ensureDeferred
async def test_the_other_reads_and_the_dedupe_lookups_use_an_index(store, clock):
    ids = await populate(store, clock)
    await store.set_message_result(ids["e"], status="QUEUED", transformed="t",
                                   deliveries=[{"destination": "agency", "body": "t"}])
    for read in (lambda: store.get_message(ids["e"]), store.channel_counts,
                 lambda: store.unprocessed("ehr"), store.queued_destinations,
                 lambda: store.next_queued("lab", "agency"), lambda: store.metadata_for(list(ids.values()))):
        assert_indexed(plans_of(store, read))
    assert_indexed({DEDUPE_SQL: store.explain(DEDUPE_SQL, ("ehr", "C1", "0" * 64, "2026"))})
    assert_indexed({IDEMPOTENCY_SQL: store.explain(IDEMPOTENCY_SQL, ("ehr", "k"))})




# --- text search ---------------------------------------------------------------------------------


def person(control_id: str, family: str, given: str, mrn: str, note: str = "") -> str:
    """A small synthetic ADT^A08 (no real person)."""
    return (f"MSH|^~\\&|EPIC|MERCY|AGENCY|COLLECT|20261125030412||ADT^A08|{control_id}|P|2.5.1\r"
            f"PID|1||{mrn}^^^MERCY^MR||{family}^{given}||19700101|F|||1 MAIN ST^^SPRINGFIELD^IL\r"
            f"NTE|1||{note}\r")


async def people(store, clock) -> dict[str, int]:
    rows = [("p1", "ehr", "GARCÍA", "JOSÉ", "MRN0012345", "balance due"),
            ("p2", "ehr", "SMITH", "JANE", "MRN0012399", "payment plan"),
            ("p3", "lab", "SMITH", "JOHN", "MRN0099999", "balance paid"),
            ("p4", "ehr", "O'BRIEN", "ANN", "MRN0055555", "called about the balance")]
    ids = {}
    for control_id, channel, family, given, mrn, note in rows:
        ids[control_id], _ = await put(
            store, channel, person(control_id, family, given, mrn, note), type="ADT^A08", control_id=control_id,
            meta={"mrn": mrn})
        clock.now += 60
    await store.flush_staged()
    return ids


@pytest_twisted.ensureDeferred
async def test_text_search_finds_words_in_the_content(store, clock):
    ids = await people(store, clock)
    by = lambda **f: [m["control_id"] for m in store.search(**f)]  # noqa: E731
    assert by(text="MRN0012345") == ["p1"]            # a field value is one word
    assert by(text="smith") == ["p3", "p2"]            # any case, newest first
    assert by(text="SMITH JANE") == ["p2"]             # every word must occur...
    assert by(text="JANE SMITH") == ["p2"]             # ...in any order
    assert by(text="SMITH^JANE") == ["p2"]             # HL7 delimiters separate words
    assert by(text="garcia jose") == ["p1"]            # diacritics do not matter
    assert by(text="GARCÍA") == ["p1"]
    assert by(text="MRN00123*") == ["p2", "p1"]        # a trailing * matches a prefix
    assert by(text="BRIEN") == ["p4"]                  # O'BRIEN holds the words o and brien
    assert by(text="balance", channel="ehr") == ["p4", "p1"]
    assert by(text="balance", since=clock.now - 150) == ["p4", "p3"]
    assert by(text="balance", until=clock.now - 150) == ["p1"]
    assert by(text="balance", meta={"mrn": "MRN0099999"}) == ["p3"]
    assert by(text="balance", control_id="p1") == ["p1"]
    assert by(text="balance", status="RECEIVED", type="ADT") == ["p4", "p3", "p1"]
    assert by(text="balance", limit=1) == ["p4"] and by(text="balance", limit=1, offset=1) == ["p3"]
    assert by(text="balance", before_id=ids["p4"]) == ["p3", "p1"]
    assert by(text="nowhere") == [] and by(text="MRN0012") == []  # words, not substrings


@pytest.mark.parametrize("text", ['SMITH OR JONES', '"SMITH"', "NEAR(SMITH JANE)", "-SMITH", "SMITH AND"])
@pytest_twisted.ensureDeferred
async def test_query_syntax_in_text_is_just_words(store, clock, text):
    """Nothing a user types reaches FTS5 as syntax: operators and quotes are words or separators."""
    await people(store, clock)
    found = {m["control_id"] for m in store.search(text=text)}
    words = {w.lower() for w in text.replace("(", " ").replace(")", " ").replace('"', " ").replace("-", " ").split()}
    assert found == ({"p2", "p3"} if words <= {"smith"} else set())  # OR, AND, NEAR, JONES are not in them


@pytest.mark.parametrize("text", ["", "  ", "^|~&", "*"])
def test_text_without_a_word_is_refused(text):
    with pytest.raises(ValueError):
        search_sql(text=text)


@pytest_twisted.ensureDeferred
async def test_a_pruned_or_unknown_message_is_not_found_by_text(store, clock):
    ids = await people(store, clock)
    for message_id in ids.values():
        await store.set_message_result(message_id, status="SENT")
    await store.prune_batch(to_iso(clock.now + 1))
    assert store.search(text="SMITH") == [] and store.search(text="MRN0012345") == []
    assert control_ids(store.search(meta={"mrn": "MRN0012399"})) == ["p2"]  # its record stays
    assert store.get_message(ids["p2"])["pruned"] is True and store.get_message(ids["p2"])["raw"] is None


# --- message codes, paging, limits ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_bare_message_code_matches_every_trigger(store, clock):
    for control_id, type_ in [("a", "ADT^A01"), ("b", "ORU^R01"), ("c", "ADT^A08"), ("d", "ADT"),
                              ("e", "ADTX^Z01"), ("f", "ADT^A01")]:
        await put(store, "ehr", hl7(control_id), type=type_, control_id=control_id)
        clock.now += 1
    assert control_ids(store.search(type="ADT")) == ["f", "d", "c", "a"]  # not ADTX
    assert control_ids(store.search(type="ADT", limit=2, offset=1)) == ["d", "c"]
    assert control_ids(store.search(type="ADT^A01")) == ["f", "a"]
    assert control_ids(store.search(type="ORU")) == ["b"]
    assert store.search(type="AD") == [] and store.search(type="MFN") == []


@pytest_twisted.ensureDeferred
async def test_keyset_pages_cover_every_message_once_even_with_equal_times(store, clock):
    for i in range(7):  # the clock does not move: every message has the same received_at
        await put(store, "ehr", hl7(f"k{i}"), control_id=f"k{i}")
    everything = [m["id"] for m in store.search()]
    pages, before = [], None
    while True:
        page = [m["id"] for m in store.search(limit=3, before_id=before)]
        if not page:
            break
        pages.append(page)
        before = page[-1]
    assert [i for page in pages for i in page] == everything == sorted(everything, reverse=True)
    assert [len(p) for p in pages] == [3, 3, 1]


@pytest.mark.parametrize("paging", [{"limit": 0}, {"limit": -1}, {"limit": 100_001}, {"offset": -1}])
@pytest_twisted.ensureDeferred
async def test_bad_paging_is_refused(store, paging):
    with pytest.raises(ValueError):
        store.search(**paging)


@pytest.mark.sqlite_only  # SQLite's query plans
@pytest_twisted.ensureDeferred
async def test_the_rarest_metadata_pair_finds_the_candidates(store, clock):
    for i in range(30):
        await put(store, "ehr", hl7(f"m{i}"), control_id=f"m{i}",
                                 meta={"facility": "MERCY", "mrn": f"M{i}"})
    plans = plans_of(store, lambda: store.search(meta={"facility": "MERCY", "mrn": "M7"}))
    main = next(lines for sql, lines in plans.items() if sql.startswith("SELECT m.id"))
    assert any("idx_metadata_key_value" in line for line in main)
    assert control_ids(store.search(meta={"facility": "MERCY", "mrn": "M7"})) == ["m7"]
    assert control_ids(store.search(meta={"mrn": "M7", "facility": "OTHER"})) == []


@pytest.mark.sqlite_only  # SQLite's query plans
@pytest_twisted.ensureDeferred
async def test_a_common_word_in_a_small_channel_is_probed_message_by_message(store, clock, monkeypatch):
    """A word in most messages with a channel holding few of them: the channel's messages drive
    and each is probed in the text index, instead of walking every message with the word. Same
    answers either way (the thresholds are lowered so a small store takes that path)."""
    await people(store, clock)
    cases = [({"channel": "lab"}, ["p3"], True),            # 1 message: few, probed
             ({"channel": "ehr"}, ["p4", "p1"], False),     # 3 messages: not few, walked
             ({"status": "received", "channel": "ehr"}, ["p4", "p1"], False)]
    walked = [control_ids(store.search(text="balance", **filters)) for filters, _, _ in cases]
    monkeypatch.setattr(store_text, "COMMON_WORD", 2)
    monkeypatch.setattr(store_text, "FEW_MESSAGES", 3)
    for (filters, expected, probed), before in zip(cases, walked):
        plans = plans_of(store, lambda: store.search(text="balance", **filters))
        assert_indexed(plans)
        main = " | ".join(next(lines for sql, lines in plans.items() if sql.startswith("SELECT m.id")))
        assert ("CORRELATED" in main) == probed, main
        assert control_ids(store.search(text="balance", **filters)) == expected == before


@pytest_twisted.ensureDeferred
async def test_replay_candidates_come_page_by_page_in_id_order_up_to_the_limit(store):
    channels = ["ehr" if n % 3 else "lab" for n in range(1203)]  # more than two pages of 500
    stored = await settle([put(store, channel, hl7(f"R{n}"), control_id=f"R{n}") for n, channel in enumerate(channels)])
    made = [(value[0], channel) for (_ok, value), channel in zip(stored, channels)]
    await settle([store.set_message_result(message_id, status=None, deliveries=[{"destination": "agency"}])
                  for n, (message_id, channel) in enumerate(made) if channel == "ehr" and n % 2])
    ehr = [message_id for message_id, channel in made if channel == "ehr"]
    rows = list(store.replay_candidates(channel="ehr", limit=10_000))
    assert [row["id"] for row in rows] == ehr
    assert {row["deliveries"].get("agency") for row in rows} == {"QUEUED", None}
    assert [row["id"] for row in store.replay_candidates(channel="ehr", limit=501)] == ehr[:501]
    wanted = ehr[::7] + [made[0][0]]
    assert [row["id"] for row in store.replay_candidates(ids=reversed(wanted))] == sorted(wanted)
