"""The plugin API: every hook documented and tested, plugins from plugins_dir and entry points.

``test_every_hook_is_documented_and_tested`` enforces the rule: a hook added to hookspecs.py
without a docstring or without a ``test_hook_<name>`` test here fails the suite.
"""

from __future__ import annotations

import inspect
import json
import sys
import textwrap

import pytest

from engine import hookspecs
from engine.core.plugins import BUILTIN_PLUGINS, PluginError, load_plugins
from support.daemon import Daemon, MllpClient, hl7, wait_for

HOOKS = sorted(name for name, value in vars(hookspecs).items()
               if inspect.isfunction(value) and hasattr(value, "switchboard_spec"))

PLUGIN = textwrap.dedent('''
    """A third-party plugin exercising every hook, as a plugins_dir file."""
    import json, os
    from pathlib import Path
    from engine.config.schema import OptionSpec
    from engine.core.contracts import SendResult
    from engine.hookspecs import hookimpl
    from engine.core.pipeline import FilterResult

    class AccountSuffix:
        def __init__(self, options):
            self.suffix = options.pop("suffix")
            self.name = "account-suffix"
        def check(self, message, context):
            ok = message.view["PID.18.1"].endswith(self.suffix)
            return FilterResult(ok, "" if ok else "account does not end with the suffix", ["suffix rule"])

    class Stamp:
        def __init__(self, options):
            self.word = options.get("word", "stamped")
        def apply(self, message, context):
            return json.dumps({"word": self.word, "account": message.view["PID.18.1"]})

    class JsonLines:
        type_name = "jsonl"
        option_schema = {"path": OptionSpec("path", required=True)}
        def __init__(self, config, context, reactor):
            self.path = Path(config.options["path"])
        def send(self, delivery):
            with self.path.open("a") as handle:
                handle.write(delivery.body + "\\n")
            return SendResult("appended")

    class Canned:
        type_name = "canned"
        option_schema = {"text": OptionSpec("str", required=True)}
        def __init__(self, channel_config, sink, reactor):
            self.sink, self.text = sink, channel_config.source.options["text"]
        def start(self):
            return self.sink.receive(self.text.replace("\\n", "\\r"))
        def stop(self):
            return None

    @hookimpl
    def register_filters():
        return {"account-suffix": AccountSuffix}

    @hookimpl
    def register_transforms():
        return {"stamp": Stamp}

    @hookimpl
    def register_template_helpers():
        return {"filters": {"shout": lambda value: str(value).upper() + "!"}, "globals": {"answer": lambda: 42}}

    @hookimpl
    def register_destinations():
        return [JsonLines]

    @hookimpl
    def register_sources():
        return [Canned]

    @hookimpl
    def message_event(event):
        with open(os.environ["EVENTS_FILE"], "a") as handle:
            handle.write(f"{event.kind} {event.channel} {event.message_id}\\n")
''')


def test_every_hook_is_documented_and_tested():
    assert HOOKS, "no hooks found"
    module = sys.modules[__name__]
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 40, f"hook {name} needs a docstring that explains it"
        assert hasattr(module, f"test_hook_{name}"), f"hook {name} has no test_hook_{name} in {__file__}"


def test_builtins_register_through_the_hooks():
    registry = load_plugins(None, entry_points=False)
    assert {"mllp", "channel"} <= set(registry.sources)
    assert {"mllp", "file", "channel"} <= set(registry.destinations)
    assert {"require-fields", "message-type"} <= set(registry.filters)
    assert "money" in registry.template_filters
    names = {registry.manager.get_name(plugin) for plugin in registry.manager.get_plugins()}
    assert set(BUILTIN_PLUGINS) <= names


def test_two_plugins_claiming_one_name_are_refused(tmp_path):
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text("from engine.hookspecs import hookimpl\n"
                                     "@hookimpl\ndef register_filters():\n    return {'same': lambda options: None}\n")
    with pytest.raises(PluginError, match="'same'"):
        load_plugins(tmp_path, entry_points=False)


