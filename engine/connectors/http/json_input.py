"""What the HTTP source accepts as JSON, beyond "``json.loads`` did not raise".

Valid JSON can still be a message we could never store or process: ``"\\ud800"`` (an escaped lone
surrogate) decodes to a Python string that has no UTF-8 form, so the store refused it and the
sender got 503 -- and retried the same poison message for ever; a 5,000-digit number makes
``json.loads`` raise ``ValueError`` past Python's int-string limit (a 500); nesting thousands of
arrays deep raises ``RecursionError``.  ``check_json`` turns each into a ``MessageParseError`` with
a sentence (worded as ``engine.core.message`` words its own), which the source answers 400 before
anything is stored.

``same_json`` decides whether a re-sent body under the same ``Idempotency-Key`` is the same
message: equal once parsed (a re-serialised body with other spacing is the same payment; a
different amount is not, and is answered 409).
"""

from __future__ import annotations

import json

from engine.core.message import MessageParseError

MAX_NUMBER_DIGITS = 100     # no amount, count or id needs more; Python refuses ints past 4,300


def _number(kind: str):
    def parse(text: str):
        digits = len(text) if len(text) <= MAX_NUMBER_DIGITS else sum(ch.isdigit() for ch in text)
        if digits > MAX_NUMBER_DIGITS:
            raise MessageParseError(f"a JSON number has {digits} digits; at most {MAX_NUMBER_DIGITS} are accepted")
        return int(text) if kind == "int" else float(text)
    return parse


_PARSE_INT, _PARSE_FLOAT = _number("int"), _number("float")


def load_json(text: str):
    """Parse ``text`` strictly (see the module docstring); raise ``MessageParseError``."""
    try:
        value = json.loads(text, parse_int=_PARSE_INT, parse_float=_PARSE_FLOAT)
    except json.JSONDecodeError as error:   # worded as engine.core.message words it
        raise MessageParseError(f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    except RecursionError:
        raise MessageParseError("invalid JSON: nested too deeply") from None
    _check_strings(value)
    return value


def check_json(text: str) -> None:
    load_json(text)


def _check_strings(value) -> None:
    """Every string (keys too) must have a UTF-8 form: no lone surrogate from a ``\\uD800`` escape."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                _check_text(key)
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        raise MessageParseError(f"a JSON string holds a lone surrogate (\\u{code:04x}), which is not a "
                                f"character: send the pair, or the character itself") from None


def same_json(first: str, second: str) -> bool:
    """True when both texts parse to the same JSON value (``1`` and ``1.0`` and ``true`` differ)."""
    try:
        return _canonical(json.loads(first)) == _canonical(json.loads(second))
    except (ValueError, RecursionError):
        return first == second


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
