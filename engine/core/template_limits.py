"""The limits of one template render: a deadline, a memory budget, and bounded inputs for the
filters and methods that can blow up (RELIABILITY 22; issue 15 point 2).

Why each one:

* **Deadline** (``time_limit``, 2 s).  Checked between operations (``call``, ``getattr``,
  ``getitem``, every loop iteration: engine/core/templates.py) and, here, every 256 items of any
  iterator a filter consumes, so ``join`` over a ``map`` stops too.  It cannot interrupt one C
  call, so the operations whose single call could run long are bounded by their input instead.
* **Memory budget** (``[engine] template_memory``, default 16 MiB).  A count, per render, of the
  characters of every string and the items (8 bytes each) of every list the template builds:
  by ``~``, ``+``, ``*``, ``%``, block ``{% set %}``, macros, every filter's result and every
  method's result.  Where one call could build far more than its inputs (``join`` with a long
  separator, ``replace``, ``wordwrap``, ``indent``, ``format``, ``expandtabs``, ``str.join``),
  the size is estimated from the inputs and charged *before* the call, so the budget is
  exceeded before the memory is taken.  Strings built and then dropped count too: the budget
  bounds what a render allocates in total, so what it holds at any moment is below it.
* **Helpers** (our filters and globals, and every plugin's) are charged the printed size of their
  text and list arguments before they run, since what they write is text of about that size:
  ``hl7_segment('ZZZ', *([big] * 1000))`` or ``[big] * 1000 | csv_row`` would write 1 GB from
  8 KB of references.  A helper working in C over its whole input (``hl7_escape`` is one
  ``str.translate``) is not interrupted by the deadline; its input is bounded by the budget.
* **Bounded inputs.**  ``wordwrap`` takes at most ``max_output`` characters and makes at most
  20,000 lines (pure Python, ~10 µs a line); ``urlize``, ``urlencode`` and ``pprint`` at most
  ``max_output`` characters; any filter at most 1,000,000 items; ``batch``/``slice`` sizes and
  ``sum`` of lists likewise refused.  Each bound is far above what a message template needs.

Reasons are ours (PHI-free): they name the limit and the operation, never a value.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

ITEM_BYTES = 8                 # a list slot: what a reference costs
NEW_ITEM_BYTES = 64            # a list of new small strings (str.split): the objects too
MAX_ITEMS = 1_000_000          # items a filter may take
WORDWRAP_LINES = 20_000        # lines wordwrap may make
DEADLINE_EVERY = 256           # iterator items between deadline checks
DEFAULT_MEMORY = 16 * 2**20

# The per-render deadline (a time.monotonic() value) or None outside a render.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "switchboard_template_deadline", default=None
)
# The time limit of the render in progress, for the error message.
_LIMIT: contextvars.ContextVar[float] = contextvars.ContextVar("switchboard_template_limit", default=0.0)
# The memory budget of the render in progress, or None outside a render.
_BUDGET: contextvars.ContextVar["Budget | None"] = contextvars.ContextVar("switchboard_template_budget",
                                                                         default=None)


class LimitExceeded(Exception):
    """Raised inside a render when a limit is hit; its reason is ours, so it is PHI-free."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_deadline() -> None:
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline:
        raise LimitExceeded(f"render took longer than {_LIMIT.get():g}s")


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size} bytes"


class Budget:
    """What one render may still build, in bytes (characters and list slots)."""

    __slots__ = ("limit", "left")

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit

    def spend(self, size: int, what: str) -> None:
        self.left -= size
        if self.left < 0:
            raise LimitExceeded(f"{what} would take the render past its memory budget of "
                                f"{_mib(self.limit)} ([engine] template_memory)")


def spend(size: int, what: str) -> None:
    budget = _BUDGET.get()
    if budget is not None and size:
        budget.spend(size, what)


def remaining() -> int:
    budget = _BUDGET.get()
    return budget.left if budget is not None else 1 << 62


def charge(value: Any, what: str) -> Any:
    """Charge what an operation returned (a string's characters, a container's slots)."""
    if isinstance(value, str):
        spend(len(value), what)
    elif isinstance(value, (list, tuple, dict, set, frozenset)):
        spend(len(value) * ITEM_BYTES, what)
    return value


