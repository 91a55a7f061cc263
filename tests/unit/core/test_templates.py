"""The sandboxed Jinja environment: compiling, rendering, errors, the sandbox and the limits."""

from __future__ import annotations

import json
import time

import jinja2
import pytest

from engine.hl7.view import HL7View
from engine.core.templates import TemplateError, Templates

ADT = (
    "MSH|^~\\&|EPIC|MAIN|AGENCY|AG|20240115083000||ADT^A08|MSG0001|P|2.5\r"
    "PID|1||MRN123^^^MAIN^MR||DOE^JANE^Q||19800101|F|||1 MAIN ST^^SPRINGFIELD^IL^62701||||||ACCT9\r"
)


@pytest.fixture
def transforms(tmp_path):
    return tmp_path


def write(directory, name, text):
    (directory / name).write_text(text, encoding="utf-8")
    return name


def error_of(callable_, *args) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        callable_(*args)
    return caught.value


# -- expressions ------------------------------------------------------------------------------


def test_expression_evaluates_against_the_message():
    templates = Templates(None)
    when = templates.expression("msg['MSH.9.1'] in ('ADT', 'DFT') and msg['PID.5.1'] == 'DOE'",
                                "filter #1 when")
    assert when.evaluate({"msg": HL7View(ADT)}) is True
    assert when.evaluate({"msg": HL7View(ADT.replace("ADT^A08", "ORU^R01"))}) is False


def test_expression_syntax_error_is_raised_at_compile_time():
    error = error_of(Templates(None).expression, "msg['MSH.9.1'] in (", "filter #1 when")
    assert error.name == "filter #1 when"
    assert error.line is None
    assert str(error).startswith("filter #1 when: ")
    assert error.reason


def test_expression_undefined_name_raises_at_evaluate():
    when = Templates(None).expression("mgs['MSH.9.1'] == 'ADT'", "filter #2 when")
    error = error_of(when.evaluate, {"msg": HL7View(ADT)})
    assert str(error) == "filter #2 when: 'mgs' is undefined"


def test_expression_whose_value_is_undefined_raises_instead_of_being_falsy():
    when = Templates(None).expression("msg.acount", "filter #1 when")
    error = error_of(when.evaluate, {"msg": {"account": "A1"}})
    assert "acount" in error.reason


def test_missing_hl7_field_is_empty_not_an_error():
    templates = Templates(None)
    assert templates.expression("msg['ZZZ.9.9']", "e").evaluate({"msg": HL7View(ADT)}) == ""
    assert templates.from_string("[{{ msg['PID.99.1'] }}]", "t").render({"msg": HL7View(ADT)}) == "[]"


# -- templates --------------------------------------------------------------------------------


def test_file_template_renders_and_keeps_its_trailing_newline(transforms):
    name = write(transforms, "placement.json.j2", '{"mrn": {{ msg["PID.3.1"] | tojson }}}\n')
    out = Templates(transforms).from_file(name).render({"msg": HL7View(ADT)})
    assert out == '{"mrn": "MRN123"}\n'


def test_inline_template_renders():
    compiled = Templates(None).from_string("{{ msg['PID.5.2'] }} {{ msg['PID.5.1'] }}", "inline #1")
    assert compiled.render({"msg": HL7View(ADT)}) == "JANE DOE"


def test_runtime_error_names_the_file_and_line(transforms):
    name = write(transforms, "placement.json.j2", "{\n  \"a\": 1,\n  \"b\": {{ foo }}\n}\n")
    error = error_of(Templates(transforms).from_file(name).render, {"msg": HL7View(ADT)})
    assert (error.name, error.line) == ("placement.json.j2", 3)
    assert str(error) == "placement.json.j2 line 3: 'foo' is undefined"


def test_runtime_error_in_inline_template_has_its_line():
    compiled = Templates(None).from_string("a\nb\n{{ 1 / 0 }}\n", "destination[x] inline")
    error = error_of(compiled.render, {})
    assert (error.name, error.line, error.reason) == ("destination[x] inline", 3, "ZeroDivisionError")


def test_runtime_error_in_included_template_names_the_innermost_line(transforms):
    write(transforms, "part.j2", "ok\n{{ missing }}")
    name = write(transforms, "main.j2", "{% include 'part.j2' %}")
    error = error_of(Templates(transforms).from_file(name).render, {})
    assert error.line == 2 and "'missing' is undefined" in error.reason


