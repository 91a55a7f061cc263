"""Code tables (DESIGN §3.9): ``lookups/NAME.csv`` read into dicts for ``map`` and ``lookup()``.

Every feed maps codes (units, patient classes, LOINC...), and the people who keep those lists edit
them in a spreadsheet, so a table is a CSV with a header row: the first column is the key, the
column named ``value`` (else the second) the value.  ``NAME.toml`` beside it may say
``case = "insensitive"``.  A table with any problem is reported and left out of the result, never
half-loaded: on a live reload the caller keeps the table it had.  Problems name the file and the
line, never a key or a value (a table may map identifiers).
"""

from __future__ import annotations

import csv
import io
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class _Missing:
    """The one value meaning "not in the table" (a value may be '')."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING = _Missing()
CASES = ("exact", "insensitive")
Problem = tuple[str, int | None, str]  # (file, line or None for the whole file, reason)


@dataclass(frozen=True, slots=True)
class Table:
    """One code table.  Keys compare exactly unless ``case_insensitive`` (then by casefold)."""

    name: str
    values: dict[str, str] = field(repr=False)
    case_insensitive: bool = False
    file: str = ""

    def get(self, key: str, default=MISSING):
        if self.case_insensitive and isinstance(key, str):
            key = key.casefold()
        return self.values.get(key, default)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not MISSING

    def __len__(self) -> int:
        return len(self.values)


def load_tables(directory: str | Path) -> tuple[dict[str, Table], list[Problem]]:
    """Every ``NAME.csv`` of ``directory`` as a Table, and the problems found.  A missing
    directory is one problem; a broken table is reported and absent from the result."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}, [(str(directory), None, "the lookups directory does not exist")]
    tables: dict[str, Table] = {}
    problems: list[Problem] = []
    csv_names = {p.stem for p in directory.glob("*.csv") if not p.name.startswith(".")}
    for options_file in sorted(directory.glob("*.toml")):
        if options_file.stem not in csv_names and not options_file.name.startswith("."):
            problems.append((str(options_file), None,
                             f"no {options_file.stem}.csv beside it: the options apply to nothing"))
    for name in sorted(csv_names):
        table, found = load_table(directory / f"{name}.csv")
        problems.extend(found)
        if table is not None:
            tables[name] = table
    return tables, problems


def load_table(path: Path) -> tuple[Table | None, list[Problem]]:
    """One table from ``path`` (and its ``.toml`` beside it); (None, problems) when broken."""
    file = str(path)
    case_insensitive, problems = _read_options(path.with_suffix(".toml"))
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, [*problems, (file, None, f"cannot be read: {error.strerror or error}")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        return None, [*problems, (file, line, "is not UTF-8 text")]
    values, found = _parse_rows(text, file, case_insensitive)
    problems.extend(found)
    if problems:
        return None, problems
    return Table(path.stem, values, case_insensitive, file), []


def _read_options(path: Path) -> tuple[bool, list[Problem]]:
    if not path.is_file():
        return False, []
    file = str(path)
    try:
        options = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        return False, [(file, None, f"is not valid TOML: {error}")]
    problems = [(file, None, f"unknown key {key!r}; known: case") for key in options
                if key != "case"]
    case = options.get("case", "exact")
    if case not in CASES:
        problems.append((file, None, f"case must be one of {', '.join(CASES)}"))
    return case == "insensitive", problems


def _parse_rows(text: str, file: str, case_insensitive: bool) -> tuple[dict[str, str],
                                                                          list[Problem]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[Problem] = []
    values: dict[str, str] = {}
    first_line: dict[str, int] = {}
    header: list[str] | None = None
    value_column = 1
    try:
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if header is None:
                header = row
                reason = _header_problem(header)
                if reason:
                    return {}, [(file, line, reason)]
                names = [name.strip().lower() for name in header]
                value_column = names.index("value") if "value" in names[1:] else 1
                continue
            if len(row) != len(header):
                problems.append((file, line, f"the row has {len(row)} columns, the header "
                                             f"{len(header)}"))
                continue
            key = row[0].casefold() if case_insensitive else row[0]
            if key in first_line:
                problems.append((file, line, f"duplicate key (first on line {first_line[key]})"))
                continue
            first_line[key] = line
            values[key] = row[value_column]
    except csv.Error as error:
        problems.append((file, reader.line_num, f"is not valid CSV: {error}"))
    if header is None and not problems:
        problems.append((file, None, "is empty: a table needs a header row (key,value)"))
    return values, problems


def _header_problem(header: list[str]) -> str | None:
    if len(header) < 2:
        return "the header row needs two columns at least: the key, then the value"
    names = [name.strip() for name in header]
    if not all(names):
        return "the header row has an empty column name"
    if len(set(names)) != len(names):
        return "the header row names a column twice"
    return None


def lookup_helpers(tables: dict[str, Table]) -> tuple[dict, dict]:
    """(filters, globals) for templates and ``when``: ``lookup('units', value, default=...)`` and
    ``value | lookup('units', default=...)``.  The table's value, else ``default`` (else the key
    itself); an unknown table is an error naming it."""
    def lookup(key, table=None, default=MISSING):
        if table is None:
            raise ValueError("lookup needs a table name: lookup('units', value) or value | lookup('units')")
        found = tables.get(table)
        if found is None:
            raise ValueError(f"no code table named {table!r} in lookups_dir")
        value = found.get("" if key is None else str(key))
        if value is MISSING:
            return str(key) if default is MISSING else default
        return value

    def lookup_global(table, key, default=MISSING):
        return lookup(key, table, default)

    return {"lookup": lookup}, {"lookup": lookup_global}
