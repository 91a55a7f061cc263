"""Rule Builder rules (and Destination Set Filter conditions) as ``when`` expressions.

Mirth builds one function per enabled rule and joins their calls with ``&&`` / ``||`` in order, so
JavaScript precedence applies: AND binds tighter than OR (``r1 && r2 || r3`` is ``(r1 && r2) || r3``).
Jinja's ``and``/``or`` have the same precedence; the groups are still written with parentheses so a
reader sees them.  Conditions (RuleBuilderRule.getScript in Mirth's source):

  EXISTS       field.length > 0            NOT_EXIST    field.length == 0
  EQUALS       field == v1 || field == v2  NOT_EQUAL    field != v1 && field != v2
  CONTAINS     indexOf(v1) != -1 || ...    NOT_CONTAIN  indexOf(v1) == -1 && ...

A disabled rule is not part of Mirth's script, so it is left out of the expression (the channel file
shows it in a comment).  For JSON messages a missing key compares as '' (``| default('')``), as an empty
E4X list does in Mirth; EXISTS / NOT EXIST on a missing key raise, as Mirth's did ("Filter error", the
destination goes ERROR: case 07 input 5).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.importers.mirth.e4x import Expr, NotSimple, convert, jinja_string

CONDITIONS = ("EXISTS", "NOT_EXIST", "EQUALS", "NOT_EQUAL", "CONTAINS", "NOT_CONTAIN")


@dataclass
class Condition:
    expression: str
    paths: list[str] = field(default_factory=list)


def condition(field_js: str, kind: str, values_js: list[str], inbound: str, variables) -> Condition:
    """One rule's test as a Jinja expression; NotSimple when its field or values are not simple."""
    if kind not in CONDITIONS:
        raise NotSimple(f"condition {kind!r} is not converted")
    subject = convert(field_js, inbound, variables)
    if subject.constant is not None:
        raise NotSimple("the field is a constant")
    values = [convert(v, inbound, variables) for v in values_js]
    paths = subject.paths + [p for v in values for p in v.paths]
    if kind in ("EXISTS", "NOT_EXIST"):
        text = _text(subject, strict=True)
        return Condition(f"{text} {'!=' if kind == 'EXISTS' else '=='} ''", paths)
    text = _text(subject, strict=False)
    if not values:
        values = [Expr("''", constant="")]
    if kind in ("EQUALS", "NOT_EQUAL"):
        negate = kind == "NOT_EQUAL"
        if len(values) == 1:
            return Condition(f"{text} {'!=' if negate else '=='} {values[0].jinja}", paths)
        if all(v.constant is not None for v in values):
            listed = ", ".join(v.jinja for v in values)
            return Condition(f"{text} {'not in' if negate else 'in'} ({listed})", paths)
        joined = (" and " if negate else " or ").join(f"{text} {'!=' if negate else '=='} {v.jinja}" for v in values)
        return Condition(f"({joined})", paths)
    negate = kind == "NOT_CONTAIN"
    parts = [f"{v.jinja} {'not in' if negate else 'in'} {text}" for v in values]
    if len(parts) == 1:
        return Condition(parts[0], paths)
    return Condition("(" + (" and " if negate else " or ").join(parts) + ")", paths)


def _text(subject: Expr, strict: bool) -> str:
    """The field as text: HL7 paths already are ('' when missing); JSON values are made strings."""
    if subject.json_path is None:
        return subject.jinja
    if strict:
        return f"({subject.jinja} | string)"
    return f"({subject.jinja} | default('') | string)"


def combine(parts: list[tuple[str, str]]) -> str:
    """``[(operator, expression), ...]`` (the first operator ignored) joined with JavaScript precedence."""
    groups: list[list[str]] = []
    for index, (operator, expression) in enumerate(parts):
        if index == 0 or operator == "OR":
            groups.append([expression])
        else:
            groups[-1].append(expression)
    texts = []
    for group in groups:
        if len(group) == 1:
            texts.append(group[0])
        else:
            texts.append(("(" if len(groups) > 1 else "") + " and ".join(group) + (")" if len(groups) > 1 else ""))
    return " or ".join(texts)


def negate(expression: str) -> str:
    return f"not ({expression})"


__all__ = ["CONDITIONS", "Condition", "NotSimple", "combine", "condition", "jinja_string", "negate"]