def test_syntax_error_in_file_has_its_line(transforms):
    name = write(transforms, "bad.j2", "one\ntwo\n{% if x %}\nthree\n")
    error = error_of(Templates(transforms).from_file, name)
    assert error.name == "bad.j2"
    assert error.line is not None and error.line >= 3


def test_syntax_error_in_inline_template_has_its_line():
    error = error_of(Templates(None).from_string, "one\n{{ x + }}", "transform inline")
    assert (error.name, error.line) == ("transform inline", 2)


def test_missing_file_is_named(transforms):
    error = error_of(Templates(transforms).from_file, "nope.j2")
    assert error.name == "nope.j2" and error.line is None
    assert "not found" in error.reason


def test_path_outside_transforms_dir_is_not_found(transforms):
    (transforms.parent / "secret.txt").write_text("secret", encoding="utf-8")
    error = error_of(Templates(transforms).from_file, "../secret.txt")
    assert "not found" in error.reason


def test_from_file_without_transforms_dir_is_an_error():
    error = error_of(Templates(None).from_file, "placement.j2")
    assert error.name == "placement.j2"


def test_undefined_names_raise_strictly():
    compiled = Templates(None).from_string("{% if flag %}yes{% endif %}", "t")
    error = error_of(compiled.render, {})
    assert error.reason == "'flag' is undefined"


def test_error_string_without_a_line():
    assert str(TemplateError("filter #1 when", None, "'x' is undefined")) == (
        "filter #1 when: 'x' is undefined")


def test_plugin_filters_and_globals_are_available():
    templates = Templates(None, filters={"shout": str.upper}, globals={"site": lambda: "MAIN"})
    assert templates.from_string("{{ 'a' | shout }}-{{ site() }}", "t").render({}) == "A-MAIN"


def test_tojson_is_plain_json_in_key_order():
    compiled = Templates(None).from_string("{{ x | tojson }}|{{ (x | tojson) ~ '<&>' }}", "t")
    value = {"z": "O'Brien & <Sons>", "a": "é"}
    first, second = compiled.render({"x": value}).split("|")
    assert json.loads(first) == value
    assert first == json.dumps(value, ensure_ascii=False)
    assert second == first + "<&>"


# -- messages are data, never code (RELIABILITY 20) -------------------------------------------


@pytest.mark.parametrize("payload", [
    "{{ 7*7 }}",
    "{% for i in range(3) %}x{% endfor %}",
    "{{ ''.__class__.__mro__ }}",
    "{# comment #}",
])
def test_message_content_is_never_compiled(payload):
    text = ADT.replace("DOE^JANE^Q", payload.replace("|", "\\F\\"))
    templates = Templates(None)
    rendered = templates.from_string("{{ msg['PID.5'] }}|{{ raw_value }}", "t").render(
        {"msg": HL7View(text), "raw_value": payload})
    assert rendered == f"{payload}|{payload}"
    assert templates.expression("msg['PID.5']", "e").evaluate({"msg": HL7View(text)}) == payload


# -- the sandbox (RELIABILITY 21) -------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ msg.__class__ }}",
    "{{ msg._index }}",
    "{{ joiner.__init__.__globals__['os'] }}",
    "{{ (lambda_ | attr('__globals__')) }}",
    "{{ 'a'.format.__globals__ }}",
    "{{ '{0.__class__}'.format(msg) }}",
])
def test_sandbox_escapes_are_refused(source):
    compiled = Templates(None).from_string(source, "evil.j2")
    error = error_of(compiled.render, {"msg": HL7View(ADT), "lambda_": lambda: None})
    assert error.reason.startswith("unsafe operation refused by the sandbox: ")
    assert error.name == "evil.j2" and error.line == 1


def test_non_jinja_exception_reason_is_the_type_name_only():
    def leaky(value):
        raise ValueError(f"cannot handle {value}")

    compiled = Templates(None, filters={"leaky": leaky}).from_string("{{ msg['PID.5.1'] | leaky }}", "t")
    error = error_of(compiled.render, {"msg": HL7View(ADT)})
    assert error.reason == "ValueError"
    assert "DOE" not in str(error)


def test_missing_key_error_does_not_quote_the_key():
    compiled = Templates(None).from_string("{{ accounts[msg['PID.3.1']] }}", "t")
    error = error_of(compiled.render, {"msg": HL7View(ADT), "accounts": {"OTHER": 1}})
    assert "MRN123" not in str(error)
    assert "no such key" in error.reason


