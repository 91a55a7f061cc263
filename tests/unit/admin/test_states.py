"""The state words shared by the CLI, the API and the dashboard (engine/admin/states.py), and
where a destination sends, as its options say (no password from a URL)."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from engine.admin.states import describe_state, destination_state, target_of


def queue(failures=0, last_error=None, since=None):
    return SimpleNamespace(failures=failures, last_error=last_error, failing_since=since)


def test_ok_retrying_failing():
    assert destination_state(None) == ("ok", None)
    assert destination_state(queue()) == ("ok", None)
    since = datetime(2026, 12, 2, 3, 55, 12, tzinfo=timezone.utc)
    assert destination_state(queue(2, "cannot connect", since)) == ("retrying", "2026-12-02T03:55:12Z")
    assert destination_state(queue(0, "AR from the peer")) == ("failing", None)
    assert describe_state({"state": "retrying", "state_since": "2026-12-02T03:55:12Z"}) == "retrying since 03:55:12 UTC"
    assert describe_state({"state": "failing", "state_since": None}) == "failing"
    assert describe_state({}) == "ok"


def destination(kind, **options):
    return SimpleNamespace(type=kind, options=options)


def test_targets():
    assert target_of(destination("mllp", connect=("10.0.0.5", 2575))) == "10.0.0.5:2575"
    assert target_of(destination("http", url="https://user:pw@api.example.org/fhir?x=1")) == "https://api.example.org/fhir"
    assert target_of(destination("file", directory="/var/out")) == "/var/out"
    assert target_of(destination("sftp", host="sftp.example.org", port=22, remote_path="in/adt")) == "sftp://sftp.example.org:22/in/adt"
    assert target_of(destination("channel", channel="billing")) == "channel billing"
    assert target_of(destination("custom")) == "custom"
