"""The per-message shortcuts of issue 22 give what the long way gives: a plain path comparison
filter read without Jinja, the MSH read once and kept, the ACK's once-a-second stamp, and events
that skip pluggy only while no plugin listens."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pluggy
import pytest

from engine import hookspecs
from engine.core.events import Events
from engine.core.message import Message
from engine.core.pipeline import ExpressionFilter, _path_comparison
from engine.core.templates import Templates
from engine.hl7.ack import build_ack
from engine.hl7.dates import format_hl7_datetime
from engine.hl7.msh import Msh, peek_msh

ADT = ("MSH|^~\\&|SEND|FAC|RECV|RFAC|20240101120000||ADT^A08^ADT_A01|C-1| P |2.5\r"
       "PID|1||123^^^H^MR~456^^^H^SS||DOE^JANE&&X||19700101|F\rPV1|1|I\r")
ORU = ADT.replace("ADT^A08^ADT_A01", "ORU^R01").replace("PID|1||123", "PID|1||\\T\\9")


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    return Templates(Path(tmp_path_factory.mktemp("transforms")), filters={}, globals={})


@pytest.mark.parametrize("source", [
    "msg['MSH.9.1'] == 'ADT'", "msg['MSH.9.1'] != 'ADT'", 'msg["PID.3(2).1"] == "456"',
    "msg['PID.5.1'] == 'DOE'", "msg['PID.5'] == 'DOE^JANE&&X'", "msg['PID.3.1'] == '&9'",
    "msg['ZZZ.1'] == ''", "msg['MSH.11'] == ' P '", "msg['PID.3'] != '123^^^H^MR'",
])
@pytest.mark.parametrize("text", [ADT, ORU])
def test_a_path_comparison_filter_decides_as_jinja_does(templates, source, text):
    flt = ExpressionFilter(templates, source, "f")
    assert flt.comparison is not None
    context = {"msg": Message(text).view, "raw": text, "meta": {}, "channel": "c", "id": 1, "received_at": None}
    assert flt.check(Message(text), context).passed == bool(flt.expression.evaluate(context))


@pytest.mark.parametrize("source", [
    "msg['MSH.9.1'] == 'ADT' and msg['PV1.2'] == 'I'", "msg['msh.9'] == 'ADT'", "msg['PID.5.1'] == 'a\\'b'",
    "msg['PID.5.1'] == '{{ x }}'", "msg['PID.5.1'] is defined", "msg.get('PID.5.1') == 'DOE'",
])
def test_anything_else_still_goes_through_jinja(source):
    assert _path_comparison(source) is None


def test_a_filter_on_json_uses_jinja(templates):
    flt = ExpressionFilter(templates, "msg['kind'] == 'a'", "f")
    assert flt.check(Message('{"kind": "a"}', "json"), {"msg": {"kind": "a"}}).passed


def test_the_msh_keeps_what_it_read():
    msh = peek_msh(ADT)
    assert (msh.message_type, msh.control_id, msh.sender) == ("ADT^A08", "C-1", "SEND")
    assert (msh.message_type, msh.control_id, msh.sender) == ("ADT^A08", "C-1", "SEND")  # cached
    assert msh == peek_msh(ADT) and hash(msh) == hash(peek_msh(ADT))
    assert msh != peek_msh(ORU)
    assert Msh("|", "^~\\&", ("MSH", "|", "^~\\&")).control_id == ""


def test_a_message_given_its_msh_does_not_read_it_again_and_parses_the_same():
    msh = peek_msh(ADT)
    given, alone = Message(ADT, msh=msh), Message(ADT)
    assert given.msh is msh
    for path in ("MSH.9.1", "PID.3(2).1", "PID.5.1", "PV1.2", "MSH.2"):
        assert given.view[path] == alone.view[path]
    assert Message('{"a": 1}', "json", msh=msh).msh is None  # only for hl7


def test_the_ack_stamp_is_the_current_second():
    before = format_hl7_datetime(datetime.now())
    stamp = build_ack(peek_msh(ADT), "AA").split("\r")[0].split("|")[6]
    after = format_hl7_datetime(datetime.now())
    assert before <= stamp <= after and len(stamp) == 14
    fixed = datetime(2024, 5, 6, 7, 8, 9)
    assert build_ack(peek_msh(ADT), "AA", now=fixed).split("|")[6] == "20240506070809"


class Plugin:
    def __init__(self) -> None:
        self.seen = []

    @hookspecs.hookimpl
    def message_event(self, event):
        self.seen.append(event.kind)


def test_events_reach_listeners_and_a_plugin_registered_later():
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    events, heard = Events(manager.hook), []
    events.emit("received", "chan", 1)  # nobody listens: nothing to do, no error
    events.listeners.append(lambda event: heard.append(event.kind))
    events.emit("received", "chan", 2)
    plugin = Plugin()
    manager.register(plugin)
    events.emit("sent", "chan", 2, destination="d")
    assert heard == ["received", "sent"] and plugin.seen == ["sent"]