def test_helper_may_explain_itself_with_a_jinja_error():
    def strict(value):
        raise jinja2.TemplateRuntimeError("strict: value out of range")

    compiled = Templates(None, filters={"strict": strict}).from_string("{{ 1 | strict }}", "t")
    assert error_of(compiled.render, {}).reason == "strict: value out of range"


# -- limits (RELIABILITY 22) ------------------------------------------------------------------


def test_output_limit_stops_the_render():
    templates = Templates(None, max_output=1000)
    exact = templates.from_string("{% for i in range(100) %}0123456789{% endfor %}", "ok")
    assert len(exact.render({})) == 1000
    over = templates.from_string("start\n{% for i in range(100000) %}0123456789{% endfor %}", "big")
    error = error_of(over.render, {})
    assert error.reason == "output exceeds 1000 bytes"
    assert error.line == 2


def test_repetition_is_refused_before_it_allocates():
    compiled = Templates(None, max_output=1000).from_string("{{ 'x' * 1000000000 }}", "t")
    assert error_of(compiled.render, {}).reason == "output exceeds 1000 bytes"


def test_huge_power_is_refused():
    compiled = Templates(None).from_string("{{ 7 ** 100000000 }}", "t")
    assert error_of(compiled.render, {}).reason == "number too large"


def _timed_out(source: str, context: dict, limit: float = 0.2) -> float:
    compiled = Templates(None, time_limit=limit, max_output=10**12).from_string(source, "slow.j2")
    started = time.monotonic()
    error = error_of(compiled.render, context)
    elapsed = time.monotonic() - started
    assert error.reason == f"render took longer than {limit:g}s"
    return elapsed


def test_time_limit_stops_a_loop_that_produces_output():
    source = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    assert 0.2 <= _timed_out(source, {}) < 3.0


def test_time_limit_stops_nested_loops_that_produce_nothing():
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    assert 0.2 <= _timed_out(source, {}) < 3.0


def test_time_limit_stops_loops_that_neither_call_nor_print():
    xs = list(range(2000))
    source = "{% for i in xs %}{% for j in xs %}{% for k in xs %}{% endfor %}{% endfor %}{% endfor %}"
    assert 0.2 <= _timed_out(source, {"xs": xs}) < 3.0


def test_a_timed_out_render_leaves_no_deadline_behind():
    templates = Templates(None, time_limit=0.2, max_output=10**12)
    slow = templates.from_string("{% for i in range(100000) %}{% for j in range(100000) %}"
                                 "{% endfor %}{% endfor %}", "slow")
    error_of(slow.render, {})
    fast = templates.from_string("{{ msg['PID.5.1'] }}", "fast")
    assert fast.render({"msg": HL7View(ADT)}) == "DOE"


def test_nested_render_keeps_the_outer_render_going():
    templates = Templates(None)
    inner = templates.from_string("[{{ v }}]", "inner")
    templates.environment.globals["inner"] = lambda v: inner.render({"v": v})
    outer = templates.from_string("{% for v in ['a', 'b'] %}{{ inner(v) }}{% endfor %}!", "outer")
    assert outer.render({}) == "[a][b]!"


def test_loop_guard_keeps_loop_semantics():
    source = ("{% for x in xs %}{{ loop.index }}/{{ loop.length }}{{ '.' if loop.last }}{% endfor %}"
              "|{% for x in [] %}x{% else %}empty{% endfor %}"
              "|{% for x in xs if x > 1 %}{{ x }}{% endfor %}"
              "|{% for k, v in d.items() %}{{ k }}={{ v }}{% endfor %}"
              "|{% for n in tree recursive %}{{ n.name }}{% if n.kids %}({{ loop(n.kids) }}){% endif %}"
              "{% endfor %}")
    tree = [{"name": "a", "kids": [{"name": "b", "kids": []}]}]
    out = Templates(None).from_string(source, "t").render({"xs": [1, 2, 3], "d": {"k": "v"}, "tree": tree})
    assert out == "1/32/33/3.|empty|23|k=v|a(b)"


# -- compiled once ----------------------------------------------------------------------------


def test_file_is_compiled_once_and_not_read_again(transforms):
    name = write(transforms, "once.j2", "v1")
    templates = Templates(transforms)
    first = templates.from_file(name)
    (transforms / name).unlink()
    assert templates.from_file(name) is first
    assert first.render({}) == "v1"


