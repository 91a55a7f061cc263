"""What the HTTP source accepts as JSON (engine/connectors/http/json_input.py)."""

from __future__ import annotations

import pytest

from engine.connectors.http.json_input import MAX_NUMBER_DIGITS, check_json, load_json, same_json
from engine.core.message import MessageParseError


@pytest.mark.parametrize(("text", "words"), [
    ('"\\ud800"', "lone surrogate (\\ud800)"),
    ('{"a": ["ok", {"b": "x\\udc00y"}]}', "lone surrogate (\\udc00)"),
    ('{"\\ud83d": 1}', "lone surrogate"),
    ("9" * 5000, "5000 digits"),
    ("-1." + "5" * 200, "digits"),
    ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
    ('{"a": }', "invalid JSON at line 1"),
])
def test_refused_with_a_sentence(text, words):
    with pytest.raises(MessageParseError) as refused:
        check_json(text)
    assert words in str(refused.value)


@pytest.mark.parametrize("text", [
    '{"emoji": "\\ud83d\\ude00", "name": "Zo\\u00eb", "plain": "é"}',
    "1" * MAX_NUMBER_DIGITS, "-12.50e3", "[]", '"text"', "null",
])
def test_accepted(text):
    check_json(text)


def test_numbers_keep_their_values():
    assert load_json('{"a": 12, "b": 1.5}') == {"a": 12, "b": 1.5}


def test_same_json_is_the_parsed_value_not_the_bytes():
    assert same_json('{"a": 1, "b": [true]}', '{\n  "b": [true],\n  "a": 1\n}')
    assert not same_json('{"a": 1}', '{"a": 1.0}')
    assert not same_json('{"a": 1}', '{"a": true}')
    assert not same_json('{"a": 100}', '{"a": 250}')
