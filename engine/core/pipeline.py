"""A channel's filters, transform steps and per-destination stages, as one pure function of a message.

``ChannelPipeline.run(message)`` does no I/O: it decides FILTERED / ERROR / which destinations take
the message and exactly what each one will send.  The daemon stores that outcome and queues it;
``switchboard test`` prints it.  Keeping the two on one code path is what makes a dry run honest.

Everything is compiled once, when the channel is built: ``when`` expressions, templates and plugin
filter/transform instances.  Building raises ``PipelineError`` listing every problem, which is how
``switchboard check`` reports bad templates and unknown plugin names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from engine.core.message import Message, MessageParseError, x12_envelope_meta
from engine.core.statuses import derive_status
from engine.hl7.edit_ops import compile_edits
from engine.hl7.editable import EditError
from engine.core.templates import TemplateError
from engine.hl7.encoding import hl7_output
from engine.hl7.path import parse_path
from engine.hl7.view import HL7View

QUEUED, FILTERED, ERROR, TRANSFORMED, SENT = "QUEUED", "FILTERED", "ERROR", "TRANSFORMED", "SENT"


class PipelineError(Exception):
    """Problems found while building a channel's stages; ``problems`` is a list of (key, reason)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in problems))


class StageError(Exception):
    """A stage failed for this message; the text is PHI-free and names the stage."""


@dataclass
class FilterResult:
    """A filter's verdict; ``rules`` optionally explains it rule by rule (shown by ``switchboard test``)."""

    passed: bool
    reason: str = ""
    rules: list[str] = field(default_factory=list)


@dataclass
class FilterOutcome:
    name: str
    passed: bool
    reason: str = ""
    rules: list[str] = field(default_factory=list)


@dataclass
class DestinationPlan:
    name: str
    filtered: bool = False
    body: str | None = None
    error: str | None = None
    filters: list[FilterOutcome] = field(default_factory=list)

    @property
    def status(self) -> str:
        return FILTERED if self.filtered else ERROR if self.error else QUEUED


@dataclass
class Outcome:
    status: str
    filters: list[FilterOutcome] = field(default_factory=list)
    transformed: str | None = None
    error: str | None = None
    destinations: list[DestinationPlan] = field(default_factory=list)


# ``msg['PATH'] == 'text'`` (or ``!=``): the commonest filter, evaluated on an HL7 message without
# Jinja (a new template context per call costs more than the lookup itself).
_PATH_COMPARISON = re.compile(r"""\s*msg\[\s*(['"])([A-Z0-9().]+)\1\s*\]\s*(==|!=)\s*(['"])([^'"\\{}]*)\4\s*""")


def _path_comparison(source: str):
    """(parsed path, operator, literal) when ``source`` is a plain path comparison, else None."""
    match = _PATH_COMPARISON.fullmatch(source)
    if match is None:
        return None
    try:
        path = parse_path(match[2])
    except ValueError:
        return None
    return path, match[3], match[5]


class ExpressionFilter:
    """``when = "..."``: a sandboxed Jinja expression; falsy means the message is filtered.

    A plain comparison of one HL7 path with a string is read straight from the HL7 view: the
    same lookup Jinja's sandbox makes (``HL7View.__getitem__``), the same result; anything else,
    or a ``msg`` that is not an HL7 view, goes through Jinja."""

    def __init__(self, templates, source: str, name: str) -> None:
        self.name = name
        self.source = source
        self.expression = templates.expression(source, name)
        self.comparison = _path_comparison(source)

    def check(self, message: Message, context: dict) -> FilterResult:
        view = context.get("msg")
        if self.comparison is not None and type(view) is HL7View:
            path, operator, literal = self.comparison
            passed = (view[path] == literal) == (operator == "==")
        else:
            passed = self.expression.evaluate(context)
        if passed:
            return FilterResult(True)
        return FilterResult(False, f"when {self.source!r} was false")


class TemplateStep:
    """A Jinja transform step (file or inline); its output is checked against ``outbound``."""

    def __init__(self, compiled, name: str) -> None:
        self.compiled = compiled
        self.name = name

    def apply(self, message: Message, context: dict) -> str:
        return self.compiled.render(context)


