"""Code tables (DESIGN §3.9): loading lookups/NAME.csv, and every way a table can be broken,
each named by file and line, the broken table left out."""

from __future__ import annotations

import pytest

from engine.core.lookups import MISSING, Table, load_table, load_tables


def write(directory, name, content, *, raw=False):
    path = directory / name
    if raw:
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def test_key_first_column_value_column_named_value(tmp_path):
    write(tmp_path, "units.csv", "code,description,value\nER,Emergency room,EMERG\nICU,\"Intensive, care\",CRIT\n")
    write(tmp_path, "classes.csv", "key,label\nI,INPATIENT\nO,\n")
    tables, problems = load_tables(tmp_path)
    assert problems == []
    assert set(tables) == {"units", "classes"}
    units = tables["units"]
    assert units.get("ER") == "EMERG" and units.get("ICU") == "CRIT"
    assert units.get("er") is MISSING and units.get("XX", "d") == "d"
    assert "ER" in units and "er" not in units and len(units) == 2
    assert tables["classes"].get("I") == "INPATIENT"
    assert tables["classes"].get("O") == ""          # an empty value is a value, not MISSING
    assert "O" in tables["classes"]
    assert units.file.endswith("units.csv") and units.name == "units"


def test_keys_compare_exactly_unless_the_toml_says_insensitive(tmp_path):
    write(tmp_path, "units.csv", "code,value\nER,EMERG\n er ,SPACED\n")
    write(tmp_path, "loinc.csv", "code,value\nGlu,2345-7\n")
    write(tmp_path, "loinc.toml", 'case = "insensitive"\n')
    tables, problems = load_tables(tmp_path)
    assert problems == []
    assert tables["units"].get(" er ") == "SPACED" and tables["units"].get("er") is MISSING
    assert tables["loinc"].case_insensitive
    assert tables["loinc"].get("GLU") == tables["loinc"].get("glu") == "2345-7"


def test_crlf_bom_quotes_and_blank_lines(tmp_path):
    write(tmp_path, "t.csv", "\ufeffcode,value\r\n\r\nA,\"x\r\ny\"\r\nB,\"say \"\"hi\"\"\"\r\n\r\n")
    tables, problems = load_tables(tmp_path)
    assert problems == []
    assert tables["t"].get("A") == "x\r\ny" and tables["t"].get("B") == 'say "hi"'


def test_duplicate_key_names_file_and_both_lines(tmp_path):
    path = write(tmp_path, "units.csv", "code,value\nER,EMERG\nICU,CRIT\n\nER,OTHER\n")
    write(tmp_path, "ok.csv", "code,value\nA,1\n")
    tables, problems = load_tables(tmp_path)
    assert problems == [(str(path), 5, "duplicate key (first on line 2)")]
    assert "units" not in tables and "ok" in tables


def test_duplicate_after_casefold_in_an_insensitive_table(tmp_path):
    path = write(tmp_path, "units.csv", "code,value\nER,EMERG\ner,other\n")
    write(tmp_path, "units.toml", 'case = "insensitive"\n')
    assert load_tables(tmp_path) == ({}, [(str(path), 3, "duplicate key (first on line 2)")])


def test_wrong_number_of_columns_names_the_line(tmp_path):
    path = write(tmp_path, "units.csv", "code,value\nER,EMERG\nICU\nOR,A,B\n")
    tables, problems = load_tables(tmp_path)
    assert problems == [(str(path), 3, "the row has 1 columns, the header 2"),
                        (str(path), 4, "the row has 3 columns, the header 2")]
    assert tables == {}


@pytest.mark.parametrize("content, line, reason", [
    ("", None, "is empty"),
    ("\n\n", None, "is empty"),
    ("code\nER\n", 1, "two columns at least"),
    ("code,,x\n", 1, "empty column name"),
    ("code,value,value\n", 1, "names a column twice"),
    ('code,value\nER,"EMERG\n', 2, "is not valid CSV"),
])
def test_broken_tables(tmp_path, content, line, reason):
    path = write(tmp_path, "t.csv", content)
    tables, problems = load_tables(tmp_path)
    assert tables == {}
    assert len(problems) == 1 and problems[0][:2] == (str(path), line) and reason in problems[0][2]


def test_a_header_only_table_is_an_empty_table(tmp_path):
    write(tmp_path, "t.csv", "code,value\n")
    tables, problems = load_tables(tmp_path)
    assert problems == [] and len(tables["t"]) == 0


def test_undecodable_names_the_line(tmp_path):
    path = write(tmp_path, "t.csv", b"code,value\nA,1\nB,caf\xe9\n", raw=True)
    assert load_tables(tmp_path) == ({}, [(str(path), 3, "is not UTF-8 text")])


def test_broken_options(tmp_path):
    write(tmp_path, "a.csv", "code,value\nA,1\n")
    a = write(tmp_path, "a.toml", 'case = "upper"\n')
    write(tmp_path, "b.csv", "code,value\nB,1\n")
    b = write(tmp_path, "b.toml", 'case = \n')
    write(tmp_path, "c.csv", "code,value\nC,1\n")
    c = write(tmp_path, "c.toml", 'case = "exact"\nsort = true\n')
    orphan = write(tmp_path, "d.toml", 'case = "insensitive"\n')
    tables, problems = load_tables(tmp_path)
    assert tables == {}
    by_file = {file: reason for file, _line, reason in problems}
    assert "case must be one of exact, insensitive" in by_file[str(a)]
    assert "is not valid TOML" in by_file[str(b)]
    assert "unknown key 'sort'" in by_file[str(c)]
    assert "no d.csv beside it" in by_file[str(orphan)]


def test_missing_directory_is_one_problem(tmp_path):
    assert load_tables(tmp_path / "nope") == (
        {}, [(str(tmp_path / "nope"), None, "the lookups directory does not exist")])


def test_problems_never_quote_a_key_or_value(tmp_path):
    secret = "MRN-SECRET-42"
    write(tmp_path, "t.csv", f"code,value\n{secret},1\n{secret},2\n{secret}\n")
    _tables, problems = load_tables(tmp_path)
    assert problems and all(secret not in reason for _file, _line, reason in problems)


def test_load_table_alone_and_other_files_ignored(tmp_path):
    path = write(tmp_path, "units.csv", "code,value\nER,EMERG\n")
    write(tmp_path, "README.md", "not a table")
    write(tmp_path, ".hidden.csv", "junk")
    table, problems = load_table(path)
    assert problems == [] and isinstance(table, Table) and table.get("ER") == "EMERG"
    assert set(load_tables(tmp_path)[0]) == {"units"}
    assert repr(MISSING) == "MISSING" and not MISSING
