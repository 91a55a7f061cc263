"""File and SFTP ``filename`` templates see what every template sees (issue 14 point 2) and may
not leave the folder."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from engine.connectors.file.naming import FilenameTemplate
from engine.core.contracts import Delivery, PermanentError
from engine.core.message import Message
from engine.core.templates import Templates

RAW = "MSH|^~\\&|EHR|HOSP|SWB|AGENCY|20240101||ADT^A08|CTRL9|P|2.5\rPID|1||MRN1\r"
WHEN = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def template(source: str, stored=RAW):
    loaded = []

    def message_for(message_id):
        loaded.append(message_id)
        return None if stored is None else Message(stored, "hl7", id=message_id, channel="c", received_at=WHEN)

    context = SimpleNamespace(templates=Templates(None), channel_name="c", message_for=message_for)
    return FilenameTemplate(context, source, "destination[files].filename"), loaded


def test_msg_raw_meta_received_at_body_and_ids():
    name, loaded = template("{{ msg['MSH.10'] }}-{{ meta.account }}-{{ received_at.year }}-{{ raw[:3] }}"
                            "-{{ body | length }}-{{ channel }}-{{ id }}-{{ delivery }}.hl7")
    assert name.needs_message
    assert name.render(Delivery(7, 42, "xyz", meta={"account": "A1"})) == "CTRL9-A1-2026-MSH-3-c-42-7.hl7"
    assert loaded == [42]


def test_the_store_is_not_read_when_the_name_does_not_need_the_message():
    name, loaded = template("{{ meta.account }}-{{ id }}.json")
    assert not name.needs_message
    assert name.render(Delivery(7, 42, "", meta={"account": "A1"})) == "A1-42.json" and loaded == []


@pytest.mark.parametrize("source", ["../{{ msg['MSH.10'] }}", "a/{{ id }}", ".{{ id }}", "{{ msg['ZZZ.1'] }}",
                                    "..", "{{ msg['MSH.10'] }}\\x"])
def test_names_that_leave_the_folder_or_hide_are_refused(source):
    name, _ = template(source)
    with pytest.raises(PermanentError):
        name.render(Delivery(7, 42, ""))


def test_a_pruned_message_is_a_clear_error():
    name, _ = template("{{ msg['MSH.10'] }}.hl7", stored=None)
    with pytest.raises(PermanentError, match="not in the store"):
        name.render(Delivery(7, 42, ""))


# -- names the file system cannot take, or that hold control characters (issue 15, point 1) -----
from engine.connectors.file.naming import safe_filename  # noqa: E402


@pytest.mark.parametrize("name", ["a\nb.txt", "a\rb", "a\tb", "a\x01b", "a\x7fb", "a\x85b", "a\x1bb"])
def test_control_characters_are_permanent_and_unquoted(name):
    with pytest.raises(PermanentError, match="control character") as caught:
        safe_filename(name)
    assert name not in str(caught.value)


def test_a_name_over_name_max_counts_bytes_and_the_temp_room():
    assert safe_filename("a" * 239, reserve=16) == "a" * 239
    with pytest.raises(PermanentError, match="240 bytes, over this destination's limit of 239"):
        safe_filename("a" * 240, reserve=16)
    with pytest.raises(PermanentError, match="over this destination's limit"):
        safe_filename("é" * 120, reserve=16)        # 240 bytes in UTF-8, 120 characters


def test_a_path_over_path_max_is_permanent():
    with pytest.raises(PermanentError, match="path would be"):
        safe_filename("x.txt", directory="/" + "d" * 4090)


def test_a_lone_surrogate_is_permanent():
    with pytest.raises(PermanentError, match="not valid text"):
        safe_filename("a\udc80b")


def test_a_long_account_renders_to_a_permanent_error():
    name, _loaded = template("{{ meta.account }}.txt")
    with pytest.raises(PermanentError, match="bytes, over"):
        name.render(Delivery(1, 1, "x", meta={"account": "9" * 300}))