def check_outbound(text: str, outbound: str | None, step_name: str) -> str:
    """Enforce the declared output type; HL7 written with newlines is sent with CR separators."""
    if outbound == "json":
        try:
            json.loads(text)
        except ValueError as error:
            raise StageError(f"{step_name}: output is not valid JSON (line {getattr(error, 'lineno', '?')})") from None
    elif outbound == "hl7":
        text = hl7_output(text)   # CR-terminated segments, the last one too (DESIGN §3.5)
        if not text.startswith("MSH"):
            raise StageError(f"{step_name}: HL7 output must start with an MSH segment")
    elif outbound == "xml":
        try:
            Message(text, "xml").view
        except MessageParseError as error:
            raise StageError(f"{step_name}: output is not valid XML: {error}") from None
    return text


class Stages:
    """Filters plus transform steps: shared by the channel level and each destination."""

    def __init__(self, filters: list, steps: list[tuple[Any, str | None, str]]) -> None:
        """``steps``: (step, outbound, name).  A template step without ``outbound`` is plain text
        (its output is not checked); a plugin step without one keeps its input's type."""
        self.filters = filters
        self.steps = steps  # (step, outbound, name)

    def check(self, message: Message, context: dict) -> list[FilterOutcome]:
        outcomes = []
        for stage_filter in self.filters:
            try:
                result = stage_filter.check(message, context)
            except TemplateError as error:
                raise StageError(f"filter {stage_filter.name}: {error}") from None
            except StageError:   # a filter's own PHI-free refusal (as transform steps may raise)
                raise
            except Exception as error:  # a plugin filter's bug: ERROR for this message
                raise StageError(f"filter {stage_filter.name} raised {type(error).__name__}") from None
            outcomes.append(FilterOutcome(stage_filter.name, bool(result.passed), result.reason,
                                          list(getattr(result, "rules", ()) or ())))
            if not result.passed:
                break
        return outcomes

    def transform(self, message: Message, context: dict, inbound: str) -> tuple[str, str] | None:
        """Run the steps in order; return (text, type) of the last, or None when there are none."""
        text, kind = None, inbound
        current = message
        for step, outbound, name in self.steps:
            step_context = dict(context, msg=current.view if current is not message else context["msg"])
            try:
                text = step.apply(current, step_context)
            except TemplateError as error:
                raise StageError(str(error)) from None
            except StageError:
                raise
            except Exception as error:  # a plugin step's bug: ERROR for this message, not a crash
                # the type only: an exception's text may quote message content, and reasons are logged
                raise StageError(f"transform {name} raised {type(error).__name__}") from None
            if not isinstance(text, str):
                raise StageError(f"transform {name}: returned {type(text).__name__}, not text")
            kind = outbound or kind
            text = check_outbound(text, kind, name)
            current = Message(text, kind, id=message.id, channel=message.channel, received_at=message.received_at)
        return None if text is None else (text, kind)


class EditStep:
    """``edit = [...]`` (DESIGN §3.8): HL7 v2 in, HL7 v2 out, only the edited positions changed.

    Template values render with ``msg`` as edited so far; ``map`` reads the code tables the
    templates hold.  ``last_changes`` keeps the latest message's per-segment changes for the dry
    run (the pipeline runs in one thread, one message at a time)."""

    def __init__(self, script, templates, name: str, sources: dict) -> None:
        self.script, self.templates, self.name, self.compiled = script, templates, name, sources
        self.last_changes: list = []

    def apply(self, message: Message, context: dict) -> str:
        def render(source: str, text: str) -> str:
            edited = Message(text, "hl7", id=message.id, channel=message.channel, received_at=message.received_at)
            return self.compiled[source].render(dict(context, msg=edited.view, raw=text))

        def lookup(table: str, key: str):
            found = self.templates.lookups.get(table)
            return found.get(key) if found is not None else None

        try:
            text, self.last_changes = self.script.apply(message.raw, render=render, lookup=lookup)
        except EditError as error:
            raise StageError(f"transform {self.name}: {error}") from None
        return text


