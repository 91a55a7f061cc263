"""The role rules (engine/admin/roles.py) and the sign-in throttle (engine/admin/sessions.py), on
their own; tests/e2e/test_users_e2e.py walks every route of the real daemon with every role."""

from __future__ import annotations

import pytest

from engine.admin.roles import ADMINISTER, CONTENT, OPEN, OPERATE, SEARCH_TEXT, VIEW, User, need_for, redact, refusal
from engine.admin.sessions import Throttle


@pytest.mark.parametrize("method,path,query,need", [
    (b"GET", b"/healthz", {}, OPEN),
    (b"POST", b"/login", {}, OPEN),
    (b"GET", b"/", {}, VIEW),
    (b"GET", b"/api/messages", {"text": ["doe"]}, SEARCH_TEXT),
    (b"GET", b"/api/messages", {"text": [" "]}, VIEW),
    (b"GET", b"/search", {"text": ["doe"]}, SEARCH_TEXT),
    (b"GET", b"/messages/7/raw", {}, CONTENT),
    (b"POST", b"/api/channels/a/pause", {}, OPERATE),
    (b"POST", b"/messages/7/replay", {}, OPERATE),
    (b"POST", b"/api/reload", {}, ADMINISTER),
])
def test_routes_get_their_need(method, path, query, need):
    assert need_for(method, path, query) == (need, True)


def test_an_unlisted_route_is_for_admins_only():
    assert need_for(b"DELETE", b"/api/channels/a", {}) == (ADMINISTER, False)
    assert need_for(b"GET", b"/api/something-new", {}) == (ADMINISTER, False)


def test_refusals_are_sentences_naming_the_user_and_what_is_missing():
    viewer = User("ann", "viewer", False)
    assert refusal(viewer, VIEW) is None
    assert refusal(viewer, OPERATE) == ("user ann is a viewer and may not replay messages or start, stop "
                                        "and pause channels")
    assert "no PHI access" in refusal(User("bob", "admin", False), CONTENT)
    assert refusal(User("cy", "operator", True), ADMINISTER).startswith("user cy is an operator")
    assert refusal(User("root", "admin", True), CONTENT) is None


def test_redact_keeps_summary_and_metadata_only():
    message = {"id": 1, "meta": {"mrn": "M1"}, "raw": "MSH|x", "transformed": "MSH|y", "error": None,
               "destinations": [{"name": "d", "sent": "MSH|y", "response": "MSA|AA",
                                 "attempts": [{"ok": True, "response": "MSA|AA"}]}]}
    assert redact(message, User("a", "admin", True)) is message
    shown = redact(message, User("v", "viewer", False))
    assert shown["raw"] is None and shown["transformed"] is None and shown["meta"] == {"mrn": "M1"}
    assert shown["destinations"][0]["sent"] is None and shown["destinations"][0]["attempts"][0]["response"] is None
    assert "MSH" not in repr(shown) and message["raw"] == "MSH|x"          # the original is untouched


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_waits_after_a_few_failures_and_doubles():
    clock = Clock()
    throttle = Throttle(clock=clock, free=3, base=1.0, longest=8.0, forget=60.0)
    for _ in range(2):
        throttle.failed("1.2.3.4")
        assert throttle.wait("1.2.3.4") == 0
    throttle.failed("1.2.3.4")
    assert throttle.wait("1.2.3.4") == 1.0 and throttle.wait("5.6.7.8") == 0
    clock.now += 1.0
    throttle.failed("1.2.3.4")
    assert throttle.wait("1.2.3.4") == 2.0
    for _ in range(5):
        throttle.failed("1.2.3.4")
    assert throttle.wait("1.2.3.4") == 8.0                         # capped
    clock.now += 61.0
    assert throttle.wait("1.2.3.4") == 0                           # forgotten after a quiet minute
    throttle.failed("1.2.3.4")
    assert throttle.wait("1.2.3.4") == 0


def test_the_throttle_remembers_a_bounded_number_of_addresses():
    throttle = Throttle(clock=Clock(), free=1, limit=10)
    for number in range(100):
        throttle.failed(f"10.0.0.{number}")
    assert len(throttle._failures) == 10 and throttle.wait("10.0.0.99") > 0


def test_a_success_clears_the_address():
    throttle = Throttle(clock=Clock(), free=1)
    throttle.failed("a")
    throttle.succeeded("a")
    assert throttle.wait("a") == 0
