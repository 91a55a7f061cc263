"""The edit step's cost (DESIGN §3.8: a 5-position edit of a 1.1 KB ADT must cost ≤ 50 µs) against
``hl7.parse`` of the same message, which is what an editor built on python-hl7's tree would pay
before it changed anything.

Each case is timed from the message text to the edited text, as the pipeline runs it:

* ``editable``: ``EditableMessage(text)``, five ``set``/``clear`` calls, ``text()``.
* ``script``: the analyst's edit list compiled once, then ``EditScript.apply`` per message (set
  MSH.5 and MSH.6, map PV1.3.1 through a table, delete NTE and Z*), with the per-segment changes
  that ``switchboard test`` shows.
* ``hl7.parse``: python-hl7's parse alone.

Medians of ``--runs`` timeit repeats, each the mean of ``--number`` calls.

    .venv/bin/python bench/edit_bench.py [--sample tests/samples/hl7v2/ADT04-28.hl7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import timeit

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import hl7  # noqa: E402

from engine.core.lookups import Table  # noqa: E402
from engine.hl7.edit_ops import compile_edits  # noqa: E402
from engine.hl7.editable import EditableMessage  # noqa: E402
from engine.hl7.encoding import normalize_segments  # noqa: E402

ANALYST_EDIT = [
    {"set": "MSH.5", "value": "LAB"},
    {"set": "MSH.6", "value": "EAST"},
    {"map": "PV1.3.1", "table": "units"},
    {"delete": "NTE"},
    {"delete": "Z*"},
]
UNITS = Table("units", {"ER": "EMERG", "ICU": "CRIT", "3N": "NORTH3"})


def load(path: str) -> str:
    """The sample as the store keeps it: CR segment endings, the final CR included."""
    with open(path, encoding="utf-8") as handle:
        return normalize_segments(handle.read()) + "\r"


def edit_five(text: str) -> str:
    msg = EditableMessage(text)
    msg.set("MSH.5", "LAB")
    msg.set("MSH.6", "EAST")
    msg.set("PV1.3.1", "EMERG")
    msg.set("PID.8", "U")
    msg.clear("PID.19")
    return msg.text()


def median_us(func, number: int, runs: int) -> float:
    times = timeit.repeat(func, number=number, repeat=runs)
    return statistics.median(times) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", default=os.path.join(ROOT, "tests/samples/hl7v2/ADT04-28.hl7"))
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    text = load(args.sample)
    script, problems = compile_edits(ANALYST_EDIT, tables={"units"})
    assert not problems, problems
    lookup = lambda table, key: UNITS.get(key)  # noqa: E731
    edited, _changes = script.apply(text, lookup=lookup)
    assert edited != text and EditableMessage(text).text() == text

    parse = median_us(lambda: hl7.parse(text), max(1, args.number // 20), args.runs)
    editable = median_us(lambda: edit_five(text), args.number, args.runs)
    applied = median_us(lambda: script.apply(text, lookup=lookup), args.number, args.runs)

    print(f"sample: {os.path.basename(args.sample)}, {len(text.encode())} bytes, "
          f"{text.count(chr(13))} segments; median of {args.runs} runs")
    print(f"{'case':<42} {'µs':>9} {'x hl7.parse':>12}")
    for name, value in (("hl7.parse", parse),
                        ("editable: 5 positions (set x4, clear)", editable),
                        ("script.apply: analyst edit + changes", applied)):
        print(f"{name:<42} {value:9.1f} {value / parse:12.3f}")
    budget = 50.0
    worst = max(editable, applied)
    print(f"budget {budget:.0f} µs: {'ok' if worst <= budget else 'OVER'} (worst {worst:.1f} µs)")
    return 0 if worst <= budget else 1


if __name__ == "__main__":
    sys.exit(main())