class ChannelPipeline:
    """The compiled stages of one channel."""

    def __init__(self, config, registry, templates) -> None:
        problems: list[tuple[str, str]] = []
        self.config = config
        self.channel_stages = _build_stages(config.filters, config.transforms, "", registry, templates, problems,
                                            config.inbound)
        self.destination_stages = {
            destination.name: _build_stages(destination.filters, destination.transforms,
                                            f"destination[{destination.name}].", registry, templates, problems,
                                            config.inbound)
            for destination in config.destinations
        }
        # nothing to filter or transform anywhere: a message needs no context (no parse) to be planned
        self.pass_through = not any(stages.filters or stages.steps for stages in
                                    (self.channel_stages, *self.destination_stages.values()))
        self.pass_through_status = derive_status([QUEUED] * len(self.destination_stages))
        self.metadata_paths = dict(config.metadata)
        self.metadata_expressions = {}
        for key, source in config.metadata.items():
            if not _is_plain_path(source, config.inbound):
                try:
                    self.metadata_expressions[key] = templates.expression(source, f"metadata.{key}")
                except TemplateError as error:
                    problems.append((f"metadata.{key}", str(error)))
        if problems:
            raise PipelineError(problems)

    def context(self, message: Message, meta: dict | None = None) -> dict:
        return {
            "msg": message.view,
            "raw": message.raw,
            "meta": meta or {},
            "channel": self.config.name,
            "id": message.id,
            "received_at": message.received_at,
        }

    def metadata(self, message: Message) -> dict[str, str]:
        """Searchable columns, filled at receipt: HL7 paths, or Jinja expressions. Never raises."""
        values: dict[str, str] = {}
        if message.inbound == "x12":   # the envelope identifiers, always (DESIGN §3.11)
            try:
                values.update(x12_envelope_meta(message.view))
            except MessageParseError:
                pass
        if not self.metadata_paths:
            return values
        try:
            context = self.context(message)
        except MessageParseError:
            return {**values, **{key: "" for key in self.metadata_paths}}
        for key, path in self.metadata_paths.items():
            try:
                if key in self.metadata_expressions:
                    value = self.metadata_expressions[key].evaluate(context)
                elif message.inbound in ("hl7", "x12"):
                    value = message.view[path]
                else:
                    value = _lookup(context["msg"], path)
            except Exception:  # a bad path or expression must not stop ingest: the column stays empty
                value = ""
            values[key] = "" if value is None else str(value)
        return values

    def safe_run(self, message: Message, meta: dict | None = None) -> Outcome:
        """``run`` that never raises: a bug in a plugin becomes this message's ERROR, not a lost
        message (the channel stores whatever this returns)."""
        try:
            return self.run(message, meta)
        except Exception as error:
            return Outcome(ERROR, error=f"internal error while processing: {type(error).__name__}")

    def run(self, message: Message, meta: dict | None = None) -> Outcome:
        if self.pass_through and message.inbound == "hl7" and message.msh is not None:
            # what the general path below gives when no stage exists, without parsing the message
            # (an HL7 message with an MSH always parses; other types still parse to be checked)
            return Outcome(self.pass_through_status, [], None,
                           destinations=[DestinationPlan(name, body=message.raw) for name in self.destination_stages])
        try:
            context = self.context(message, meta)
            filters = self.channel_stages.check(message, context)
            if filters and not filters[-1].passed:
                return Outcome(FILTERED, filters)
            result = self.channel_stages.transform(message, context, message.inbound)
        except (StageError, MessageParseError) as error:
            return Outcome(ERROR, error=str(error))
        body = message.raw if result is None else result[0]
        transformed = None if result is None else result[0]
        outcome = Outcome(QUEUED, filters, transformed)
        for name, stages in self.destination_stages.items():
            outcome.destinations.append(self._plan(name, stages, message, dict(context, body=body), body))
        outcome.status = derive_status(plan.status for plan in outcome.destinations)
        return outcome

    def _plan(self, name, stages: Stages, message: Message, context: dict, body: str) -> DestinationPlan:
        plan = DestinationPlan(name)
        try:
            plan.filters = stages.check(message, context)
            if plan.filters and not plan.filters[-1].passed:
                plan.filtered = True
                return plan
            result = stages.transform(message, context, message.inbound)
            plan.body = body if result is None else result[0]
        except StageError as error:
            plan.error = f"destination {name}: {error}"
        return plan