def test_a_broken_plugin_file_is_reported_by_name(tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    with pytest.raises(PluginError, match="broken.py"):
        load_plugins(tmp_path, entry_points=False)


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    (tmp_path / "sb_entry_plugin.py").write_text(
        "from engine.hookspecs import hookimpl\n"
        "@hookimpl\ndef register_filters():\n    return {'from-entry-point': object}\n")
    dist = tmp_path / "sb_entry_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sb-entry-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[switchboard]\nsb_entry = sb_entry_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = load_plugins(None, entry_points=True)
    finally:
        sys.modules.pop("sb_entry_plugin", None)
    assert "from-entry-point" in registry.filters


@pytest.fixture(scope="module")
def plugin_daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    events = root / "events.txt"
    lines = root / "out.jsonl"
    listener = f"""
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[filter]]
use = "account-suffix"
suffix = "7"

[[transform]]
use = "stamp"
word = "hello"
outbound = "json"

[[destination]]
name = "lines"
type = "jsonl"
path = "{lines}"

[[destination]]
name = "shouted"
type = "file"
directory = "{root / 'shouted'}"
filename = "{{{{ id }}}}.txt"
  [destination.transform]
  inline = "{{{{ msg['PID.18.1'] | shout }}}} {{{{ answer() }}}}"
"""
    canned_text = hl7("CANNED-1", account="C7").replace("\r", "\n")
    canned = f"""
[source]
type = "canned"
text = '''{canned_text}'''

[[destination]]
name = "lines"
type = "jsonl"
path = "{root / 'canned.jsonl'}"
"""
    daemon = Daemon(root / "d", {"plugged": listener, "canned": canned}, plugins={"thirdparty.py": PLUGIN},
                    env={"EVENTS_FILE": str(events)})
    daemon.start(1)
    client = MllpClient(daemon.ports["plugged"])
    assert client.request(hl7("PL-1", account="ACC7"))["code"] == "AA"
    assert client.request(hl7("PL-2", account="ACC8"))["code"] == "AA"
    client.close()
    wait_for(lambda: lines.exists() and (root / "shouted").exists() and list((root / "shouted").iterdir()),
             what="plugin destinations")
    yield daemon, root
    daemon.stop()


def test_hook_register_filters(plugin_daemon):
    daemon, _root = plugin_daemon
    filtered = daemon.cli_json("messages", "--control-id", "PL-2")[0]
    assert filtered["status"] == "FILTERED"


def test_hook_register_transforms(plugin_daemon):
    _daemon, root = plugin_daemon
    first = json.loads((root / "out.jsonl").read_text().splitlines()[0])
    assert first == {"word": "hello", "account": "ACC7"}


def test_hook_register_template_helpers(plugin_daemon):
    _daemon, root = plugin_daemon
    (shouted,) = list((root / "shouted").iterdir())
    assert shouted.read_text() == "ACC7! 42"


def test_hook_register_destinations(plugin_daemon):
    daemon, root = plugin_daemon
    row = daemon.cli_json("messages", "--control-id", "PL-1")[0]
    shown = daemon.wait_status(row["id"], "SENT")
    assert {d["name"]: d["status"] for d in shown["destinations"]} == {"lines": "SENT", "shouted": "SENT"}
    assert len((root / "out.jsonl").read_text().splitlines()) == 1


def test_hook_register_sources(plugin_daemon):
    daemon, root = plugin_daemon
    wait_for(lambda: (root / "canned.jsonl").exists(), what="the canned source's message delivered")
    assert "CANNED-1" in (root / "canned.jsonl").read_text()
    assert daemon.cli_json("messages", "--channel", "canned")[0]["control_id"] == "CANNED-1"


def test_hook_message_event(plugin_daemon):
    _daemon, root = plugin_daemon
    kinds = wait_for(lambda: {line.split()[0] for line in (root / "events.txt").read_text().splitlines()}
                     if (root / "events.txt").exists() else None, what="events")
    assert {"received", "filtered", "sent"} <= kinds
    assert "ACC7" not in (root / "events.txt").read_text()  # ids and kinds only, never content


def test_dry_run_shows_plugin_rules(plugin_daemon, tmp_path):
    daemon, _root = plugin_daemon
    message_file = tmp_path / "two.hl7"
    message_file.write_text(hl7("T-1", account="X7").replace("\r", "\n") + "\n" +
                            hl7("T-2", account="X8").replace("\r", "\n") + "\n")
    result = daemon.cli("test", "plugged", str(message_file), "--json")
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout)
    assert first["status"] == "QUEUED" and second["status"] == "FILTERED"
    assert second["filters"][0]["rules"] == ["suffix rule"]
    bodies = {d["name"]: d["body"] for d in first["destinations"]}
    assert bodies["shouted"] == "X7! 42"
    assert json.loads(bodies["lines"]) == {"word": "hello", "account": "X7"}


