"""The sandboxed Jinja environment every template and ``when`` expression runs in (DESIGN §3.3).

Why it looks the way it does:

* **One environment, compiled once.**  ``Templates`` builds a single ``SandboxedEnvironment``
  (``autoescape=False``: we write HL7, JSON and CSV, not HTML; ``StrictUndefined``: a misspelt
  *name* is an error, while a missing HL7 *field* is ``''`` because ``HL7View`` returns it).
  ``from_file``/``from_string``/``expression`` cache what they compile, so the hot path only
  renders.  A channel reload builds a new ``Templates``; that is how edited files are picked up.
* **Message content is never compiled** (RELIABILITY 20).  Only template files and channel config
  are handed to the compiler; message values arrive in the render context as data, so
  ``{{ 7*7 }}`` inside a field is printed as those nine characters.
* **Limits** (RELIABILITY 22).  A render runs through ``template.generate`` and stops when the
  output passes ``max_output`` characters ("output exceeds N bytes": characters are counted, which
  is cheaper than encoding every chunk) or the per-render deadline passes.  The deadline lives in
  a ``ContextVar`` (so nested or interleaved renders keep their own) and is checked in the output
  loop, in the sandbox's ``call``/``getattr``/``getitem``/``call_binop``, and on every iteration of
  every ``{% for %}`` loop: the code generator wraps each loop's iterable in a guard, so nested
  loops that print nothing and call nothing still stop.  ``*`` and ``**`` are intercepted so that
  ``'x' * 10**9`` is refused before it allocates.  Memory: every render has a budget of what it
  builds (``[engine] template_memory``), and the filters and methods whose one call could build
  much more than its inputs, or run long, are measured or bounded before they run:
  ``engine/core/template_limits.py`` says which and why.  ``~`` goes through that module's
  ``concat`` (``visit_Concat``), ``{% set %}`` blocks and macros through its ``concat_chunks``
  (``environment.concat``), and printing a list checks its printed size (``finalize``).
  What the checks cost per render: docs/reliability-and-security.md (catalogue 15.2).
* **Reasons never carry message content.**  A ``TemplateError`` reason is built by this rule:
  Jinja's own exceptions (undefined names and attributes, syntax errors, sandbox refusals) keep
  their message, because Jinja composes it from the template source (names, attribute names,
  types), not from values; every other exception (a ``TypeError`` from a filter, say, whose
  message may quote a field value) is reported by its type name only -- except a ``TypeError``
  Python raised because a call did not fit the function's signature (a helper's wrong keyword,
  a missing argument), whose text names only the function, the parameter and counts.  The one Jinja message that
  can quote data, a missing *key* (``table[msg['PID.3.1']]``), is replaced by one that does not
  name the key.  A helper that wants its own words shown raises ``jinja2.TemplateRuntimeError``
  with a PHI-free message.
"""

from __future__ import annotations

import json
import re
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.utils import object_type_repr, pass_context

from engine.core import template_limits as limits
from engine.core.template_limits import DEFAULT_MEMORY, RenderLimits
from engine.core.template_limits import LimitExceeded as _LimitExceeded
from engine.core.template_limits import check_deadline as _check_deadline

_LOOP_GUARD = "_switchboard_loop_guard"
_MAX_POWER_BITS = 100_000  # ~30,000 decimal digits: far beyond any real amount


class TemplateError(Exception):
    """A template or expression failed to compile or render; ``str()`` is one PHI-free sentence.

    ``name`` is the template's file name or a label such as ``'filter #1 when'``, ``line`` the
    1-based line in it when known, ``reason`` what went wrong (see the module docstring for the
    rule that keeps message content out of it).
    """

    def __init__(self, name: str, line: int | None, reason: str):
        self.name = name
        self.line = line
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.name}: {self.reason}"
        return f"{self.name} line {self.line}: {self.reason}"


