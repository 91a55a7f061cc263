"""Writing TOML by hand: a small, correct quoting of values, and a generic ``dumps`` for plain tables.

Why not a library: the channel files carry comments beside their keys (what Mirth called a thing,
what was approximated), which TOML writers drop; the values we write are strings, booleans, integers,
floats, arrays and inline tables, and quoting those is a few lines.  Everything written here is read
back by ``tomllib`` in the tests.

``${`` in a string is the config loader's variable syntax (engine/config/schema.py): text that must
stay literal goes through :func:`literal` (``${`` -> ``$${``) before it is quoted.
"""
from __future__ import annotations

import re
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def literal(text: str) -> str:
    """``text`` as it must be written so the loader's ${VAR} substitution gives it back unchanged."""
    return text.replace("${", "$${")


def _escape_char(char: str, keep: str = "") -> str:
    if char in keep:
        return char
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code < 0x20 or code == 0x7F:
        return f"\\u{code:04X}"
    return char


def quote(text: str) -> str:
    """A TOML basic string (one line) holding exactly ``text``."""
    return '"' + "".join(_escape_char(char) for char in text) + '"'


def quote_multiline(text: str) -> str:
    """A TOML multi-line basic string holding exactly ``text`` (newlines kept for reading)."""
    if "\n" not in text:
        return quote(text)
    body = "".join(_escape_char(char, keep="\n\t") for char in text)
    body = body.replace('""', '"\\"')       # never three quotes in a row inside
    if body.endswith('"'):
        body = body[:-1] + '\\"'
    return '"""\n' + body + '"""'           # a newline right after """ is trimmed by TOML


def key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else quote(name)


def value(item: Any) -> str:
    """A TOML value for str / bool / int / float / list / dict (an inline table)."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if item != item or item in (float("inf"), float("-inf")):
            raise ValueError("TOML floats written here must be finite")
        text = repr(item)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(item, str):
        return quote(item)
    if isinstance(item, (list, tuple)):
        return "[" + ", ".join(value(element) for element in item) + "]"
    if isinstance(item, dict):
        if not item:
            return "{}"
        return "{ " + ", ".join(f"{key(name)} = {value(element)}" for name, element in item.items()) + " }"
    raise TypeError(f"cannot write {type(item).__name__} as TOML")


def dumps(table: dict[str, Any]) -> str:
    """A plain table as TOML: scalars and inline tables first, then sub-tables and arrays of tables."""
    lines: list[str] = []
    _emit(table, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table_array(item: Any) -> bool:
    return isinstance(item, list) and bool(item) and all(isinstance(element, dict) for element in item)


def _emit(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    for name, item in table.items():
        if not isinstance(item, dict) and not _is_table_array(item):
            lines.append(f"{key(name)} = {value(item)}")
    for name, item in table.items():
        full = [*path, key(name)]
        if isinstance(item, dict):
            lines.extend(["", f"[{'.'.join(full)}]"])
            _emit(item, full, lines)
        elif _is_table_array(item):
            for element in item:
                lines.extend(["", f"[[{'.'.join(full)}]]"])
                _emit(element, full, lines)