class RenderLimits:
    """Sets the deadline (never later than an enclosing render's) and the memory budget (an
    enclosing render's is shared) for one render, and restores them after."""

    def __init__(self, time_limit: float, memory: int):
        self.time_limit = time_limit
        self.memory = memory

    def __enter__(self):
        deadline = time.monotonic() + self.time_limit
        outer = _DEADLINE.get()
        if outer is not None and outer < deadline:
            deadline = outer
        budget = _BUDGET.get() or Budget(self.memory)
        self._tokens = (_DEADLINE.set(deadline), _LIMIT.set(self.time_limit), _BUDGET.set(budget))
        return self

    def __exit__(self, *exc_info):
        _DEADLINE.reset(self._tokens[0])
        _LIMIT.reset(self._tokens[1])
        _BUDGET.reset(self._tokens[2])
        return False


# -- sizes without building the text ---------------------------------------------------------
def text_size(value: Any, limit: int) -> int:
    """``len(str(value))`` estimated without building it, stopping once past ``limit``: a list
    holding one 1 MB string a thousand times prints as 1 GB though it holds 8 KB of slots."""
    if isinstance(value, str):
        return len(value)
    if value is None or isinstance(value, (bool, float)):
        return 8
    if isinstance(value, int):
        return value.bit_length() * 30103 // 100000 + 2
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return _container_size(value, limit, set())
    return len(str(value))


def _container_size(value, limit: int, seen: set) -> int:
    if id(value) in seen:                 # a list that holds itself prints as [...]
        return 5
    seen.add(id(value))
    total = 2
    items = value.items() if isinstance(value, dict) else value
    for count, item in enumerate(items):
        if count % DEADLINE_EVERY == 0:
            check_deadline()
        parts = item if isinstance(value, dict) else (item,)
        for part in parts:
            if isinstance(part, (list, tuple, set, frozenset, dict)):
                total += _container_size(part, limit - total, seen) + 2
            else:
                size = text_size(part, limit - total)
                total += size + (2 if isinstance(part, str) else 0) + 2
        if total > limit:
            break
    seen.discard(id(value))
    return total


def guarded(value: Any, what: str):
    """A filter's iterable input: a sized one of at most MAX_ITEMS, or an iterator read with a
    deadline check every DEADLINE_EVERY items and refused past MAX_ITEMS."""
    if isinstance(value, (str, bytes)):
        return value
    try:
        size = len(value)
    except TypeError:
        return _guarded_iterator(value, what) if hasattr(value, "__iter__") else value
    if size > MAX_ITEMS:
        raise LimitExceeded(f"{what} takes at most {MAX_ITEMS:,} items")
    return value


def _guarded_iterator(iterable, what: str):
    for count, item in enumerate(iterable, 1):
        if count % DEADLINE_EVERY == 0:
            check_deadline()
            if count > MAX_ITEMS:
                raise LimitExceeded(f"{what} takes at most {MAX_ITEMS:,} items")
        yield item


# -- estimates for the operations that build more than they take -----------------------------
def joined_size(items: list, separator: str) -> int:
    """The size of ``separator.join(map(str, items))``, stopping once past the budget."""
    limit = remaining()
    total = len(separator) * max(len(items) - 1, 0)
    for count, item in enumerate(items):
        if count % DEADLINE_EVERY == 0:
            check_deadline()
        total += text_size(item, limit - total)
        if total > limit:
            break
    return total


def replaced_size(text: str, old: str, new: str, count=None) -> int:
    occurrences = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * max(len(new) - len(old), 0)


def formatted_size(pattern: str, fields: int, args) -> int:
    """At most each field replaced by the largest argument (a field may name one twice)."""
    limit = remaining()
    largest = max((text_size(arg, limit) for arg in args), default=0)
    return len(pattern) + fields * largest


def concat(items) -> str:
    """``~`` (Jinja's ``str_join``), measured before it is joined."""
    items = tuple(items)
    limit = remaining()
    size = 0
    for item in items:
        size += text_size(item, limit - size)
        if size > limit:
            break
    spend(size, "'~'")
    return "".join(map(str, items))


