"""Code template libraries: quoted in the notes, and their code tables extracted to lookups/.

A code template is JavaScript shared by channels (functions, snippets); it is never converted.  What
the import can do is find the tables inside the usual lookup functions and write them as code tables
(DESIGN §3.9), so that porting a call such as ``mapUnit(unit)`` is one ``map`` edit operation:

* an object literal of string pairs (``var units = { 'K/uL': '10*3/uL', ... }``) -> NAME.csv;
* a ``switch`` whose cases only ``return 'X'`` -> NAME.csv, its ``default`` said in the note, and
  ``case = "insensitive"`` beside it when the switch is on ``.toUpperCase()`` of the argument.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from engine.importers.mirth.xml_read import text

_STRING = r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\""
_PAIR = re.compile(rf"\s*({_STRING}|[A-Za-z_$][\w$]*)\s*:\s*({_STRING})\s*,?")
_FUNCTION = re.compile(r"function\s+([A-Za-z_$][\w$]*)\s*\(")


@dataclass
class Template:
    id: str
    name: str
    library: str
    kind: str
    code: str

    @property
    def functions(self) -> list[str]:
        return _FUNCTION.findall(self.code)


def templates_of(library: Element) -> list[Template]:
    name = text(library, "name").strip()
    found = library.find("codeTemplates")
    result = []
    for template in (found if found is not None else []):
        result.append(Template(text(template, "id").strip(), text(template, "name").strip(), name,
                               text(template, "properties/type", "FUNCTION").strip(),
                               text(template, "properties/code") or text(template, "code")))
    return result


def _unquote(lexeme: str) -> str:
    from engine.importers.mirth.e4x import js_string

    return js_string(lexeme) if lexeme[:1] in "'\"" else lexeme


def extract_table(code: str) -> tuple[list[tuple[str, str]], dict] | None:
    """(rows, options) of the code table inside a lookup function, or None when there is none."""
    literal = re.search(r"=\s*\{([^{}]*)\}", code)
    if literal:
        body, rows, position = literal.group(1), [], 0
        while position < len(body.strip()) and body[position:].strip():
            match = _PAIR.match(body, position)
            if not match:
                rows = []
                break
            rows.append((_unquote(match.group(1)), _unquote(match.group(2))))
            position = match.end()
        if len(rows) >= 2:
            return rows, {}
    switch = re.search(r"switch\s*\((.*?)\)\s*\{(.*)\}", code, re.S)
    if not switch:
        return None
    rows, pending, default = [], [], None
    for lexeme in re.finditer(rf"case\s+({_STRING})\s*:|default\s*:|return\s+({_STRING})\s*;|(\S)", switch.group(2)):
        if lexeme.group(1):
            pending.append(_unquote(lexeme.group(1)))
        elif lexeme.group(0).startswith("default"):
            pending.append(None)
        elif lexeme.group(2):
            value = _unquote(lexeme.group(2))
            for key in pending:
                if key is None:
                    default = value
                else:
                    rows.append((key, value))
            pending = []
        elif lexeme.group(3) == "}":
            break
        else:
            return None
    if len(rows) < 2 or pending:
        return None
    options = {"default": default}
    if ".toUpperCase()" in switch.group(1) or ".toLowerCase()" in switch.group(1):
        options["case"] = "insensitive"
    keys = [key for key, _ in rows]
    if len(set(keys)) != len(keys):
        return None
    return rows, options


def table_csv(rows: list[tuple[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "value"])
    writer.writerows(rows)
    return out.getvalue()