@pass_context  # pass_context keeps the optimizer from calling it at compile time
def _loop_guard(_context, iterable):
    """Wrapped around every ``{% for %}`` iterable: one deadline check per iteration."""
    for item in iterable:
        _check_deadline()
        yield item


class _GuardedCodeGenerator(CodeGenerator):
    """Wraps each for-loop's iterable in ``_loop_guard`` before the code is generated.

    Done on the whole tree in ``visit_Template`` because filters are resolved (``pull_dependencies``)
    before the loop bodies are visited.
    """

    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        """``~`` measured before it joins (autoescape is off: Jinja would call ``str_join``)."""
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_Template(self, node: nodes.Template, frame=None) -> None:
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(
                loop.iter, _LOOP_GUARD, [], [], None, None, lineno=loop.iter.lineno
            )
        super().visit_Template(node, frame)


def _plain_tojson(value: Any, indent: int | None = None) -> str:
    """``tojson`` without HTML escaping: Jinja's returns Markup with ``<>&'`` as ``\\u00XX``,
    which is valid JSON but not what an agency expects to read, and Markup escapes whatever is
    ``+``-ed to it.  Keys keep their order (Jinja's default sorts them)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


class _Environment(SandboxedEnvironment):
    """The sandbox plus deadline checks and size checks on ``*`` and ``**``."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    checked_concat = staticmethod(limits.concat)
    concat = staticmethod(limits.concat_chunks)       # {% set %} blocks, macros, {% filter %}

    def __init__(self, *, max_output: int, **options: Any):
        super().__init__(finalize=self._finalize, **options)
        self.max_output = max_output
        # lipsum(n) runs unchecked for as long as n says; a message template has no use for it
        self.globals.pop("lipsum", None)
        self.filters["format"] = self._printf_checked(self.filters["format"])

    def guard_filters(self) -> None:
        """Wrap every filter (Jinja's, ours, the plugins'): call once they are all registered."""
        guarded = limits.guard_filters({k: v for k, v in self.filters.items() if k != _LOOP_GUARD}, self.max_output,
                                       own=(_plain_tojson,))
        self.filters.update(guarded)

    def _finalize(self, value: Any) -> Any:
        """``{{ value }}`` of a list or dict prints it whole: its size is checked before it is
        printed (a list of one 1 MB string a thousand times holds 8 KB and prints 1 GB)."""
        if not isinstance(value, str) and isinstance(value, (list, tuple, dict, set, frozenset)):
            if limits.text_size(value, self.max_output + 1) > self.max_output:
                raise _LimitExceeded(f"output exceeds {self.max_output} bytes")
        return value

    def _printf_checked(self, function):
        """The ``format`` filter is ``pattern % args``, called directly: not seen by call_binop."""
        def checked(value, *args, **kwargs):
            if isinstance(value, str):
                self._check_printf_widths(value)
            return function(value, *args, **kwargs)

        return checked

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
        _check_deadline()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, list, dict, set)) and hasattr(__obj, "__name__"):
            # 'x'.ljust(900000000) allocates its width first; the output limit would only see
            # the result, after the memory is gone
            limits.check_method(__obj, args, kwargs, __self.max_output)
            if isinstance(owner, str) and __obj.__name__ == "join" and len(args) == 1 and not kwargs:
                args = (limits.join_method(owner, args[0]),)
        elif args or kwargs:     # a helper function: what it writes out is about what it is given
            limits.charge_inputs(args, kwargs, getattr(__obj, "__name__", "a call"))
        result = super().call(__context, __obj, *args, **kwargs)
        return limits.charge_method_result(__obj, result)

    def wrap_str_format(self, value: Any):
        """Jinja sandboxes ``str.format``/``format_map`` at attribute access; we add the width
        check there, for the same reason as the padding methods: ``'{:900000000}'.format(x)``."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        pattern = value.__self__
        self._check_format_widths(pattern)
        fields = sum(1 for _text, field, _spec, _conv in _safe_fields(pattern) if field is not None)

        def measured(*args, **kwargs):
            limits.spend(limits.formatted_size(pattern, fields, (*args, *kwargs.values())), "str.format")
            return wrapped(*args, **kwargs)

        return measured

    def _check_format_widths(self, pattern: str) -> None:
        try:
            fields = list(_FORMATTER.parse(pattern))
        except ValueError:
            return  # a malformed pattern: the call itself raises and reports it
        for _text, field, spec, _conversion in fields:
            if field is None or not spec:
                continue
            if "{" in spec:
                raise _LimitExceeded("a format width taken from a value is not allowed")
            if any(int(digits) > self.max_output for digits in re.findall(r"\d+", spec)):
                raise _LimitExceeded(f"output exceeds {self.max_output} bytes")

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_deadline()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_deadline()
        value = super().getitem(obj, argument)
        if (
            isinstance(value, jinja2.Undefined)
            and value._undefined_hint is None
            and value._undefined_obj is obj
            and value._undefined_name is argument
        ):
            # A subscript key may be message data: say what is missing without quoting it.
            return self.undefined(
                hint=f"{object_type_repr(obj)!r} has no such key (the key is not shown: it may "
                "be message data)",
                obj=obj,
                name=argument,
            )
        return value

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _check_deadline()
        if operator == "*":
            self._check_repeat(left, right)
            self._check_repeat(right, left)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            self._check_printf_widths(left)
            values = right if isinstance(right, tuple) else (right,)
            limits.spend(limits.formatted_size(left, left.count("%"), values), "'%'")
        elif operator == "+" and isinstance(left, (str, list, tuple)) and type(left) is type(right):
            unit = 1 if isinstance(left, str) else limits.ITEM_BYTES
            limits.spend((len(left) + len(right)) * unit, "'+'")
        return super().call_binop(context, operator, left, right)

    def _check_printf_widths(self, pattern: str) -> None:
        """``'%200000000d' % 1`` would allocate its width before any output check runs."""
        for width, precision in _PRINTF_SIZES.findall(pattern):
            if "*" in (width, precision) or max(int(width or 0), int(precision or 0)) > self.max_output:
                raise _LimitExceeded(f"output exceeds {self.max_output} bytes")

    def _check_repeat(self, sequence: Any, times: Any) -> None:
        if isinstance(sequence, (str, bytes, list, tuple)) and isinstance(times, int):
            if len(sequence) * times > self.max_output:
                raise _LimitExceeded(f"output exceeds {self.max_output} bytes")
            unit = 1 if isinstance(sequence, (str, bytes)) else limits.ITEM_BYTES
            limits.spend(len(sequence) * max(times, 0) * unit, "'*'")


_FORMATTER = string.Formatter()


def _safe_fields(pattern: str) -> list:
    try:
        return list(_FORMATTER.parse(pattern))
    except ValueError:
        return []   # a malformed pattern: the call itself raises and reports it
_PRINTF_SIZES = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d*)(?:\.(\*|\d*))?")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if base.bit_length() * exponent > _MAX_POWER_BITS:
            raise _LimitExceeded("number too large")


def _reason(error: BaseException) -> str:
    """The PHI-free reason for an exception (the rule is in the module docstring)."""
    if isinstance(error, _LimitExceeded):
        return error.reason
    if isinstance(error, SecurityError):
        return f"unsafe operation refused by the sandbox: {error.message}"
    if isinstance(error, jinja2.TemplateNotFound):
        return "template file not found"
    if isinstance(error, jinja2.TemplateError):
        return error.message or type(error).__name__
    if isinstance(error, TypeError) and _SIGNATURE_ERROR.match(str(error)):
        return f"TypeError: {error}"   # composed by Python from the signature: names and counts only
    return type(error).__name__


# Python's own words for a call that does not fit a signature (``hl7_date(v, fmt='x')``): they
# name the function, the parameter and counts, never a value, so the reason keeps them.
_SIGNATURE_ERROR = re.compile(
    r"[\w.<>]+\(\) (?:got an unexpected keyword argument '\w+'"
    r"|got multiple values for argument '\w+'"
    r"|missing \d+ required (?:positional|keyword-only) arguments?: (?:'\w+'(?:, | and )?)+"
    r"|takes (?:from \d+ to )?\d+ positional arguments? but \d+ (?:positional arguments? )?(?:was|were) given"
    r"|takes no (?:keyword )?arguments)\Z")


def _template_line(error: BaseException) -> int | None:
    """The innermost template line in a traceback Jinja has rewritten to point at the source."""
    line = None
    tb = error.__traceback__
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _generator_line(generator) -> int | None:
    """The template line a suspended ``generate()`` stopped at (for the size limit)."""
    line = None
    frame_holder = generator
    while frame_holder is not None:
        frame = getattr(frame_holder, "gi_frame", None)
        if frame is None:
            break
        template = frame.f_globals.get("__jinja_template__")
        if template is not None:
            line = template.get_corresponding_lineno(frame.f_lineno)
        frame_holder = getattr(frame_holder, "gi_yieldfrom", None)
    return line


@dataclass(frozen=True)
class _Limits:
    max_output: int
    time_limit: float
    memory: int = DEFAULT_MEMORY


class CompiledExpression:
    """A ``when`` expression or metadata expression, compiled once; ``evaluate`` per message."""

    def __init__(self, expression: jinja2.environment.TemplateExpression, name: str,
                 limits: _Limits):
        self._expression = expression
        self.name = name
        self._limits = limits

    def evaluate(self, context: dict) -> Any:
        try:
            with RenderLimits(self._limits.time_limit, self._limits.memory):
                result = self._expression(**context)
                if isinstance(result, jinja2.Undefined):
                    str(result)  # StrictUndefined: raises UndefinedError naming what is missing
                return result
        except Exception as error:
            raise TemplateError(self.name, None, _reason(error)) from None


class CompiledTemplate:
    """A template compiled once; ``render`` per message, within the size and time limits.

    ``constant``: the output of a template that is plain text (no expression, no tag), rendered
    once when compiled and returned as is: an HTTP destination's ``url`` or a file name without
    ``{{ }}`` is the same for every message, so it costs nothing per message."""

    constant: str | None = None

    def __init__(self, template: jinja2.Template, name: str, limits: _Limits, *, plain_text: bool = False):
        self._template = template
        self.name = name
        self._limits = limits
        if plain_text:
            self.constant = self.render({})

    def render(self, context: dict) -> str:
        if self.constant is not None:
            return self.constant
        max_output = self._limits.max_output
        generator = self._template.generate(context)
        try:
            with RenderLimits(self._limits.time_limit, self._limits.memory):
                chunks: list[str] = []
                size = 0
                for chunk in generator:
                    size += len(chunk)
                    if size > max_output:
                        raise TemplateError(
                            self.name, _generator_line(generator),
                            f"output exceeds {max_output} bytes",
                        )
                    chunks.append(chunk)
                    _check_deadline()
                return "".join(chunks)
        except TemplateError:
            raise
        except _LimitExceeded as error:
            line = _template_line(error) or _generator_line(generator)
            raise TemplateError(self.name, line, error.reason) from None
        except Exception as error:
            raise TemplateError(self.name, _template_line(error), _reason(error)) from None
        finally:
            generator.close()


def _plain_text(tree: nodes.Template) -> bool:
    """True when the parsed template is text only: nothing in it can differ from one render to the next."""
    return all(isinstance(node, nodes.Output) and all(isinstance(part, nodes.TemplateData) for part in node.nodes)
               for node in tree.body)


class Templates:
    """The one sandboxed environment of an engine: compiles templates and expressions, once each.

    ``filters`` and ``globals`` are what plugins registered through ``register_template_helpers``
    (the built-ins in ``engine.template_helpers`` among them); they are added on top of Jinja's
    own, so a plugin may replace a Jinja filter.
    """

    def __init__(
        self,
        transforms_dir: Path | None,
        *,
        filters: dict | None = None,
        globals: dict | None = None,  # noqa: A002 - the hook's own word
        max_output: int = 1_048_576,
        time_limit: float = 2.0,
        memory: int = DEFAULT_MEMORY,
    ):
        self.transforms_dir = Path(transforms_dir) if transforms_dir is not None else None
        self.lookups: dict = {}            # code tables by name (engine/core/lookups.py), for edit steps
        self.lookup_problems: list = []    # (file, line, reason) of tables that did not load
        self._limits = _Limits(max_output=max_output, time_limit=time_limit, memory=memory)
        loader = (
            jinja2.FileSystemLoader(self.transforms_dir) if self.transforms_dir is not None else None
        )
        self.environment = _Environment(
            max_output=max_output,
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            loader=loader,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self.environment.policies["json.dumps_kwargs"] = {"ensure_ascii": False}
        self.environment.filters["tojson"] = _plain_tojson
        self.environment.filters.update(filters or {})
        self.environment.guard_filters()
        self.environment.filters[_LOOP_GUARD] = _loop_guard
        self.environment.globals.update(globals or {})
        self._files: dict[str, CompiledTemplate] = {}
        self._inline: dict[tuple[str, str], CompiledTemplate] = {}
        self._expressions: dict[tuple[str, str], CompiledExpression] = {}

    def expression(self, source: str, name: str) -> CompiledExpression:
        """Compile a ``when``-style expression; a syntax error raises ``TemplateError`` now."""
        key = (source, name)
        compiled = self._expressions.get(key)
        if compiled is None:
            try:
                expression = self.environment.compile_expression(source, undefined_to_none=False)
            except jinja2.TemplateSyntaxError as error:
                line = error.lineno if "\n" in source.strip() else None
                raise TemplateError(name, line, _reason(error)) from None
            compiled = self._expressions[key] = CompiledExpression(expression, name, self._limits)
        return compiled

    def from_file(self, filename: str) -> CompiledTemplate:
        """Compile a file of ``transforms_dir`` (missing file or syntax error: ``TemplateError``)."""
        compiled = self._files.get(filename)
        if compiled is None:
            if self.environment.loader is None:
                raise TemplateError(filename, None, "no transforms_dir is configured")
            try:
                template = self.environment.get_template(filename)
            except jinja2.TemplateSyntaxError as error:
                raise TemplateError(filename, error.lineno, _reason(error)) from None
            except jinja2.TemplateNotFound:
                raise TemplateError(
                    filename, None, f"template file not found in {self.transforms_dir}"
                ) from None
            template.globals = dict(template.globals)  # see from_string
            compiled = self._files[filename] = CompiledTemplate(template, filename, self._limits)
        return compiled

    def from_string(self, source: str, name: str) -> CompiledTemplate:
        """Compile an inline template (channel config, never message content) under ``name``."""
        key = (source, name)
        compiled = self._inline.get(key)
        if compiled is None:
            environment = self.environment
            try:
                tree = environment.parse(source, name=name, filename=name)
                code = environment.compile(tree, name=name, filename=name)
            except jinja2.TemplateSyntaxError as error:
                raise TemplateError(name, error.lineno, _reason(error)) from None
            # The globals as a plain dict, not Jinja's ChainMap: every render copies them into its
            # context, and copying a ChainMap walks it key by key in Python.
            template = environment.template_class.from_code(environment, code, dict(environment.globals))
            compiled = self._inline[key] = CompiledTemplate(template, name, self._limits,
                                                            plain_text=_plain_text(tree))
        return compiled