def concat_chunks(chunks) -> str:
    """``environment.concat``: a ``{% set %}`` block's, a macro's or a ``{% filter %}``'s output."""
    chunks = list(chunks)
    spend(sum(len(chunk) for chunk in chunks), "a {% set %} block or macro")
    return "".join(chunks)


# -- filters ---------------------------------------------------------------------------------
def guard_filters(filters: dict, max_output: int, own: tuple = ()) -> dict:
    """Every filter wrapped: its iterable input guarded, its result charged, and Jinja's own
    filters that build more than they take (or ``own`` replacements of them, such as our
    ``tojson``) checked before they run (``_PRECHECKS``)."""
    from jinja2 import filters as jinja_filters

    guarded_filters = {}
    for name, function in filters.items():
        known = function is jinja_filters.FILTERS.get(name) or function in own
        check = _PRECHECKS.get(name) if known else None
        guarded_filters[name] = _wrap_filter(name, function, check, max_output)
    return guarded_filters


def _wrap_filter(name: str, function, check, max_output: int):
    import functools

    from jinja2.utils import _PassArg

    from jinja2 import filters as jinja_filters

    skip = 0 if _PassArg.from_obj(function) is None else 1   # context/environment comes first
    jinja_own = function is jinja_filters.FILTERS.get(name)
    what = f"the {name} filter"

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if len(args) > skip:
            value = guarded(args[skip], what)
            if check is not None:
                value = check(value, args[skip + 1:], kwargs, max_output, what)
            elif not jinja_own:
                charge_inputs(args[skip:], kwargs, what)
            args = (*args[:skip], value, *args[skip + 1:])
        return charge(function(*args, **kwargs), what)

    return wrapper


def charge_inputs(args, kwargs: dict, what: str) -> None:
    """Before a helper (a plugin's or our own filter, a global function) runs: the printed size of
    its text and list arguments, since what it makes of them is text of about that size; a
    list of a thousand references to one 1 MB string is 1 GB to a helper that writes it out."""
    limit = remaining() + 1
    size = 0
    for value in (*args, *kwargs.values()):
        if isinstance(value, (str, list, tuple, dict, set, frozenset)):
            size += text_size(value, limit - size)
            if size >= limit:
                break
    spend(size, what)


def _arg(args: tuple, kwargs: dict, position: int, name: str, default=None):
    return args[position] if len(args) > position else kwargs.get(name, default)


def _check_join(value, args, kwargs, _max_output, what):
    items = list(value)
    spend(len(items) * ITEM_BYTES, what)
    separator = str(_arg(args, kwargs, 0, "d", ""))
    if _arg(args, kwargs, 1, "attribute") is None:
        spend(joined_size(items, separator), what)
    else:
        spend(len(separator) * max(len(items) - 1, 0), what)   # the attributes are charged as the result
    return items


