"""A template error keeps Python's words when a call does not fit a helper's signature (issue 14):
they name the function, the parameter and counts, never a value; other errors keep their type only."""

from __future__ import annotations

import pytest

from engine.core.template_helpers import FILTERS, GLOBALS
from engine.core.templates import TemplateError, Templates

PHI = "DOE^JANE"


@pytest.fixture
def templates(tmp_path):
    return Templates(tmp_path, filters=FILTERS, globals=GLOBALS)


@pytest.mark.parametrize("source, words", [
    ("{{ v | hl7_date(fmt='%d') }}", "hl7_date() got an unexpected keyword argument 'fmt'"),
    ("{{ hl7_segment() }}", "hl7_segment() missing 1 required positional argument: 'name'"),
    ("{{ hl7_now('second', v) }}", "hl7_now() takes from 0 to 1 positional arguments but 2 were given"),
])
def test_a_signature_error_keeps_its_words(templates, source, words):
    with pytest.raises(TemplateError) as caught:
        templates.from_string(source, "t").render({"v": PHI})
    assert words in str(caught.value) and PHI not in str(caught.value)


def test_any_other_error_keeps_its_type_only(templates):
    with pytest.raises(TemplateError) as caught:
        templates.from_string("{{ v + 1 }}", "t").render({"v": PHI})
    assert str(caught.value).endswith("TypeError") and PHI not in str(caught.value)
