"""The house rules of DESIGN §1, checked on every run: the layering contract (import-linter, in
pyproject.toml), no import cycles, SQL only in engine/store/, and the event kinds hookspecs
documents are exactly the ones the engine emits."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp

from engine import hookspecs
from engine.core.contracts import EventKind

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engine"


def test_the_layering_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def strongly_connected(graph) -> list[set[str]]:
    """Tarjan's algorithm over module imports: every group of modules that import each other."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.find_modules_directly_imported_by(node):
            if not other.startswith("engine"):
                continue
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    sys.setrecursionlimit(10000)
    for module in sorted(graph.modules):
        if module.startswith("engine") and module not in index:
            visit(module)
    return groups


def test_no_import_cycles():
    graph = grimp.build_graph("engine", include_external_packages=False)
    assert strongly_connected(graph) == []


SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|PRAGMA)\b|\.execute(many)?\(|connect_(reader|writer)\(")


def test_sql_lives_only_in_engine_store():
    offenders = []
    for path in ENGINE.rglob("*.py"):
        if path.is_relative_to(ENGINE / "store"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SQL.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []


def emitted_kinds() -> set[str]:
    kinds = set()
    for path in ENGINE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        kinds |= {m.lower() for m in re.findall(r"emit\(EventKind\.([A-Z_]+)", text)}
        kinds |= set(re.findall(r"note_event\(\"([a-z_]+)\"", text))
        kinds |= {m.lower() for m in re.findall(r"note_event\(EventKind\.([A-Z_]+)", text)}
    return kinds


def test_hookspecs_lists_exactly_the_event_kinds_emitted():
    documented = hookspecs.message_event.__doc__
    listed = set(re.findall(r"[a-z_]+", documented.split("Kinds (")[1].split(".  The event")[0].split("):", 1)[1]))
    assert listed == {kind.value for kind in EventKind}
    assert emitted_kinds() == {kind.value for kind in EventKind}
