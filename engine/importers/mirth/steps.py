"""Filters and transformers: Rule Builder rules, Mapper, Message Builder, Destination Set Filter and
JavaScript steps.

* Rule Builder rules -> one ``when`` expression per Mirth filter (engine.importers.mirth.rules).
  A filter with a JavaScript (or other non-declarative) rule is left out whole and noted: half of a
  filter would let through what Mirth stopped, or stop what it let through, silently.
* Mapper steps -> ``[metadata]`` columns named after the variable (Switchboard's per-message values;
  ``${mrn}`` in a connector field becomes ``{{ meta.mrn }}``).  Mirth's ``validate(mapping, default,
  replacements)``: an empty value takes the default, then each replacement runs through Java's
  ``String.replaceAll``; a JavaScript regex literal (``/\\s+/g``) is turned into its source text by
  that call and never matches (case 12), so it is kept as the no-op it was, with a comment.
* Message Builder steps -> ``set`` operations of an edit step (DESIGN §3.8); the target path in our
  notation, the value a literal or a template.
* Destination Set Filter steps -> a filter on each destination they remove: ``removeAllExcept([1])``
  when C is ``not (C)`` on every other destination, ``remove([2])`` is ``not (C)`` on destination 2,
  ``removeAll()`` is ``not (C)`` on all.  Removal never adds back, so the filters just accumulate.
* JavaScript, XSLT, external script and iterator steps -> the notes, quoted in full; the steps around
  them still convert.  Disabled steps and rules are not run by Mirth: they are left out, with a
  comment naming them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from engine.importers.mirth import rules
from engine.importers.mirth.e4x import (
    Expr,
    NotSimple,
    convert,
    hl7_path,
    jinja_string,
    path_only,
)
from engine.importers.mirth.notes import Note
from engine.importers.mirth.xml_read import flag, local, strings, text

_META_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HL7_DELIMITERS = set("|^~\\&")
_PORT_JS_STEP = ("edit operations (DESIGN §3.8: set, map, copy, delete, add) for changes to fields and "
                 "segments; a Jinja template step for new content; or a plugin transform step (`use = ...`)")
_PORT_JS_RULE = "a `when` expression (DESIGN §3.3) or a plugin filter (`use = ...`)"


def elements(container: Element | None) -> list[Element]:
    if container is None:
        return []
    found = container.find("elements")
    return list(found) if found is not None else []


def legacy(container: Element | None, tag: str) -> list[Element]:
    """Mirth 3.0-3.4 kept ``<rules><rule>`` / ``<steps><step>`` with the generated script."""
    if container is None:
        return []
    found = container.find(tag)
    return list(found) if found is not None else []


def step_label(kind: str, index: int, element: Element, what: str) -> str:
    name = text(element, "name").strip()
    return f"{kind}, {what} {index} \"{name}\"" if name else f"{kind}, {what} {index}"


# -- filters --------------------------------------------------------------------------------------
@dataclass
class FilterResult:
    when: str | None = None
    comments: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


def convert_filter(container: Element | None, where: str, inbound: str, variables) -> FilterResult:
    result = FilterResult()
    parts: list[tuple[str, str]] = []
    blockers: list[Note] = []
    converted_text: list[str] = []
    for index, element in enumerate(elements(container), 1):
        kind = local(element)
        name = text(element, "name").strip()
        if not flag(element, "enabled", True):
            result.comments.append(f"disabled in Mirth, left out: rule {index} \"{name}\"")
            continue
        operator = text(element, "operator", "NONE").strip() or "NONE"
        label = step_label(where, index, element, "rule")
        if kind == "RuleBuilderRule":
            try:
                cond = rules.condition(text(element, "field"), text(element, "condition"),
                                       strings(element, "values"), inbound, variables)
            except NotSimple as error:
                blockers.append(Note(f"{label} (Rule Builder)",
                                     f"The rule's field or values are JavaScript beyond simple paths and literals "
                                     f"({error}); field `{text(element, 'field')}`, condition "
                                     f"{text(element, 'condition')}, values {strings(element, 'values')}.",
                                     _PORT_JS_RULE))
                continue
            parts.append((operator, cond.expression))
            result.paths += cond.paths
            result.comments.append(f"rule {index}: {name}" if name else f"rule {index}")
            converted_text.append(f"{operator} {cond.expression}")
        elif kind == "JavaScriptRule":
            blockers.append(Note(f"{label} (JavaScript)", "A JavaScript filter rule.", _PORT_JS_RULE,
                                 text(element, "script")))
        else:
            blockers.append(Note(f"{label} ({kind})", f"A {kind} rule, which Switchboard has no equivalent of.",
                                 _PORT_JS_RULE, _describe(element)))
    for index, element in enumerate(legacy(container, "rules"), 1):
        if not flag(element, "enabled", True):
            continue
        blockers.append(Note(f"{where}, rule {index} \"{text(element, 'name')}\" ({text(element, 'type') or 'rule'})",
                             "A rule in Mirth's pre-3.5 format; its generated script is quoted.", _PORT_JS_RULE,
                             text(element, "script")))
    if blockers:
        detail = ""
        if converted_text:
            detail = (" The filter's other rules would convert to (operator, expression): "
                      + "; ".join(f"`{item}`" for item in converted_text) + ".")
        for note in blockers:
            note.what += (f" The whole {where.lower()} is left out, so every message passes it until it is "
                          f"ported.{detail}")
        result.notes = blockers
        result.comments = []
        return result
    if parts:
        result.when = rules.combine(parts)
    return result


def _describe(element: Element) -> str:
    from xml.etree.ElementTree import tostring

    return tostring(element, encoding="unicode")


# -- transformers ---------------------------------------------------------------------------------
@dataclass
class Metadata:
    key: str
    value: str
    comment: str = ""


@dataclass
class EditOp:
    op: dict
    comment: str = ""


@dataclass
class TransformerResult:
    edits: list[EditOp] = field(default_factory=list)
    metadata: list[Metadata] = field(default_factory=list)
    removals: dict[int, list[tuple[str, str]]] = field(default_factory=dict)   # metaDataId -> [(when, comment)]
    comments: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)   # converted, but Mirth's output can differ


@dataclass
class TransformerContext:
    where: str                       # "Source transformer" / "Destination "X" transformer"
    inbound: str
    outbound: str
    variables: set[str]              # Mapper variables converted so far (grows)
    destination_ids: list[int]       # metaDataIds of the channel's destinations
    side: str                        # source | destination
    used_keys: set[str]              # metadata keys taken so far


def convert_transformer(container: Element | None, ctx: TransformerContext) -> TransformerResult:
    result = TransformerResult()
    for index, element in enumerate(elements(container), 1):
        kind = local(element)
        label = step_label(ctx.where, index, element, "step")
        name = text(element, "name").strip()
        if not flag(element, "enabled", True):
            result.comments.append(f"disabled in Mirth, left out: {ctx.where.lower()} step {index} \"{name}\"")
            continue
        if kind == "MapperStep":
            _mapper(element, label, ctx, result)
        elif kind == "MessageBuilderStep":
            _message_builder(element, label, ctx, result)
        elif kind == "DestinationSetFilterStep":
            _destination_set(element, label, ctx, result)
        elif kind == "JavaScriptStep":
            result.notes.append(Note(f"{label} (JavaScript)", "A JavaScript transformer step.", _PORT_JS_STEP,
                                     text(element, "script")))
        else:
            result.notes.append(Note(f"{label} ({kind})", f"A {kind}, which Switchboard has no equivalent of.",
                                     _PORT_JS_STEP, _describe(element), language="xml"))
    for index, element in enumerate(legacy(container, "steps"), 1):
        if not flag(element, "enabled", True):
            continue
        result.notes.append(Note(f"{ctx.where}, step {index} \"{text(element, 'name')}\" ({text(element, 'type') or 'step'})",
                                 "A step in Mirth's pre-3.5 format; its generated script is quoted.", _PORT_JS_STEP,
                                 text(element, "script")))
    return result


def _overlaps(read: list[str], edited: list[str]) -> list[str]:
    """Paths read that an earlier edit changed (the same position, or one inside the other)."""
    def norm(path: str) -> str:
        return re.sub(r"\(1\)", "", path)

    hits = []
    for path in read:
        for done in edited:
            a, b = norm(path), norm(done)
            if a == b or a.startswith(b + ".") or b.startswith(a + "."):
                hits.append(path)
    return hits


def _mapper(element: Element, label: str, ctx: TransformerContext, result: TransformerResult) -> None:
    variable = text(element, "variable").strip()
    scope = text(element, "scope", "CHANNEL").strip() or "CHANNEL"
    mapping, default = text(element, "mapping"), text(element, "defaultValue")
    original = (f"variable `{variable}` ({scope} map) = `{mapping}`"
                + (f", default `{default}`" if default.strip() else "")
                + (f", replacements {_pairs(element)}" if _pairs(element) else ""))
    if scope not in ("CHANNEL", "CONNECTOR"):
        result.notes.append(Note(f"{label} (Mapper)", f"A Mapper step into the {scope} map, which outlives the "
                                 f"message: {original}.", "a plugin step, or a metadata column if per-message "
                                 "is enough"))
        return
    if ctx.inbound not in ("hl7", "json"):
        result.notes.append(Note(f"{label} (Mapper)", f"A Mapper step on a {ctx.inbound} message: {original}.",
                                 "a `[metadata]` column (a Jinja expression over `msg`)"))
        return
    try:
        value, expr = metadata_value(mapping, default, _pairs(element), ctx.inbound, ctx.variables)
    except NotSimple as error:
        result.notes.append(Note(f"{label} (Mapper)", f"The mapping is JavaScript beyond simple paths and literals "
                                 f"({error}): {original}.", "a `[metadata]` column (a Jinja expression over `msg`)"))
        return
    hits = _overlaps(expr.paths, result.edited)
    if hits:
        result.notes.append(Note(f"{label} (Mapper)", f"The Mapper reads {', '.join(hits)} after an earlier step "
                                 f"changed it; a `[metadata]` column reads the message as received: {original}.",
                                 "a `[metadata]` expression that computes the changed value"))
        return
    key = re.sub(r"[^A-Za-z0-9_]", "_", variable) or "value"
    if not _META_KEY.fullmatch(key):
        key = "_" + key
    comment = f"Mapper step \"{text(element, 'name').strip()}\""
    if key != variable:
        comment += f" (Mirth variable \"{variable}\")"
    if key in ctx.used_keys:
        result.notes.append(Note(f"{label} (Mapper)", f"A second Mapper step sets `{variable}`; a metadata column "
                                 f"has one value per message: {original}.", "one `[metadata]` expression"))
        return
    ctx.used_keys.add(key)
    ctx.variables.add(variable)
    result.metadata.append(Metadata(key, value, comment + expr_comment(expr)))


def expr_comment(expr) -> str:
    return "; " + "; ".join(expr.comments) if getattr(expr, "comments", None) else ""


def _pairs(element: Element) -> list[tuple[str, str]]:
    found = element.find("replacements")
    if found is None:
        return []
    pairs = []
    for pair in found:
        pairs.append((text(pair, "left"), text(pair, "right")))
    return pairs


def _value_expression(mapping: str, default: str, pairs, inbound: str, variables) -> tuple[Expr, list[str], bool]:
    """Mirth's validate(mapping, default, replacements) as one Jinja expression.  Returns the
    expression, comments, and whether it is exactly the mapping (no default, no replacement ran)."""
    expr = convert(mapping, inbound, variables)
    comments: list[str] = []
    jinja = expr.jinja
    if expr.json_path is not None:
        jinja = f"({jinja} | default('') | string)"
    plain = True
    if default.strip():
        fallback = convert(default, inbound, variables)
        if fallback.constant is None or fallback.constant != "":
            jinja = f"({jinja} or {fallback.jinja})"
            expr = Expr(jinja, constant=expr.constant if expr.constant else fallback.constant,
                        paths=expr.paths + fallback.paths, variables=expr.variables + fallback.variables)
            plain = False
    for left, right in pairs:
        replaced, note = replacement(jinja, left, right, inbound, variables)
        if note:
            comments.append(note)
        if replaced is not None and replaced != jinja:
            jinja = replaced
            plain = False
            if expr.constant is not None:
                expr = Expr(jinja, constant=None, paths=expr.paths, variables=expr.variables)
    expr = Expr(jinja, constant=expr.constant if plain else None, paths=expr.paths, variables=expr.variables,
                json_path=expr.json_path if plain else None, hl7_path=expr.hl7_path if plain else None)
    return expr, comments, plain


def metadata_value(mapping: str, default: str, pairs, inbound: str, variables) -> tuple[str, Expr]:
    expr, comments, plain = _value_expression(mapping, default, pairs, inbound, variables)
    expr.comments = comments
    if plain and expr.hl7_path is not None:
        return expr.hl7_path, expr
    if plain and expr.json_path is not None and all(isinstance(p, str) and re.fullmatch(r"[\w-]+", p)
                                                    for p in expr.json_path):
        return ".".join(expr.json_path), expr
    return expr.jinja, expr


# -- replacements ---------------------------------------------------------------------------------
_META_CHARS = set("\\.[]{}()*+?^$|")


def replacement(jinja: str, left: str, right: str, inbound: str, variables) -> tuple[str | None, str]:
    """``jinja`` with Mirth's ``replaceAll(left, right)`` applied: (new expression, comment).
    NotSimple when the regular expression is not one of the forms converted here."""
    left_s = left.strip()
    if left_s.startswith("/"):
        return jinja, (f"replacement {left_s} -> {right.strip()} kept as a no-op: Mirth passed the JavaScript "
                       "regex literal to Java's replaceAll as its text, which never matched")
    pattern = convert(left, inbound, variables).constant
    target = convert(right, inbound, variables).constant
    if pattern is None or target is None:
        raise NotSimple("a replacement that is not a pair of string literals")
    if "$" in target or "\\" in target:
        raise NotSimple("a replacement text with $ or \\ (Java group references)")
    if not any(char in _META_CHARS for char in pattern):
        return f"({jinja} | replace({jinja_string(pattern)}, {jinja_string(target)}))", ""
    match = re.fullmatch(r"\^(\\?.)[+*]", pattern)
    if match and target == "":
        return f"({jinja}).lstrip({jinja_string(_char(match.group(1)))})", ""
    match = re.fullmatch(r"(\\?.)[+*]\$", pattern)
    if match and target == "":
        return f"({jinja}).rstrip({jinja_string(_char(match.group(1)))})", ""
    match = re.fullmatch(r"\[(\^?)((?:\\.|[^\]\\])+)\][+*]?", pattern)
    if match and target == "":
        chars = _char_class(match.group(2))
        test = "select" if match.group(1) else "reject"
        return f"({jinja} | {test}('in', {jinja_string(chars)}) | join)", ""
    raise NotSimple(f"the regular expression {pattern!r}")


def _char(lexeme: str) -> str:
    if lexeme.startswith("\\"):
        if lexeme[1].isalnum():
            raise NotSimple(f"the regular expression class {lexeme!r}")
        return lexeme[1]
    if lexeme in _META_CHARS:
        raise NotSimple(f"the regular expression {lexeme!r}")
    return lexeme


_CLASSES = {"d": "0123456789", "s": " \t\n\x0b\f\r",
            "w": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"}


def _char_class(body: str) -> str:
    chars: list[str] = []
    items: list[str] = []
    i = 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            letter = body[i + 1]
            if letter in _CLASSES:
                chars.extend(_CLASSES[letter])
                items.append("")
            elif letter.isalnum():
                raise NotSimple(f"the regular expression class \\{letter}")
            else:
                items.append(letter)
            i += 2
            continue
        if body[i] in "[&":
            raise NotSimple("a nested or intersected character class")
        items.append(body[i])
        i += 1
    j = 0
    while j < len(items):
        if j + 2 < len(items) and items[j + 1] == "-" and items[j] and items[j + 2]:
            start, end = ord(items[j]), ord(items[j + 2])
            if end < start or end - start > 512:
                raise NotSimple("a character range too wide")
            chars.extend(chr(c) for c in range(start, end + 1))
            j += 3
        else:
            chars.append(items[j]) if items[j] else None
            j += 1
    return "".join(dict.fromkeys(chars))


# -- message builder ------------------------------------------------------------------------------
def _message_builder(element: Element, label: str, ctx: TransformerContext, result: TransformerResult) -> None:
    target, mapping, default = text(element, "messageSegment"), text(element, "mapping"), text(element, "defaultValue")
    original = (f"`{target}` = `{mapping}`" + (f", default `{default}`" if default.strip() else "")
                + (f", replacements {_pairs(element)}" if _pairs(element) else ""))
    port = "a `set` edit operation (DESIGN §3.8)"
    if ctx.inbound != "hl7" or ctx.outbound != "hl7":
        result.notes.append(Note(f"{label} (Message Builder)", f"A Message Builder step on a {ctx.inbound} -> "
                                 f"{ctx.outbound} message; edit steps work on HL7 v2: {original}.",
                                 "a Jinja template step that writes the outbound message"))
        return
    parts = path_only(target)
    try:
        if parts is None:
            raise NotSimple("the target is not a path into `msg` (an outbound template's `tmp`?)")
        path = hl7_path(parts)
        expr, comments, _plain = _value_expression(mapping, default, _pairs(element), "hl7", ctx.variables)
    except NotSimple as error:
        result.notes.append(Note(f"{label} (Message Builder)", f"The step is JavaScript beyond simple paths and "
                                 f"literals ({error}): {original}.", port))
        return
    result.differences += _markup_reads(label, expr.paths)
    hits = _overlaps(expr.paths, result.edited)
    if hits:
        note = f"reads {', '.join(hits)} after an earlier step changed it"
        result.comments.append(f"{label}: {note} (the edit step sees the message as edited so far, as Mirth did)")
    op: dict = {"set": path}
    if expr.constant is not None:
        op["value"] = _jinja_safe_literal(expr.constant)
        if set(expr.constant) & _HL7_DELIMITERS:
            op["escape"] = False      # Mirth wrote the text as is: its separators are structure
    else:
        op["value"] = "{{ " + expr.jinja + " }}"
    result.edits.append(EditOp(op, f"Message Builder \"{text(element, 'name').strip()}\""
                               + ("; " + "; ".join(comments) if comments else "")))
    result.edited.append(path)


def _markup_reads(label: str, paths: list[str]) -> list[str]:
    """Mirth's ``.toString()`` on an E4X node that has children (a field with components, a
    component with subcomponents) returns XML markup, and a Message Builder writes that markup into
    the field.  Switchboard reads text (DESIGN §3.3), so such a message comes out differently."""
    found = []
    for path in paths:
        depth = len(re.sub(r"\(\d+\)", "", path).split(".")) - 1
        if depth in (1, 2):
            inner = "subcomponents" if depth == 2 else "components"
            reads = ("its first subcomponent" if depth == 2
                     else "the field's text, components joined by `^`")
            found.append(f"{label} (Message Builder) reads `{path}` with E4X `.toString()`. On a message whose "
                         f"{path} has {inner}, Mirth wrote E4X XML markup (`<{_e4x_name(path)}>...`) into the "
                         f"field; Switchboard writes {reads}. Other messages come out the same.")
    return found


def _e4x_name(path: str) -> str:
    return re.sub(r"\(\d+\)", "", path)


def _jinja_safe_literal(value: str) -> str:
    if any(mark in value for mark in ("{{", "{%", "{#")):
        return "{{ " + jinja_string(value) + " }}"
    return value


# -- destination set filter -----------------------------------------------------------------------
def _destination_set(element: Element, label: str, ctx: TransformerContext, result: TransformerResult) -> None:
    behavior = text(element, "behavior", "REMOVE").strip()
    ids = [int(child.text) for child in (element.find("metaDataIds") or []) if (child.text or "").strip().isdigit()]
    original = (f"{behavior}({ids if behavior != 'REMOVE_ALL' else ''}) if `{text(element, 'field')}` "
                f"{text(element, 'condition')} {strings(element, 'values')}")
    port = "a `[[destination.filter]]` on each destination it removes"
    if ctx.side != "source":
        result.notes.append(Note(f"{label} (Destination Set Filter)", f"A destination set filter outside the source "
                                 f"transformer: {original}.", port))
        return
    try:
        cond = rules.condition(text(element, "field"), text(element, "condition"), strings(element, "values"),
                               ctx.inbound, ctx.variables)
    except NotSimple as error:
        result.notes.append(Note(f"{label} (Destination Set Filter)", f"The condition is JavaScript beyond simple "
                                 f"paths and literals ({error}): {original}. Until it is ported every destination "
                                 "receives every message.", port))
        return
    hits = _overlaps(cond.paths, result.edited)
    if hits:
        result.notes.append(Note(f"{label} (Destination Set Filter)", f"The condition reads {', '.join(hits)} after an "
                                 f"earlier step changed it; destination filters see the message as received: "
                                 f"{original}.", port))
        return
    if behavior == "REMOVE_ALL_EXCEPT":
        affected = [i for i in ctx.destination_ids if i not in ids]
    elif behavior == "REMOVE":
        affected = [i for i in ctx.destination_ids if i in ids]
    else:
        affected = list(ctx.destination_ids)
    name = text(element, "name").strip()
    for meta_id in affected:
        result.removals.setdefault(meta_id, []).append((rules.negate(cond.expression),
                                                        f"destination set filter \"{name}\""))
