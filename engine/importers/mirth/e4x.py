"""The JavaScript expressions Mirth's declarative steps hold, turned into Jinja expressions.

Rule Builder fields and values, Mapper and Message Builder mappings and Destination Set Filter
fields are JavaScript that Mirth pastes into its generated script.  The usual ones are a small
language: E4X paths into the message (``msg['PID']['PID.3'][0]['PID.3.1'].toString()``), string
literals, map look-ups (``$('mrn')``, ``channelMap.get('mrn')``), ``.toUpperCase()`` and friends, and
``+`` concatenation.  That language is parsed here; anything else is not "simple" and the step that
holds it goes to the notes, quoted, rather than being guessed at.

HL7 paths come out in Switchboard's notation (DESIGN §3.3): E4X indexes are 0-based, ours 1-based and
the first one is the default, so ``msg['OBX'][2]['OBX.5'][1]['OBX.5.1']`` is ``msg['OBX(3).5(2).1']``.
For a JSON message (Mirth's JSON data type reads it as E4X-ish XML) ``msg['patient']['mrn']`` stays
``msg['patient']['mrn']``: the parsed JSON is a dict in Switchboard's templates.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_SEGMENT = re.compile(r"[A-Z][A-Z0-9]{2}")
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
  | (?P<punct>[\[\]().+,])
""", re.VERBOSE)
_JS_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}
_MAP_GETTERS = {"$", "$c", "$co"}            # $('x'): Mirth's look-up through the maps
_MAP_OBJECTS = {"channelMap", "connectorMap", "sourceMap"}
_STRING_METHODS = {"toString": None, "toUpperCase": "upper", "toLowerCase": "lower", "trim": "trim"}


class NotSimple(Exception):
    """The expression is outside the language converted here."""


@dataclass
class Expr:
    """A converted expression: Jinja source, the constant it always is (if any), the HL7 paths or
    JSON keys it reads, and the Mirth map variables it reads."""

    jinja: str
    constant: str | None = None
    paths: list[str] = field(default_factory=list)
    variables: list[str] = field(default_factory=list)
    json_path: list | None = None      # a bare JSON path (for metadata and EXISTS)
    hl7_path: str | None = None        # a bare HL7 path


def jinja_string(text: str) -> str:
    """A Jinja string literal holding exactly ``text``."""
    out = []
    for char in text:
        if char in "\\'":
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "'" + "".join(out) + "'"


