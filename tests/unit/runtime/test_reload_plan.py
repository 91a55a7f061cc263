"""What a live reload would deploy (engine/reload_plan.py), without a daemon: a broken channel file is
set aside while the others load, config.toml's own problems stop everything, full validation
catches what loading does not, and the fingerprints follow template includes and plugin files."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.plugins import load_plugins
from engine.runtime.reload_plan import (
    channel_fingerprint,
    load_lenient,
    plugins_fingerprint,
    prepare,
    template_fingerprint,
)

CONFIG = '[engine]\n[store]\npath = "var/s.db"\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "t"\n'


def channel(listen: str = "127.0.0.1:0", extra: str = "") -> str:
    return f'[source]\ntype = "mllp"\nlisten = "{listen}"\n{extra}\n[[destination]]\nname = "out"\ntype = "file"\ndirectory = "out"\n'


def tree(root: Path, channels: dict[str, str], templates: dict[str, str] | None = None,
         plugins: dict[str, str] | None = None, config: str = CONFIG) -> Path:
    for folder in ("channels", "transforms", "plugins"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, text in channels.items():
        (root / "channels" / f"{name}.toml").write_text(text)
    for name, text in (templates or {}).items():
        (root / "transforms" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "transforms" / name).write_text(text)
    for name, text in (plugins or {}).items():
        (root / "plugins" / name).write_text(text)
    (root / "config.toml").write_text(config)
    return root / "config.toml"


@pytest.fixture(scope="module")
def registry():
    return load_plugins(None, entry_points=False)


def test_a_broken_channel_file_is_set_aside_and_the_others_load(tmp_path, registry):
    path = tree(tmp_path, {"good": channel(), "broken": channel() + "[[filter]\n"})
    config, problems, bad = load_lenient(path, registry)
    assert [c.name for c in config.channels] == ["good"]
    assert bad == {(tmp_path / "channels" / "broken.toml").resolve()}
    assert [p.file for p in problems] == ["channels/broken.toml"]
    assert "TOML syntax error" in problems[0].reason


def test_a_listen_clash_sets_aside_only_the_file_that_takes_the_address_second(tmp_path, registry):
    path = tree(tmp_path, {"a": channel("127.0.0.1:7001"), "b": channel("127.0.0.1:7001")})
    config, problems, bad = load_lenient(path, registry)
    assert [c.name for c in config.channels] == ["a"]
    assert [(p.file, p.key) for p in problems] == [("channels/b.toml", "source.listen")]
    assert bad == {(tmp_path / "channels" / "b.toml").resolve()}


def test_a_problem_in_config_toml_stops_the_whole_load(tmp_path, registry):
    path = tree(tmp_path, {"good": channel()}, config=CONFIG + "[engine]\n")   # a table defined twice
    config, problems, bad = load_lenient(path, registry)
    assert config is None and bad == set()
    assert problems[0].file == "config.toml"


def test_prepare_validates_like_check_and_keeps_compiled_pipelines(tmp_path, registry):
    path = tree(tmp_path, {
        "good": channel(extra='[[filter]]\nwhen = "msg[\'MSH.9.1\'] == \'ADT\'"\n'),
        "bad-expression": channel(extra='[[filter]]\nwhen = "msg[\'MSH.9.1\'] =="\n'),
        "bad-template": channel() + '[[transform]]\ninline = "{% if %}"\n',
        "off": 'enabled = false\n' + channel(),
    })
    plan = prepare(path, registry, plugins_fingerprint(tmp_path / "plugins"))
    assert plan.usable and plan.registry is registry and not plan.registry_changed
    assert sorted(plan.pipelines) == ["good"]
    assert sorted(c.name for c in plan.config.channels) == ["good", "off"]       # disabled: loaded, not built
    assert {p.file for p in plan.problems} == {"channels/bad-expression.toml", "channels/bad-template.toml"}
    assert {Path(f).name for f in plan.bad_files} == {"bad-expression.toml", "bad-template.toml"}
    assert plan.fingerprints["good"] == channel_fingerprint(plan.config.channel("good"),
                                                            plan.config.engine.transforms_dir,
                                                            plan.plugins_fingerprint)


def test_a_changed_plugin_is_loaded_into_a_new_registry_and_a_broken_one_stops_the_reload(tmp_path, registry):
    plugin = ("from engine.hookspecs import hookimpl\n\n@hookimpl\ndef register_filters():\n"
              "    return {{'always': lambda options: (lambda message, context: {value})}}\n")
    path = tree(tmp_path, {"a": channel()}, plugins={"mine.py": plugin.format(value="True")})
    fingerprint = plugins_fingerprint(tmp_path / "plugins")
    assert not prepare(path, registry, fingerprint).registry_changed
    plan = prepare(path, registry, "something else")
    assert plan.registry_changed and plan.registry is not registry and "always" in plan.registry.filters
    (tmp_path / "plugins" / "mine.py").write_text("raise RuntimeError('broken on purpose')\n")
    plan = prepare(path, registry, fingerprint)
    assert not plan.usable and plan.problems[0].key == "plugins"
    assert "broken on purpose" in plan.problems[0].reason


def test_plugins_fingerprint_follows_python_files_only(tmp_path):
    folder = tmp_path / "plugins"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "a.py").write_text("x = 1\n")
    first = plugins_fingerprint(folder)
    (folder / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (folder / "notes.txt").write_text("hello")
    assert plugins_fingerprint(folder) == first
    (folder / "_helper.py").write_text("y = 2\n")          # imported by plugins: it counts
    assert plugins_fingerprint(folder) != first
    assert plugins_fingerprint(tmp_path / "missing") == plugins_fingerprint(None)


def test_template_fingerprint_follows_includes_imports_and_extends(tmp_path, registry):
    path = tree(tmp_path, {"a": channel() + '[[transform]]\ntemplate = "top.j2"\n'}, templates={
        "top.j2": "{% extends 'base.j2' %}{% import 'macros.j2' as m %}",
        "base.j2": "{% include 'deep/part.j2' %}",
        "macros.j2": "{% macro x() %}x{% endmacro %}",
        "deep/part.j2": "v1",
        "unrelated.j2": "u1",
    })
    config, _problems, _bad = load_lenient(path, registry)
    transforms = config.engine.transforms_dir
    first = template_fingerprint(config.channel("a"), transforms)
    assert [name for name, _hash in first] == ["base.j2", "deep/part.j2", "macros.j2", "top.j2"]
    (transforms / "unrelated.j2").write_text("u2")
    assert template_fingerprint(config.channel("a"), transforms) == first
    (transforms / "deep" / "part.j2").write_text("v2")
    assert template_fingerprint(config.channel("a"), transforms) != first


def test_a_computed_include_depends_on_every_template_file(tmp_path, registry):
    path = tree(tmp_path, {"a": channel() + '[[transform]]\ninline = "{% include meta.kind ~ \'.j2\' %}"\n',
                           "b": channel()},
                templates={"adt.j2": "a", "dft.j2": "d"})
    config, _problems, _bad = load_lenient(path, registry)
    transforms = config.engine.transforms_dir
    first = template_fingerprint(config.channel("a"), transforms)
    assert [name for name, _hash in first] == ["adt.j2", "dft.j2"]
    assert template_fingerprint(config.channel("b"), transforms) == ()
    (transforms / "new.j2").write_text("n")
    assert template_fingerprint(config.channel("a"), transforms) != first
