"""The edit step (DESIGN §3.8): a list of one-verb operations compiled once, applied per message.

Compiling is where mistakes are caught, so that ``switchboard check`` can name each one before a
message arrives: an unknown verb, two verbs in one operation, an unknown key, a path that does not
parse, a ``missing`` that is not keep/error/default, a table that is not loaded.  Each problem is
``(key, reason)`` with the key of the operation's part, e.g. ``transform[1].edit[3].map``.

Applying needs two things only the pipeline has, so they are callbacks: ``render(source, text)``
renders a template value (one holding ``{{`` or ``{%``) against ``text``, the message as edited so
far; ``lookup(table, key)`` returns the table's value, or anything that is not text (None or
``engine.core.lookups.MISSING``) for a key the table lacks.  No Twisted, no store: the step is a
pure function of the message.

Verbs (one per operation, run in order):

* ``set = PATH, value = TEXT [, escape = false]`` — write the value, escaped unless told not to.
* ``copy = PATH, to = PATH`` — the encoded text at one position written as it is at another (same
  message, same delimiters, so escapes stay valid).  The source is one position: no ``(*)``.
* ``map = PATH, table = NAME [, missing = "keep"|"error"|"default", default = TEXT]`` — the
  decoded value at each position looked up; the table's value is written escaped.  A key not in
  the table follows ``missing``; so does a ``map`` on an absent segment (``keep`` leaves the
  message alone, ``default`` writes the default and so adds the segment, ``error`` fails).  A
  ``(*)`` that matches no occurrence maps nothing and is not an error.
* ``delete = "NTE" | "Z*"`` removes segments by name or glob; ``delete = PATH`` (with a field)
  empties that position, its place kept.
* ``add = SEGMENT [, after = "SEG"]`` — a segment (literal or template; its separators are
  structure) after the last ``after`` segment, else at the end.

Errors while applying are ``EditError`` naming the operation and the path, never a value.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from fnmatch import fnmatchcase

from engine.hl7.editable import (
    _SEGMENT_GLOB,
    _SEGMENT_NAME,
    EditableMessage,
    EditError,
    SegmentChange,
    Target,
    parse_target,
)
from engine.hl7.encoding import HEADER_SEGMENTS

VERBS = ("set", "copy", "map", "delete", "add")
MISSING_POLICIES = ("keep", "error", "default")
_KEYS = {  # the keys each verb takes besides itself
    "set": frozenset({"value", "escape"}),
    "copy": frozenset({"to"}),
    "map": frozenset({"table", "missing", "default"}),
    "delete": frozenset(),
    "add": frozenset({"after"}),
}
_REQUIRED = {"set": ("value",), "copy": ("to",), "map": ("table",), "delete": (), "add": ()}

Render = Callable[[str, str], str]
Lookup = Callable[[str, str], object]


def is_template(text: str) -> bool:
    """A value is a template when it holds ``{{`` or ``{%``; anything else is a literal."""
    return "{{" in text or "{%" in text


@dataclass(frozen=True, slots=True)
class SetOp:
    key: str
    target: Target
    value: str
    template: bool
    escape: bool = True

    def run(self, msg: EditableMessage, render: Render | None, lookup: Lookup | None) -> None:
        value = _render(self.key, render, self.value, msg) if self.template else self.value
        msg.set(self.target, value, escape=self.escape)


@dataclass(frozen=True, slots=True)
class CopyOp:
    key: str
    source: Target
    target: Target

    def run(self, msg: EditableMessage, render: Render | None, lookup: Lookup | None) -> None:
        msg.set(self.target, msg.get(self.source), escape=False)


@dataclass(frozen=True, slots=True)
class MapOp:
    key: str
    target: Target
    table: str
    missing: str = "keep"
    default: str | None = None

    def run(self, msg: EditableMessage, render: Render | None, lookup: Lookup | None) -> None:
        if lookup is None:
            raise EditError(f"{self.key}: no code tables were given to map through")
        target = self.target
        p = target.path
        if not target.every_segment and msg.count(p.segment) < p.segment_rep:
            if self.missing == "error":
                raise EditError(f"{self.key}: map {target.text}: the {p.segment} segment is "
                                "absent (missing = \"error\")")
            if self.missing == "default":
                msg.set(target, self.default)
            return
        positions = msg.expand(target) if target.every_segment or target.every_repetition \
            else (target,)
        for position in positions:
            value = lookup(self.table, msg.decode(msg.get(position)))
            if isinstance(value, str):
                msg.set(position, value)
            elif self.missing == "default":
                msg.set(position, self.default)
            elif self.missing == "error":
                raise EditError(f"{self.key}: map {target.text}: the value is not in table "
                                f"'{self.table}' (missing = \"error\")")


@dataclass(frozen=True, slots=True)
class DeleteSegmentsOp:
    key: str
    pattern: str

    def run(self, msg: EditableMessage, render: Render | None, lookup: Lookup | None) -> None:
        msg.delete_segments(self.pattern)


@dataclass(frozen=True, slots=True)
class ClearOp:
    key: str
    target: Target

    def run(self, msg: EditableMessage, render: Render | None, lookup: Lookup | None) -> None:
        msg.clear(self.target)


@dataclass(frozen=True, slots=True)
class AddOp:
    key: str
    segment: str
    template: bool
    after: str | None = None

    def run(self, msg: EditableMessage, render: Render | None, lookup: Lookup | None) -> None:
        text = _render(self.key, render, self.segment, msg) if self.template else self.segment
        msg.add_segment(text, after=self.after)


EditOp = SetOp | CopyOp | MapOp | DeleteSegmentsOp | ClearOp | AddOp


def _render(key: str, render: Render | None, source: str, msg: EditableMessage) -> str:
    if render is None:
        raise EditError(f"{key}: a template value needs a renderer")
    out = render(source, msg.text())
    if not isinstance(out, str):
        raise EditError(f"{key}: the template did not give text")
    return out


@dataclass(frozen=True, slots=True)
class EditScript:
    """A compiled edit list.  ``apply`` is a pure function of the message text."""

    ops: tuple[EditOp, ...]
    key: str = "edit"

    @property
    def tables(self) -> frozenset[str]:
        """The code tables the script maps through (a reload of one of them concerns it)."""
        return frozenset(op.table for op in self.ops if isinstance(op, MapOp))

    def apply(self, text: str, *, render: Render | None = None,
              lookup: Lookup | None = None) -> tuple[str, list[SegmentChange]]:
        """(the edited text, what changed per segment).  EditError (PHI-free) when the text is
        not HL7 v2 or an operation cannot be made; the caller fails the message with it."""
        try:
            msg = EditableMessage(text)
        except EditError as error:
            raise EditError(f"{self.key}: {error}") from None
        for op in self.ops:
            try:
                op.run(msg, render, lookup)
            except EditError as error:
                reason = str(error)
                raise EditError(reason if reason.startswith(op.key) else f"{op.key}: {reason}") \
                    from None
        return msg.text(), msg.changes()


def compile_edits(ops: object, *, tables: Collection[str] | None = None, key: str = "edit",
                  check_template: Callable[[str], object] | None = None,
                  ) -> tuple[EditScript, list[tuple[str, str]]]:
    """Compile the ``edit = [...]`` list of a transform step.

    ``tables``: the names of the loaded code tables (None: not checked).  ``key``: the config key
    of the list, e.g. ``transform[1].edit``; problems are keyed ``{key}[n].part`` (n from 1).
    ``check_template(source)`` may raise to report a template that does not compile.  The script
    holds only the operations without problems; a caller must not run it when there are any.
    """
    problems: list[tuple[str, str]] = []
    if not isinstance(ops, list):
        return EditScript((), key), [(key, "must be a list of inline tables, one verb each")]
    compiled: list[EditOp] = []
    for number, spec in enumerate(ops, 1):
        op_key = f"{key}[{number}]"
        if not isinstance(spec, dict):
            problems.append((op_key, "must be an inline table such as { set = \"MSH.5\", "
                                     "value = \"LAB\" }"))
            continue
        found = _compile_one(op_key, spec, tables, check_template)
        if isinstance(found, list):
            problems.extend(found)
        else:
            compiled.append(found)
    return EditScript(tuple(compiled), key), problems


def _compile_one(op_key: str, spec: dict, tables: Collection[str] | None,
                 check_template: Callable[[str], object] | None) -> EditOp | list:
    verbs = [verb for verb in VERBS if verb in spec]
    if len(verbs) != 1:
        if verbs:
            return [(op_key, f"one verb per operation; found {' and '.join(verbs)}")]
        unknown = ", ".join(repr(str(name)) for name in spec)
        return [(op_key, f"no verb ({unknown} is not one): use one of {', '.join(VERBS)}")]
    verb = verbs[0]
    allowed = _KEYS[verb]
    unknown = [(f"{op_key}.{name}", f"unknown key for {verb}; known: "
                                    f"{', '.join(sorted(allowed)) or 'none'}")
               for name in spec if name != verb and name not in allowed]
    problems = []
    for name in _REQUIRED[verb]:
        if name not in spec:
            problems.append((f"{op_key}.{name}", f"{verb} needs {name}"))
    for name in ("value", "default", "to", "after", "table"):
        if name in spec and not isinstance(spec[name], str):
            problems.append((f"{op_key}.{name}", "must be a string"))
    if "escape" in spec and not isinstance(spec["escape"], bool):
        problems.append((f"{op_key}.escape", "must be true or false"))
    subject = spec[verb]
    if not isinstance(subject, str):
        problems.append((f"{op_key}.{verb}", "must be a string"))
    if problems:  # wrong types or a required key absent: the operation cannot be built
        return unknown + problems
    built = _BUILDERS[verb](op_key, spec, subject, tables, check_template)
    if isinstance(built, list):
        return unknown + built
    return unknown or built


def _path(problems: list, where: str, path: str, verb: str, *, writes: bool) -> Target | None:
    try:
        target = parse_target(path)
    except EditError as error:
        problems.append((where, str(error)))
        return None
    p = target.path
    if p.field is None:
        problems.append((where, f"{verb} needs a field position (SEG.FIELD...), not the "
                                f"segment {path!r}"))
        return None
    if writes and p.segment in HEADER_SEGMENTS and p.field <= 2:
        problems.append((where, f"{p.segment}.1 and {p.segment}.2 are the message's delimiters "
                                "and cannot be changed"))
        return None
    return target


def _template_problem(problems: list, where: str, source: str,
                      check_template: Callable[[str], object] | None) -> bool:
    template = is_template(source)
    if template and check_template is not None:
        try:
            check_template(source)
        except Exception as error:  # the template engine's own error types (TemplateSyntaxError)
            problems.append((where, f"the template does not compile: {error}"))
    return template


def _build_set(op_key, spec, subject, tables, check_template):
    problems: list = []
    target = _path(problems, f"{op_key}.set", subject, "set", writes=True)
    value = spec["value"]
    template = _template_problem(problems, f"{op_key}.value", value, check_template)
    escape = spec.get("escape", True)
    if not escape and not template and any(brk in value for brk in "\r\n\x0b\x1c"):
        problems.append((f"{op_key}.value", "holds a line break, which would add a segment "
                                            "(escape = false)"))
    return problems or SetOp(op_key, target, value, template, escape)


def _build_copy(op_key, spec, subject, tables, check_template):
    problems: list = []
    source = _path(problems, f"{op_key}.copy", subject, "copy", writes=False)
    if source is not None and (source.every_segment or source.every_repetition):
        problems.append((f"{op_key}.copy", "the source is one position: (*) is for the target"))
    elif source is not None and source.path.segment in HEADER_SEGMENTS \
            and source.path.field <= 2:
        problems.append((f"{op_key}.copy", "MSH.1 and MSH.2 are the delimiters; copying them "
                                           "would write separators as structure"))
    target = _path(problems, f"{op_key}.to", spec["to"], "copy", writes=True)
    return problems or CopyOp(op_key, source, target)


def _build_map(op_key, spec, subject, tables, check_template):
    problems: list = []
    target = _path(problems, f"{op_key}.map", subject, "map", writes=True)
    table = spec["table"]
    if tables is not None and table not in tables:
        known = ", ".join(sorted(tables)) or "none loaded"
        problems.append((f"{op_key}.table", f"no code table named {table!r}; known: {known}"))
    missing = spec.get("missing", "keep")
    if missing not in MISSING_POLICIES:
        problems.append((f"{op_key}.missing", f"must be one of {', '.join(MISSING_POLICIES)}"))
    default = spec.get("default")
    if missing == "default" and default is None:
        problems.append((f"{op_key}.default", "missing = \"default\" needs a default"))
    elif missing != "default" and default is not None:
        problems.append((f"{op_key}.default", "a default is used only with "
                                              "missing = \"default\""))
    return problems or MapOp(op_key, target, table, missing, default)


def _build_delete(op_key, spec, subject, tables, check_template):
    problems: list = []
    if "." in subject:
        target = _path(problems, f"{op_key}.delete", subject, "delete", writes=True)
        return problems or ClearOp(op_key, target)
    is_glob = _SEGMENT_GLOB.fullmatch(subject) and any(c in subject for c in "*?[")
    if not (is_glob or _SEGMENT_NAME.fullmatch(subject)):
        return [(f"{op_key}.delete", "takes a segment name or glob (NTE, Z*) or a field path "
                                     "(PID.19)")]
    if fnmatchcase("MSH", subject):
        return [(f"{op_key}.delete", "would delete the MSH header segment")]
    return DeleteSegmentsOp(op_key, subject)


def _build_add(op_key, spec, subject, tables, check_template):
    problems: list = []
    template = _template_problem(problems, f"{op_key}.add", subject, check_template)
    name = subject[:3]
    if not (template and is_template(name)):
        if not _SEGMENT_NAME.fullmatch(name) or subject[3:4].isalnum():
            problems.append((f"{op_key}.add", "a segment starts with its three-character name "
                                              "(ZSB|...)"))
        elif name in HEADER_SEGMENTS:
            problems.append((f"{op_key}.add", f"a {name} segment starts a new message; not "
                                              "added"))
    if not template and any(brk in subject for brk in "\r\n\x0b\x1c"):
        problems.append((f"{op_key}.add", "holds a line break: one segment per add"))
    after = spec.get("after")
    if after is not None and not _SEGMENT_NAME.fullmatch(after):
        problems.append((f"{op_key}.after", "must be a segment name such as PID"))
    return problems or AddOp(op_key, subject, template, after)


_BUILDERS = {"set": _build_set, "copy": _build_copy, "map": _build_map, "delete": _build_delete,
             "add": _build_add}
