"""The report's remittance figures (engine/store/sqlite/report.py), on SQLite and PostgreSQL: each
claim payment of the remittance channel counts once; its DFT^P03 is posted when a delivery of the
channel's own output is SENT; the agency hears a recall or an adjust only through a SENT delivery
whose own body is that update (a claim the destination filter kept back sends nothing)."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import defer

from support.daemon import hl7

DFT = "MSH|^~\\&|SWITCHBOARD|COLL|EHR|HOSP|20240815||DFT^P03|ERA1|P|2.5.1\rFT1|1\r"


def update(action: str, reason: str) -> str:
    return json.dumps({"event_id": "SWB-remittance-1", "action": action, "reason": reason, "account": "ACC1"})


async def claim(store, control_id, *, status="SENT", ehr="SENT", agency=None, verdict="claim-status-1"):
    """One claim payment as the remittance channel stores it: the DFT to the EHR outbox, the agency
    update (``(status, body)``) or, kept back by the destination filter, a FILTERED delivery."""
    agency_status, body = agency or ("FILTERED", None)
    message_id = store.reserve_id()
    await defer.maybeDeferred(lambda: store.put_processed(
        "remittance", hl7(control_id), message_id=message_id, status=status, transformed=DFT,
        control_id=control_id, type="835", inbound="x12",
        deliveries=[{"destination": "ehr-outbox", "status": ehr, "body": DFT},
                    {"destination": "agency-status-outbox", "status": agency_status, "body": body}]))
    await defer.maybeDeferred(lambda: store.add_event("filter_passed", channel="remittance", message_id=message_id,
                                                      detail=f"remittance-claim: {verdict}"))
    return message_id


@pytest_twisted.ensureDeferred
async def test_remittance_postings_and_agency_updates(store):
    await claim(store, "PAID", agency=("SENT", update("recall", "insurance-paid")))
    await claim(store, "PART", agency=("SENT", update("adjust", "insurance-payment")))
    await claim(store, "REV", verdict="claim-status-22", agency=("SENT", update("adjust", "insurance-reversal")))
    await claim(store, "LATE", status="QUEUED", ehr="QUEUED", agency=("QUEUED", update("recall", "insurance-paid")))
    await claim(store, "DENIED", verdict="claim-status-4")                    # no agency action: filtered
    await claim(store, "UNPLACED")                                            # not placed: filtered
    await claim(store, "BROKEN", status="ERROR", ehr="ERROR")
    others = store.reserve_id()                                               # another channel's verdict
    await defer.maybeDeferred(lambda: store.put_processed(
        "account-status", hl7("AS"), message_id=others, status="SENT", control_id="AS",
        deliveries=[{"destination": "agency", "status": "SENT", "body": update("recall", "charity")}]))
    await defer.maybeDeferred(lambda: store.add_event("filter_passed", channel="account-status", message_id=others,
                                                      detail="account-status: recall-charity: x"))
    await store.flush_staged()
    data = store.report(since=None)
    assert data["remittances"] == {
        "claims": 7, "posted": 5, "pending": 1, "errors": 1,
        "recalls_sent": 1, "adjustments_sent": 2, "agency_pending": 1,
        "by_reason": {"insurance-paid": 1, "insurance-payment": 1, "insurance-reversal": 1}}
    assert data["status_changes"]["recalls_sent"] == 1                       # account-status counted apart
    assert store.report(since=None, channel="account-status")["remittances"]["claims"] == 0