ALERT_PLUGIN = textwrap.dedent('''
    """A third-party alert plugin taking only ``alert`` (a hook may declare a subset of the arguments)."""
    import json, os
    from engine.hookspecs import hookimpl

    @hookimpl
    def alert(alert):
        with open(os.environ["ALERTS_FILE"], "a") as handle:
            handle.write(json.dumps(alert.as_dict()) + "\\n")
''')


def test_hook_alert(tmp_path):
    from support.daemon import free_port

    alerts = tmp_path / "alerts.jsonl"
    channel = f"""
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[destination]]
name = "down"
type = "mllp"
connect = "127.0.0.1:{free_port()}"
retry = {{ interval = "100ms", backoff = 1.0, max_interval = "100ms" }}
"""
    daemon = Daemon(tmp_path / "d", {"alerting": channel}, plugins={"pager.py": ALERT_PLUGIN},
                    env={"ALERTS_FILE": str(alerts)},
                    extra_config='[alerts]\nfailing_longer_than = "300ms"\ncheck_interval = "100ms"\n')
    daemon.start(1)
    try:
        client = MllpClient(daemon.ports["alerting"])
        assert client.request(hl7("AL-1", mrn="ZZSECRET99"))["code"] == "AA"
        client.close()
        found = wait_for(lambda: [json.loads(line) for line in alerts.read_text().splitlines()
                                  if '"destination_failing"' in line] if alerts.exists() else None,
                         timeout=15, what="a destination_failing alert")
    finally:
        daemon.stop()
    assert (found[0]["state"], found[0]["channel"], found[0]["destination"]) == ("firing", "alerting", "down")
    assert "cannot connect" in found[0]["detail"]
    assert "ZZSECRET99" not in alerts.read_text()


def test_builtin_filters_take_their_options_from_a_channel_file(tmp_path):
    """TOML arrays reach plugins as tuples (frozen config): the built-ins must accept them."""
    from engine.runtime.check import check

    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "f.toml").write_text(
        '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'
        '[[filter]]\nuse = "require-fields"\nfields = ["PID.3.1"]\n'
        '[[filter]]\nuse = "message-type"\ntypes = ["ADT"]\n')
    (tmp_path / "config.toml").write_text('[store]\npath = "s.db"\n')
    _config, _registry, problems = check(tmp_path / "config.toml")
    assert problems == []


def test_the_builtin_plugins_load_without_paramiko():
    """SFTP's session code (and paramiko, 2.5 MB resident) is imported only when SFTP is used."""
    import subprocess
    import sys

    code = ("import sys; from engine.core.plugins import load_plugins; registry = load_plugins(None); "
            "assert 'sftp' in registry.sources and 'sftp' in registry.destinations; "
            "print('paramiko' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
