"""``api.json_bytes``: the same bytes as ``json.dumps``, long strings encoded a slice at a time."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.admin.api import SLICE, json_bytes

LONG = st.text(min_size=1, max_size=40).map(lambda text: text * (SLICE // len(text) + 2))


@settings(max_examples=25, deadline=None)
@given(st.recursive(st.none() | st.integers() | st.text(max_size=20) | LONG,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6))
def test_the_bytes_are_those_of_json_dumps(data):
    assert json_bytes(data) == json.dumps(data).encode("utf-8")


def test_a_message_with_two_long_contents():
    message = {"raw": "MSH|" + "|a" * 500_000, "destinations": [{"sent": "é\U0001F600\n\"" * 30_000}]}
    assert json.loads(json_bytes(message)) == message