def test_inline_templates_and_expressions_are_compiled_once():
    templates = Templates(None)
    assert templates.from_string("{{ a }}", "t") is templates.from_string("{{ a }}", "t")
    assert templates.expression("a == 1", "e") is templates.expression("a == 1", "e")
    assert templates.from_string("{{ a }}", "t") is not templates.from_string("{{ b }}", "t")


def test_one_environment_is_shared_by_every_template(transforms):
    name = write(transforms, "f.j2", "{{ greet() }}")
    templates = Templates(transforms, globals={"greet": lambda: "hi"})
    templates.environment.globals["greet"] = lambda: "hello"  # visible to what compiles later
    assert templates.from_file(name).render({}) == "hello"
    assert templates.from_string("{{ greet() }}", "t").render({}) == "hello"


@pytest.mark.parametrize("source", ["{{ '%200000000d' % 1 }}", "{{ '%.*f' % (900000000, 1.0) }}",
                                    "{{ 'x' | center(900000000) }}", "{{ 'x' | indent(900000000, true) }}"])
def test_widths_that_would_allocate_past_the_output_limit_are_refused(source):
    with pytest.raises(TemplateError, match="output exceeds"):
        Templates(None).from_string(source, "wide").render({})


# Widths of 10**15 cannot be allocated: without the check these raise MemoryError/OverflowError,
# not the limit's error, so the test fails if a check goes missing.
@pytest.mark.parametrize("source", [
    "{{ '%1000000000000000s' | format(v) }}", "{{ '%(a)1000000000000000s' | format(a=v) }}",
    "{{ '{:1000000000000000}'.format(v) }}", "{{ '{a:>1000000000000000}'.format_map({'a': v}) }}",
    "{{ v.ljust(n) }}", "{{ v.rjust(n) }}", "{{ v.center(n) }}", "{{ v.zfill(n) }}",
])
def test_format_and_padding_widths_are_checked_before_they_allocate(source):
    with pytest.raises(TemplateError, match="output exceeds"):
        Templates(None).from_string(source, "wide").render({"v": "ab", "n": 10**15})


def test_a_format_width_taken_from_a_value_is_refused_and_ordinary_formats_work():
    templates = Templates(None)
    with pytest.raises(TemplateError, match="width taken from a value"):
        templates.from_string("{{ '{:{w}}'.format(v, w=n) }}", "nested").render({"v": "ab", "n": 3})
    rendered = templates.from_string("{{ '{:>6}|{:08.2f}|{:,}'.format(v, x, n) }} {{ '%-4s|' | format(v) }}"
                                     " {{ v.rjust(4, '0') }}", "ok").render({"v": "ab", "x": 3.5, "n": 1234})
    assert rendered == "    ab|00003.50|1,234 ab  | 00ab"


# -- memory budget and bounded filter inputs (issue 15, point 2) ----------------------------------
BUDGET_ATTACKS = {
    "join with a 1 MB separator": ("{{ range(1500)|join('x'*1000000) }}", "the join filter would take"),
    "append in a loop": ("{% set l = [] %}{% for i in range(2000) %}{% set _ = l.append('x' * 1000000) %}"
                         "{% endfor %}{{ l|length }}", "memory budget"),
    "references joined": ("{% set l = [] %}{% set big = 'x' * 1000000 %}{% for i in range(2000) %}"
                          "{% set _ = l.append(big) %}{% endfor %}{{ l|join }}", "the join filter would take"),
    "references printed": ("{% set big = 'x' * 1000000 %}{{ [big] * 1000 }}", "output exceeds"),
    "namespace doubled with ~": ("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}", "'~' would take"),
    "wordwrap(1) of 1 MB": ("{{ ('a'*1000000)|wordwrap(1) }}", "more than 20,000 lines"),
    "set block": ("{% set x %}{% for i in range(2000) %}{{ 'x'*1000000 }}{% endfor %}{% endset %}{{ x|length }}",
                  "memory budget"),
    "printf": ("{{ ('%s'*1000) % (('x'*1000000,)*1000) }}", "'%' would take"),
    "str.format": ("{{ ('{0}'*1000).format('x'*1000000) }}", "str.format would take"),
    "str.join": ("{{ ('x'*1000000).join(['a']*1500) }}", "str.join would take"),
    "replace": ("{{ ('x'*1000000)|replace('x', 'y'*1000) }}", "the replace filter would take"),
    "+ in a loop": ("{% set ns = namespace(s='x'*1000000) %}{% for i in range(100) %}"
                    "{% set ns.s = ns.s + ns.s[:1000000] %}{% endfor %}", "'+' would take"),
    "tojson of references": ("{% set big = 'x' * 1000000 %}{{ ([big]*1000)|tojson|length }}", "tojson filter"),
    "expandtabs": ("{{ ('\\t'*1000000).expandtabs(1000)|length }}", "str.expandtabs would take"),
    "sum of lists": ("{{ [[1]*1000]*1000|sum(start=[]) }}", "adds numbers only"),
    "batch fill": ("{{ [1]|batch(1000000000, 'x')|list }}", "linecount of at most"),
}