HL7_PATH = re.compile(r"^[A-Z][A-Z0-9]{2}(\(\d+\))?(\.\d+(\(\d+\))?){0,3}$")
X12_PATH = re.compile(r"^[A-Z][A-Z0-9]{1,2}(\(\d+\))?(\.\d+(\(\d+\))?){0,2}$")
DOTTED_PATH = re.compile(r"^[\w-]+(\.[\w-]+)*$")


def _is_plain_path(source: str, inbound: str) -> bool:
    """Metadata values are HL7 paths (or dotted keys for JSON/CSV) unless they look like Jinja."""
    if inbound == "x12":
        return bool(X12_PATH.match(source.strip()))
    return bool((HL7_PATH if inbound == "hl7" else DOTTED_PATH).match(source.strip()))


def _lookup(data: Any, path: str) -> Any:
    """Dotted lookup into parsed JSON/CSV data for metadata (``patient.account``)."""
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part, "")
        elif isinstance(data, list) and part.isdigit():
            index = int(part)
            data = data[index] if index < len(data) else ""
        else:
            return ""
    return data


def _edit_step(spec, key: str, templates, inbound: str, earlier: list, problems: list) -> EditStep:
    """Compile an edit list; its problems (paths, verbs, tables, templates) go to ``problems``."""
    if inbound != "hl7" or any(outbound not in (None, "hl7") for _step, outbound, _name in earlier):
        problems.append((f"{key}.edit", "an edit step needs HL7 v2: this channel's messages are "
                         f"{inbound if inbound != 'hl7' else 'not HL7 at this step'}"))
    sources: dict = {}

    def check_template(source: str):
        sources[source] = templates.from_string(source, f"{key}.edit")

    script, found = compile_edits([dict(op) for op in spec.edit], tables=set(templates.lookups),
                                  key=f"{key}.edit", check_template=check_template)
    problems.extend(found)
    return EditStep(script, templates, f"{key} edit", sources)


def _build_stages(filters, transforms, prefix, registry, templates, problems, inbound: str = "hl7") -> Stages:
    built_filters = []
    for index, spec in enumerate(filters, 1):
        key = f"{prefix}filter[{index}]"
        try:
            label = getattr(spec, "label", None)    # [[filter]] name = "..." (DESIGN §3.2)
            if spec.when is not None:
                expression_filter = ExpressionFilter(templates, spec.when, f"{key} when")
                expression_filter.name = label or key
                built_filters.append(expression_filter)
            else:
                factory = registry.filters.get(spec.use)
                if factory is None:
                    problems.append((f"{key}.use", f"no filter plugin named {spec.use!r}; known: "
                                     f"{', '.join(sorted(registry.filters)) or 'none'}"))
                    continue
                instance = factory(dict(spec.options))
                instance.name = label or getattr(instance, "name", None) or spec.use
                built_filters.append(instance)
        except (TemplateError, ValueError) as error:
            problems.append((key, str(error)))
    steps = []
    for index, spec in enumerate(transforms, 1):
        key = f"{prefix}transform[{index}]"
        try:
            if spec.use is not None:
                factory = registry.transforms.get(spec.use)
                if factory is None:
                    problems.append((f"{key}.use", f"no transform plugin named {spec.use!r}; known: "
                                     f"{', '.join(sorted(registry.transforms)) or 'none'}"))
                    continue
                steps.append((factory(dict(spec.options)), spec.outbound, spec.use))
            elif spec.template is not None:
                steps.append((TemplateStep(templates.from_file(spec.template), spec.template),
                              spec.outbound or "text", spec.template))
            elif spec.edit is not None:
                steps.append((_edit_step(spec, key, templates, inbound, steps, problems), None, f"{key} edit"))
            else:
                name = f"{key} inline"
                steps.append((TemplateStep(templates.from_string(spec.inline, name), name), spec.outbound or "text", name))
        except (TemplateError, ValueError) as error:
            problems.append((key, str(error)))
    return Stages(built_filters, steps)