def _check_wordwrap(value, args, kwargs, max_output, what):
    if not isinstance(value, str):
        return value
    width = _arg(args, kwargs, 0, "width", 79)
    width = width if isinstance(width, int) and width > 0 else 1
    if len(value) > max_output:
        raise LimitExceeded(f"{what} takes at most {max_output:,} characters")
    if len(value) // width > WORDWRAP_LINES:
        raise LimitExceeded(f"{what} would make more than {WORDWRAP_LINES:,} lines")
    wrapstring = _arg(args, kwargs, 2, "wrapstring") or "\n"
    spend(len(value) + (len(value) // width + 1) * len(str(wrapstring)), what)
    return value


def _check_replace(value, args, kwargs, _max_output, what):
    old, new = _arg(args, kwargs, 0, "old", ""), _arg(args, kwargs, 1, "new", "")
    if isinstance(value, str):
        spend(replaced_size(value, str(old), str(new), _arg(args, kwargs, 2, "count")), what)
    return value


def _check_indent(value, args, kwargs, max_output, what):
    width = _arg(args, kwargs, 0, "width", 4)
    pad = width if isinstance(width, int) else len(str(width))
    if pad > max_output:
        raise LimitExceeded(f"output exceeds {max_output} bytes")
    if isinstance(value, str):
        spend(len(value) + (value.count("\n") + 1) * max(pad, 0), what)
    return value


def _check_center(value, args, kwargs, max_output, what):
    width = _arg(args, kwargs, 0, "width", 80)
    if isinstance(width, int):
        if width > max_output:
            raise LimitExceeded(f"output exceeds {max_output} bytes")
        spend(width, what)
    return value


def _check_format(value, args, kwargs, _max_output, what):
    if isinstance(value, str):
        spend(formatted_size(value, value.count("%"), (*args, *kwargs.values())), what)
    return value


def _check_text_input(value, _args, _kwargs, max_output, what):
    """Filters written in Python that walk their input character by character."""
    if text_size(value, max_output + 1) > max_output:
        raise LimitExceeded(f"{what} takes at most {max_output:,} characters")
    return value


def _check_printed(value, _args, _kwargs, _max_output, what):
    """Filters that print a whole value (tojson, string): its printed size, before it is printed."""
    if not isinstance(value, str):
        spend(text_size(value, remaining() + 1), what)
    return value


def _check_sum(value, args, kwargs, _max_output, what):
    if isinstance(_arg(args, kwargs, 1, "start", 0), (list, tuple, str)):
        raise LimitExceeded(f"{what} adds numbers only (a sum of lists copies each one again)")
    return value


def _check_count(position: int, name: str):
    def check(value, args, kwargs, _max_output, what):
        count = _arg(args, kwargs, position, name, 0)
        if isinstance(count, int) and count > MAX_ITEMS:
            raise LimitExceeded(f"{what} takes a {name} of at most {MAX_ITEMS:,}")
        return value

    return check


_PRECHECKS = {
    "join": _check_join, "wordwrap": _check_wordwrap, "replace": _check_replace, "indent": _check_indent,
    "center": _check_center, "format": _check_format, "urlize": _check_text_input,
    "urlencode": _check_text_input, "pprint": _check_text_input, "tojson": _check_printed,
    "string": _check_printed, "xmlattr": _check_printed, "sum": _check_sum, "batch": _check_count(0, "linecount"),
    "slice": _check_count(0, "slices"),
}


# -- methods called from a template (str and list methods) ------------------------------------
def check_method(method, args: tuple, kwargs: dict, max_output: int) -> None:
    """Before a str or list method runs: the ones that can build more than they take are
    estimated and charged (the result of every call is charged after it, by the sandbox)."""
    owner, name = method.__self__, method.__name__
    what = f"str.{name}" if isinstance(owner, str) else f"{type(owner).__name__}.{name}"
    if isinstance(owner, str):
        if name in ("ljust", "rjust", "center", "zfill"):
            width = _arg(args, kwargs, 0, "width", 0)
            if isinstance(width, int) and width > max_output:
                raise LimitExceeded(f"output exceeds {max_output} bytes")
        elif name == "expandtabs":
            size = _arg(args, kwargs, 0, "tabsize", 8)
            if isinstance(size, int):
                spend(len(owner) + owner.count("\t") * max(size, 0), what)
        elif name == "replace":
            spend(replaced_size(owner, str(_arg(args, kwargs, 0, "old", "")), str(_arg(args, kwargs, 1, "new", "")),
                                _arg(args, kwargs, 2, "count")), what)
    elif isinstance(owner, (list, dict, set)):
        if name in ("append", "insert", "add", "setdefault"):
            spend(ITEM_BYTES, what)
        elif name in ("extend", "update") and args:
            try:
                spend(len(args[0]) * ITEM_BYTES, what)
            except TypeError:
                pass


def charge_method_result(method, result) -> Any:
    """After a method: its result charged; the strings a split makes count as objects too."""
    name = getattr(method, "__name__", "")
    what = f"{type(getattr(method, '__self__', None)).__name__}.{name}"
    charge(result, what)
    if name in ("split", "rsplit", "splitlines", "partition", "rpartition") and isinstance(result, (list, tuple)):
        spend(len(result) * (NEW_ITEM_BYTES - ITEM_BYTES), what)
    return result


def join_method(separator: str, iterable, what: str = "str.join") -> list:
    """``sep.join(items)``: the items read (guarded) and the result charged before it is built."""
    items = list(guarded(iterable, what))
    spend(len(items) * ITEM_BYTES + joined_size(items, separator), what)
    return items