def test_helpers_are_charged_for_what_they_are_given():
    from engine.core.template_helpers import FILTERS, GLOBALS

    templates = Templates(None, filters=dict(FILTERS), globals=dict(GLOBALS))
    for source, what in (("{% set big = 'x'*1000000 %}{{ hl7_segment('ZZZ', *([big]*1000)) }}", "hl7_segment"),
                         ("{% set big = 'x'*1000000 %}{{ ([big]*1000)|csv_row }}", "the csv_row filter")):
        started = time.monotonic()
        with pytest.raises(TemplateError, match=f"{what} would take the render past its memory budget"):
            templates.from_string(source, "t").render({})
        assert time.monotonic() - started < 1.0
    assert templates.from_string("{{ hl7_segment('NTE', 1, '', 'a|b') }} {{ [1, 'a,b']|csv_row }}", "t").render(
        {}) == 'NTE|1||a\\F\\b 1,"a,b"'


@pytest.mark.parametrize("name", list(BUDGET_ATTACKS))
def test_renders_that_would_build_gigabytes_stop_within_the_budget(name):
    import resource

    source, reason = BUDGET_ATTACKS[name]
    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TemplateError, match=reason.replace("(", r"\(").replace("+", r"\+").replace("%", "%")) as caught:
        Templates(None).from_string(source, "attack.j2").render({})
    assert time.monotonic() - started < 1.0
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50   # MB of peak growth
    assert str(caught.value).startswith("attack.j2 line 1: ")


def test_the_budget_is_configurable_and_ordinary_templates_stay_far_under_it():
    ordinary = ("{% set ns = namespace(s='') %}{% for i in range(500) %}{% set ns.s = ns.s ~ 'f' ~ i ~ '|' %}"
                "{% endfor %}{{ ns.s|length }} {{ range(1000)|join(',')|length }} {{ ('a b ' * 1000)|wordwrap(60)|length }}")
    plain = jinja2.sandbox.SandboxedEnvironment().from_string(ordinary).render()
    assert Templates(None).from_string(ordinary, "t").render({}) == plain == "2390 3889 3999"
    small = Templates(None, memory=2**20)
    with pytest.raises(TemplateError, match=r"memory budget of 1 MiB \(\[engine\] template_memory\)"):
        small.from_string("{{ ('x' * 600000) ~ ('y' * 600000) }}", "t").render({})


def test_the_budget_is_per_render():
    template = Templates(None, memory=2**20).from_string("{{ (('x' * 400000) ~ 'y')|length }}", "t")
    assert [template.render({}) for _ in range(10)] == ["400001"] * 10


@pytest.mark.parametrize("source, constant", [
    ("https://agency.example/api/placements", True),
    ("line one\nline two\n", True),
    ("", True),
    ("https://agency.example/{{ channel }}", False),
    ("{% if true %}x{% endif %}", False),
    ("{{ 'x' }}", False),
    ("{# a comment #}text", True),
])
def test_a_plain_text_template_is_rendered_once_when_compiled(source, constant):
    """Text without an expression or a tag cannot differ between messages: its output is kept and
    returned without running the template; anything else renders per call."""
    compiled = Templates(None).from_string(source, "url")
    assert (compiled.constant is not None) is constant
    first = compiled.render({"channel": "c1"})
    assert first == compiled.render({"channel": "c2"}) or not constant
    expected = jinja2.Environment(keep_trailing_newline=True).from_string(source).render(channel="c1")
    assert first == expected
    if constant:
        compiled._template = None  # nothing left to run: the kept text is the answer
        assert compiled.render({}) == expected