def js_string(lexeme: str) -> str:
    """The value of a JavaScript string literal lexeme."""
    body, out, i = lexeme[1:-1], [], 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _JS_ESCAPES:
            out.append(_JS_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", body[i + 2:i + 6]):
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        elif nxt == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", body[i + 2:i + 4]):
            out.append(chr(int(body[i + 2:i + 4], 16)))
            i += 4
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


def lex(source: str) -> list[tuple[str, str]]:
    lexemes, position = [], 0
    source = source.strip().rstrip(";").strip()
    while position < len(source):
        match = _TOKEN.match(source, position)
        if not match:
            raise NotSimple(f"unexpected {source[position]!r}")
        kind = match.lastgroup
        if kind != "space":
            lexemes.append((kind, match.group()))
        position = match.end()
    return lexemes


class _Parser:
    """Recursive descent over: expr := term ('+' term)*; term := primary postfix*."""

    def __init__(self, lexemes: list[tuple[str, str]]) -> None:
        self.lexemes, self.index = lexemes, 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        at = self.index + offset
        return self.lexemes[at] if at < len(self.lexemes) else None

    def take(self, text: str | None = None, kind: str | None = None) -> tuple[str, str]:
        lexeme = self.peek()
        if lexeme is None or (text is not None and lexeme[1] != text) or (kind is not None and lexeme[0] != kind):
            raise NotSimple(f"expected {text or kind}")
        self.index += 1
        return lexeme

    def parse(self):
        node = self.expr()
        if self.peek() is not None:
            raise NotSimple(f"unexpected {self.peek()[1]!r}")
        return node

    def expr(self):
        terms = [self.term()]
        while self.peek() == ("punct", "+"):
            self.take("+")
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else ("concat", terms)

    def term(self):
        node = self.primary()
        while self.peek() == ("punct", "."):
            self.take(".")
            name = self.take(kind="name")[1]
            if self.peek() == ("punct", "("):
                self.take("(")
                self.take(")")
                if name not in _STRING_METHODS:
                    raise NotSimple(f".{name}() is not converted")
                node = ("method", name, node)
            elif node[0] == "path":
                node = ("path", node[1] + [name])
            else:
                raise NotSimple(f".{name} is not converted")
            while node[0] == "path" and self.peek() == ("punct", "["):
                node = ("path", node[1] + [self.index_part()])
        return node

    def index_part(self):
        self.take("[")
        kind, lexeme = self.take()
        self.take("]")
        if kind == "string":
            return js_string(lexeme)
        if kind == "number" and lexeme.isdigit():
            return int(lexeme)
        raise NotSimple("a computed index is not converted")

    def primary(self):
        kind, lexeme = self.take()
        if kind == "string":
            return ("str", js_string(lexeme))
        if kind == "number":
            return ("str", lexeme)
        if kind == "punct" and lexeme == "(":
            node = self.expr()
            self.take(")")
            return node
        if kind == "name" and lexeme == "msg":
            parts = []
            while self.peek() == ("punct", "["):
                parts.append(self.index_part())
            return ("path", parts)
        if kind == "name" and lexeme in _MAP_GETTERS and self.peek() == ("punct", "("):
            self.take("(")
            name = self.take(kind="string")[1]
            self.take(")")
            return ("var", js_string(name))
        if kind == "name" and lexeme in _MAP_OBJECTS and self.peek() == ("punct", "."):
            self.take(".")
            if self.take(kind="name")[1] != "get":
                raise NotSimple(f"{lexeme} is only converted with .get('name')")
            self.take("(")
            name = self.take(kind="string")[1]
            self.take(")")
            return ("var", js_string(name))
        raise NotSimple(f"{lexeme!r} is not converted")


def hl7_path(parts: list) -> str:
    """Switchboard's path for E4X parts [seg, (i), field, (r), comp, (sub)]; NotSimple otherwise."""
    if not parts or not isinstance(parts[0], str) or not _SEGMENT.fullmatch(parts[0]):
        raise NotSimple("not a path into an HL7 segment")
    segment, rest = parts[0], list(parts[1:])
    text = segment
    if rest and isinstance(rest[0], int):
        index = rest.pop(0)
        text += f"({index + 1})" if index else ""
    levels = 0
    expected = segment
    while rest:
        name = rest.pop(0)
        if not isinstance(name, str) or not re.fullmatch(re.escape(expected) + r"\.\d+", name):
            raise NotSimple(f"{name!r} is not a part of {expected}")
        number = name.rsplit(".", 1)[1]
        text += "." + number
        expected = name
        levels += 1
        if levels > 3:
            raise NotSimple("too deep for an HL7 path")
        if rest and isinstance(rest[0], int):
            index = rest.pop(0)
            if levels != 1:
                if index:
                    raise NotSimple("only segments and fields repeat")
                continue
            text += f"({index + 1})" if index else ""
    if levels == 0:
        raise NotSimple("a whole segment is not a value")
    return text


def convert(source: str, inbound: str, variables: set[str] | frozenset = frozenset()) -> Expr:
    """``source`` (a JavaScript expression) as a Jinja expression for a message of kind ``inbound``.
    ``variables``: the Mirth map variables known to hold a value (they become ``meta.NAME``)."""
    if not source.strip():
        return Expr("''", constant="")
    node = _Parser(lex(source)).parse()
    return _compile(node, inbound, variables)


def _compile(node, inbound: str, variables) -> Expr:
    kind = node[0]
    if kind == "str":
        return Expr(jinja_string(node[1]), constant=node[1])
    if kind == "var":
        name = node[1]
        if name not in variables:
            raise NotSimple(f"the map variable {name!r} is not set by a converted Mapper step")
        return Expr(f"meta.{name}", variables=[name])
    if kind == "path":
        parts = node[1]
        if inbound == "hl7":
            path = hl7_path(parts)
            return Expr(f"msg[{jinja_string(path)}]", paths=[path], hl7_path=path)
        if inbound == "json":
            if not parts:
                raise NotSimple("the whole message is not a value")
            index = "".join(f"[{jinja_string(p)}]" if isinstance(p, str) else f"[{p}]" for p in parts)
            dotted = ".".join(str(p) for p in parts)
            return Expr(f"msg{index}", paths=[dotted], json_path=list(parts))
        raise NotSimple(f"paths into {inbound} messages are not converted")
    if kind == "method":
        inner = _compile(node[2], inbound, variables)
        flt = _STRING_METHODS[node[1]]
        if flt is None:
            return inner
        constant = None
        if inner.constant is not None:
            constant = {"upper": str.upper, "lower": str.lower, "trim": str.strip}[flt](inner.constant)
        return Expr(f"({inner.jinja} | {flt})", constant=constant, paths=inner.paths, variables=inner.variables)
    if kind == "concat":
        parts = [_compile(item, inbound, variables) for item in node[1]]
        constant = "".join(p.constant for p in parts) if all(p.constant is not None for p in parts) else None
        return Expr("(" + " ~ ".join(p.jinja for p in parts) + ")", constant=constant,
                    paths=[x for p in parts for x in p.paths], variables=[x for p in parts for x in p.variables])
    raise NotSimple("not converted")  # pragma: no cover - the parser makes no other node


def path_only(source: str) -> list | None:
    """The E4X parts of an assignment target like ``msg['PID']['PID.3']['PID.3.1']`` (or None)."""
    try:
        node = _Parser(lex(source)).parse()
    except NotSimple:
        return None
    return node[1] if node[0] == "path" else None
