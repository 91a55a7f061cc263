"""config.toml + channels/*.toml: the contract's example loads, and every kind of mistake is reported,
all at once, naming the file and the key."""
import dataclasses
from pathlib import Path

import pytest

from engine.config.loader import ConfigError, ConnectorOptions, OptionSpec, Problem, load_config

# DESIGN.md §3.1, verbatim.
CONFIG = '''
[engine]
channels_dir = "channels"      # paths relative to this file
transforms_dir = "transforms"
plugins_dir = "plugins"
log_level = "info"             # debug | info | warning | error
log_format = "text"            # text | json

[store]
path = "var/switchboard.db"    # SQLite, the embedded default
retention = "30d"              # prune message content older than this; "0" keeps all

[admin]
listen = "127.0.0.1:8480"      # admin API, metrics, dashboard
token = "${SWITCHBOARD_TOKEN:-}" # bearer token; any string value may use ${VAR} or ${VAR:-default}
'''

# DESIGN.md §3.2, with real templates where the example has "...".
EHR = '''
name = "ehr-placements"        # default: the file's stem; unique
description = "Aged self-pay balances to the agency"
enabled = true
inbound = "hl7"

[source]
type = "mllp"
listen = "127.0.0.1:2575"
ack = "stored"
max_message_size = "1MB"
idle_timeout = "5m"
max_connections = 100
dedupe = "24h"

[[filter]]
when = "msg['MSH.9.1'] in ('ADT', 'DFT', 'BAR')"
[[filter]]
use = "placement-rules"
min_age_days = 90

[[transform]]
use = "minimum-necessary"
[[transform]]
template = "placement.json.j2"
outbound = "json"

[metadata]
mrn = "PID.3.1"
account = "PID.18.1"

[[destination]]
name = "agency-api"
type = "http"
url = "http://127.0.0.1:9000/placements"
method = "POST"
headers = { Authorization = "Bearer ${AGENCY_TOKEN}" }
timeout = "10s"
retry = { attempts = 0, interval = "2s", backoff = 2.0, max_interval = "5m" }
  [[destination.filter]]
  when = "meta.account != ''"
  [destination.transform]
  template = "agency.j2"
'''

ENV = {"AGENCY_TOKEN": "agency-secret"}


def mllp(port: int = 0, **extra: str) -> str:
    """A minimal valid channel; ``extra`` adds top-level lines (already TOML)."""
    head = "".join(f"{key} = {value}\n" for key, value in extra.items())
    return f'{head}[source]\ntype = "mllp"\nlisten = "127.0.0.1:{port}"\n'


def write_tree(root: Path, channels: dict[str, str], config: str = CONFIG,
               transforms: tuple[str, ...] = ("placement.json.j2", "agency.j2")) -> Path:
    (root / "config.toml").write_text(config)
    (root / "channels").mkdir(exist_ok=True)
    for name, text in channels.items():
        (root / "channels" / name).write_text(text)
    (root / "transforms").mkdir(exist_ok=True)
    for name in transforms:
        (root / "transforms" / name).write_text("{{ msg }}")
    return root / "config.toml"


def problems_of(config: Path, environ: dict | None = None, **kwargs) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config(config, environ=ENV if environ is None else environ, **kwargs)
    return info.value.problems


def only(problems: list[Problem], key: str) -> Problem:
    found = [problem for problem in problems if problem.key == key]
    assert len(found) == 1, f"{key!r} not once in:\n" + "\n".join(map(str, problems))
    return found[0]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a directory that is not the config's, so relative paths cannot lean on the cwd."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


def test_contract_example_loads(elsewhere):
    root = elsewhere / "site"
    root.mkdir()
    config = load_config(write_tree(root, {"ehr.toml": EHR}), environ=ENV)
    root = root.resolve()
    assert config.path == root / "config.toml"
    assert config.engine.channels_dir == root / "channels"
    assert config.engine.transforms_dir == root / "transforms"
    assert config.engine.plugins_dir == root / "plugins"
    assert (config.engine.log_level, config.engine.log_format) == ("info", "text")
    assert config.store.path == root / "var" / "switchboard.db"
    assert config.store.retention == 30 * 86400
    assert config.admin.listen == ("127.0.0.1", 8480)
    assert config.admin.token == ""

    (channel,) = config.channels
    assert config.channel("ehr-placements") is channel
    assert channel.file == root / "channels" / "ehr.toml"
    assert (channel.description, channel.enabled, channel.inbound) == (
        "Aged self-pay balances to the agency", True, "hl7")
    assert channel.source.type == "mllp"
    options = channel.source.options
    assert options["listen"] == ("127.0.0.1", 2575)
    assert options["ack"] == "stored"
    assert options["max_message_size"] == 1024 * 1024
    assert options["idle_timeout"] == 300.0
    assert options["max_connections"] == 100
    assert options["dedupe"] == channel.dedupe == 24 * 3600
    assert options["lenient_end_byte"] is False  # RELIABILITY 3: strict by default
    assert options["tls"] is None

    assert [(f.when, f.use) for f in channel.filters] == [
        ("msg['MSH.9.1'] in ('ADT', 'DFT', 'BAR')", None), (None, "placement-rules")]
    assert channel.filters[1].options == {"min_age_days": 90}
    assert [f.name for f in channel.filters] == ["msg['MSH.9.1'] in ('ADT', 'DFT', 'BAR')", "placement-rules"]
    assert [(t.use, t.template, t.outbound) for t in channel.transforms] == [
        ("minimum-necessary", None, None), (None, "placement.json.j2", "json")]
    assert channel.metadata == {"mrn": "PID.3.1", "account": "PID.18.1"}

    (agency,) = channel.destinations
    assert (agency.name, agency.type) == ("agency-api", "http")
    assert agency.options["url"] == "http://127.0.0.1:9000/placements"
    assert agency.options["method"] == "POST"
    assert agency.options["headers"] == {"Authorization": "Bearer agency-secret"}
    assert agency.options["timeout"] == 10.0
    assert (agency.retry.attempts, agency.retry.interval, agency.retry.backoff, agency.retry.max_interval) == (
        0, 2.0, 2.0, 300.0)
    assert [f.when for f in agency.filters] == ["meta.account != ''"]
    assert [t.template for t in agency.transforms] == ["agency.j2"]


def test_everything_is_frozen(tmp_path):
    config = load_config(write_tree(tmp_path, {"ehr.toml": EHR}), environ=ENV)
    channel = config.channels[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        channel.name = "other"
    with pytest.raises(TypeError):
        channel.source.options["listen"] = ("0.0.0.0", 1)
    with pytest.raises(TypeError):
        channel.destinations[0].options["headers"]["X"] = "y"
    with pytest.raises(TypeError):
        channel.metadata["x"] = "PID.1"
    assert isinstance(config.channels, tuple) and isinstance(channel.destinations, tuple)


def test_missing_tables_mean_defaults(tmp_path):
    config = load_config(write_tree(tmp_path, {"a.toml": mllp()}, config=""), environ={})
    root = tmp_path.resolve()
    assert config.engine.channels_dir == root / "channels"
    assert (config.engine.log_level, config.engine.log_format) == ("info", "text")
    assert config.store.path == root / "var" / "switchboard.db"
    assert config.store.retention == 30 * 86400
    assert (config.admin.listen, config.admin.token) == (("127.0.0.1", 8480), "")
    channel = config.channels[0]
    assert (channel.name, channel.description, channel.enabled) == ("a", "", True)
    assert channel.source.options["max_message_size"] == 1024 * 1024
    assert channel.source.options["idle_timeout"] == 300.0
    assert channel.source.options["split"] == "none"
    assert channel.dedupe == 24 * 3600
    assert channel.filters == channel.transforms == channel.destinations == ()


@pytest.mark.parametrize("source, inbound", [
    ('type = "mllp"\nlisten = "127.0.0.1:0"', "hl7"),
    ('type = "http"\nlisten = "127.0.0.1:0"', "json"),
    ('type = "file"\npath = "inbox"', "hl7"),
    ('type = "channel"', "hl7"),
])
def test_inbound_defaults_from_the_source(tmp_path, source, inbound):
    config = load_config(write_tree(tmp_path, {"c.toml": f"[source]\n{source}\n"}), environ={})
    assert config.channels[0].inbound == inbound


def test_source_options_are_normalized(tmp_path):
    (tmp_path / "certs").mkdir()
    for name in ("server.pem", "server.key", "ca.pem"):
        (tmp_path / "certs" / name).write_text("x")
    channels = {
        "files.toml": '[source]\ntype = "file"\npath = "inbox/ehr"\nsettle = "500ms"\ndedupe = "0"\n'
                      'split = "lines"\nafter = "delete"\n',
        "hook.toml": '[source]\ntype = "http"\nlisten = "[::1]:0"\npath = "/payments"\nmax_body = "512KB"\n'
                     'tls = { cert = "certs/server.pem", key = "certs/server.key", client_ca = "certs/ca.pem" }\n',
    }
    config = load_config(write_tree(tmp_path, channels), environ={})
    files, hook = config.channels
    root = tmp_path.resolve()
    assert files.source.options["path"] == root / "inbox" / "ehr"  # relative to config.toml, not channels/
    assert files.source.options["settle"] == 0.5
    assert files.source.options["pattern"] == "*"
    assert files.dedupe == 0.0
    assert hook.source.options["listen"] == ("::1", 0)
    assert hook.source.options["max_body"] == 512 * 1024
    assert hook.source.options["tls"] == {
        "cert": root / "certs" / "server.pem", "key": root / "certs" / "server.key", "client_ca": root / "certs" / "ca.pem"}


def test_names_default_to_the_stem_in_sorted_order_and_disabled_channels_load(tmp_path):
    channels = {"b.toml": mllp(), "a.toml": mllp(enabled="false"), "c.toml": mllp(name='"third"'),
                ".#a.toml": "editor lock file = ", "notes.txt": "not a channel"}
    config = load_config(write_tree(tmp_path, channels), environ={})
    assert [(c.name, c.enabled) for c in config.channels] == [("a", False), ("b", True), ("third", True)]


def test_missing_config_file_is_one_problem(tmp_path):
    problems = problems_of(tmp_path / "nope.toml")
    assert len(problems) == 1
    assert problems[0].reason == "file not found"
    assert problems[0].file.endswith("nope.toml")


def test_toml_syntax_error_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"good.toml": mllp(1111), "bad.toml": '[source]\ntype = "mllp"\nlisten = \n'})
    problems = problems_of(Path("config.toml"))
    (problem,) = problems
    assert problem.file == str(Path("channels") / "bad.toml")
    assert "line 3" in problem.reason


def test_config_toml_syntax_error(tmp_path):
    problems = problems_of(write_tree(tmp_path, {}, config="[engine\n"))
    assert len(problems) == 1 and "line 1" in problems[0].reason


def test_non_utf8_channel_file(tmp_path):
    config = write_tree(tmp_path, {})
    (tmp_path / "channels" / "latin.toml").write_bytes(b'description = "caf\xe9"\n')
    (problem,) = problems_of(config)
    assert "UTF-8" in problem.reason


def test_problem_text_is_file_key_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"ehr.toml": mllp(70000)})
    with pytest.raises(ConfigError) as info:
        load_config("config.toml", environ={})
    assert str(info.value) == "channels/ehr.toml: source.listen: port 70000 is out of range (0-65535)"


def test_unknown_keys_everywhere_with_suggestions(tmp_path):
    channel = EHR.replace("description =", "descripton =").replace("idle_timeout", "idle_timout") \
        .replace("max_interval", "max_intervl").replace('method = "POST"', 'methd = "POST"') \
        .replace('outbound = "json"', 'outbund = "json"').replace("[[filter]]\nwhen", "[[filter]]\nwhn")
    config = CONFIG.replace("log_level", "log_levl").replace("[admin]", "[admn]")
    problems = problems_of(write_tree(tmp_path, {"ehr.toml": channel}, config=config))
    expected = {
        "engine.log_levl": "log_level", "admn": "admin", "descripton": "description",
        "source.idle_timout": "idle_timeout", "destination[agency-api].retry.max_intervl": "max_interval",
        "destination[agency-api].methd": "method", "transform[2].outbund": "outbound",
    }
    for key, suggestion in expected.items():
        reason = only(problems, key).reason
        assert reason == f"unknown key '{key.rsplit('.', 1)[-1]}' (did you mean '{suggestion}'?)"
    assert "exactly one of 'when'" in only(problems, "filter[1]").reason


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path):
    problems = problems_of(write_tree(tmp_path, {"c.toml": mllp() + "colour = 'blue'\n"}))
    assert "known keys:" in only(problems, "source.colour").reason


def test_wrong_value_types(tmp_path):
    channels = {
        "a.toml": mllp(enabled='"yes"', description="3") + 'max_connections = "many"\ntls = "on"\n'
                  '[metadata]\nmrn = 3\n[[destination]]\nname = "d"\ntype = "http"\nurl = "http://x"\n'
                  'headers = { Authorization = 5 }\nretry = "forever"\n',
        "b.toml": 'source = "mllp"\n',
        "c.toml": mllp() + '[[destination]]\nname = "d"\ntype = "http"\nurl = "ftp://x"\nmethod = "post"\n'
                  'retry = { attempts = -1, backoff = 0.5, interval = "0" }\n',
    }
    problems = problems_of(write_tree(tmp_path, channels))
    by_file = {}
    for problem in problems:
        by_file.setdefault(Path(problem.file).name, {})[problem.key] = problem.reason
    a, b, c = by_file["a.toml"], by_file["b.toml"], by_file["c.toml"]
    assert "true or false" in a["enabled"]
    assert "must be a string, not an integer" == a["description"]
    assert "whole number" in a["source.max_connections"]
    assert "must be a table" in a["source.tls"]
    assert "must be a string" in a["metadata.mrn"]
    assert "must be a string" in a["destination[d].headers.Authorization"]
    assert "must be a table" in a["destination[d].retry"]
    assert "must be a table ([source]), not a string" == b["source"]
    assert "http:// or https://" in c["destination[d].url"]
    assert "one of: POST, PUT, PATCH" in c["destination[d].method"]
    assert "0 or more" in c["destination[d].retry.attempts"]
    assert "1.0 or more" in c["destination[d].retry.backoff"]
    assert "more than 0" in c["destination[d].retry.interval"]


def test_bad_durations_and_sizes(tmp_path):
    channel = mllp() + 'idle_timeout = "10x"\nmax_message_size = "1TB"\ndedupe = "-1h"\n'
    problems = problems_of(write_tree(tmp_path, {"a.toml": channel}, config='[store]\nretention = "forever"\n'))
    assert only(problems, "source.idle_timeout").reason == "'10x' is not a duration; use e.g. 500ms, 10s, 5m, 2h, 30d"
    assert "is not a size" in only(problems, "source.max_message_size").reason
    assert "is not a duration" in only(problems, "source.dedupe").reason
    assert "is not a duration" in only(problems, "store.retention").reason


def test_required_keys_and_sections(tmp_path):
    channels = {"a.toml": '[source]\ntype = "mllp"\n[[destination]]\ntype = "mllp"\n', "b.toml": 'enabled = true\n',
                "c.toml": '[source]\nlisten = "127.0.0.1:0"\n'}
    problems = problems_of(write_tree(tmp_path, channels))
    assert only(problems, "source.listen").reason == "required key is missing"
    assert "needs a name" in only(problems, "destination[1].name").reason
    assert only(problems, "destination[1].connect").reason == "required key is missing"
    assert "needs a [source]" in only(problems, "source").reason
    assert "known source types: channel, file, http, mllp" in only(problems, "source.type").reason


def test_unknown_connector_types_list_the_known_ones(tmp_path):
    channel = '[source]\ntype = "mlp"\nlisten = "x"\n[[destination]]\nname = "d"\ntype = "smtp"\n'
    problems = problems_of(write_tree(tmp_path, {"a.toml": channel}))
    reason = only(problems, "source.type").reason
    assert reason.startswith("unknown source type 'mlp' (known source types: channel, file, http, mllp")
    assert "known destination types: channel, file, http, mllp" in only(problems, "destination[d].type").reason


def test_duplicate_channel_names(tmp_path):
    problems = problems_of(write_tree(tmp_path, {"a.toml": mllp(name='"x"'), "b.toml": mllp(name='"x"')}))
    problem = only(problems, "name")
    assert problem.file.endswith("b.toml") and "'x' is already used by" in problem.reason
    assert "a.toml" in problem.reason


def test_bad_channel_names(tmp_path):
    problems = problems_of(write_tree(tmp_path, {"my channel.toml": mllp(), "b.toml": mllp(name='"a/b"')}))
    assert len([p for p in problems if p.key == "name"]) == 2


@pytest.mark.parametrize("first, second", [
    ('type = "mllp"\nlisten = "127.0.0.1:2575"', 'type = "mllp"\nlisten = "127.0.0.1:2575"'),
    ('type = "mllp"\nlisten = "127.0.0.1:2575"', 'type = "http"\nlisten = "127.0.0.1:2575"'),
    ('type = "mllp"\nlisten = "0.0.0.0:2575"', 'type = "http"\nlisten = "127.0.0.1:2575"'),
])
def test_two_channels_on_one_address(tmp_path, first, second):
    channels = {"a.toml": f"[source]\n{first}\n", "b.toml": f"[source]\n{second}\n"}
    problem = only(problems_of(write_tree(tmp_path, channels)), "source.listen")
    assert problem.file.endswith("b.toml") and "already used by channel 'a'" in problem.reason
    assert problem.reason.startswith("127.0.0.1:2575 is already used")   # issue 14: the address is named


def test_listen_conflicts_that_are_not(tmp_path):
    channels = {"a.toml": mllp(0), "b.toml": mllp(0), "c.toml": mllp(2575), "d.toml": mllp(2575, enabled="false"),
                "e.toml": '[source]\ntype = "mllp"\nlisten = "127.0.0.2:2575"\n'}
    assert len(load_config(write_tree(tmp_path, channels), environ={}).channels) == 5


def test_channel_listening_on_the_admin_address(tmp_path):
    problem = only(problems_of(write_tree(tmp_path, {"a.toml": mllp(8480)})), "source.listen")
    assert "admin.listen" in problem.reason


def test_duplicate_destination_names(tmp_path):
    destination = '[[destination]]\nname = "out"\ntype = "file"\ndirectory = "outbox"\n'
    problems = problems_of(write_tree(tmp_path, {"a.toml": mllp() + destination * 2}))
    assert "used twice" in only(problems, "destination[out].name").reason


@pytest.mark.parametrize("filter_table", ['when = "true"\nuse = "rules"', 'min_age_days = 90'])
def test_filter_needs_exactly_one_of_when_and_use(tmp_path, filter_table):
    channel = mllp() + f"[[filter]]\n{filter_table}\n"
    problem = only(problems_of(write_tree(tmp_path, {"a.toml": channel})), "filter[1]")
    assert "exactly one of 'when'" in problem.reason


def test_transform_steps(tmp_path):
    channel = mllp() + ('[[transform]]\ntemplate = "a.j2"\ninline = "{{ msg }}"\n'
                        '[[transform]]\noutbound = "json"\n'
                        '[[transform]]\ntemplate = "missing.j2"\n'
                        '[[transform]]\ntemplate = "../config.toml"\n'
                        '[[transform]]\ninline = "{{ msg }}"\noutbound = "yaml"\n')
    problems = problems_of(write_tree(tmp_path, {"a.toml": channel}))
    assert only(problems, "transform[1]").reason.endswith("not template and inline")
    assert "exactly one of 'use', 'template' or 'inline'" in only(problems, "transform[2]").reason
    assert "'missing.j2' not found in" in only(problems, "transform[3].template").reason
    assert "must be inside" in only(problems, "transform[4].template").reason
    assert "one of: hl7, json, csv, xml, text" in only(problems, "transform[5].outbound").reason


def test_single_transform_table_and_plugin_options(tmp_path):
    channel = mllp() + '[transform]\nuse = "minimum-necessary"\nkeep = ["PID", "PV1"]\noutbound = "hl7"\n'
    (step,) = load_config(write_tree(tmp_path, {"a.toml": channel}), environ={}).channels[0].transforms
    assert (step.use, step.outbound, step.name) == ("minimum-necessary", "hl7", "minimum-necessary")
    assert step.options == {"keep": ("PID", "PV1")}


def test_bad_inbound_and_metadata_names(tmp_path):
    channel = mllp(inbound='"hl8"') + '[metadata]\n"account number" = "PID.18.1"\n'
    problems = problems_of(write_tree(tmp_path, {"a.toml": channel}))
    assert "one of: hl7, json, csv, xml, text" in only(problems, "inbound").reason
    assert "cannot be a metadata name" in only(problems, "metadata.account number").reason


def test_channel_destinations(tmp_path):
    to = '[[destination]]\nname = "next"\ntype = "channel"\nchannel = "{}"\n'
    channels = {"a.toml": mllp() + to.format("b"), "b.toml": '[source]\ntype = "channel"\n'}
    config = load_config(write_tree(tmp_path, channels), environ={})
    assert config.channel("a").destinations[0].options["channel"] == "b"

    channels = {"a.toml": mllp() + to.format("nowhere"), "b.toml": mllp() + to.format("b"),
                "c.toml": mllp() + to.format("a")}
    problems = {Path(p.file).name: p.reason for p in problems_of(write_tree(tmp_path, channels))}
    assert "no channel is named 'nowhere'" in problems["a.toml"]
    assert "cannot send to itself" in problems["b.toml"]
    assert "its source type is 'mllp', not 'channel'" in problems["c.toml"]


def test_destination_specific_checks(tmp_path):
    (tmp_path / "client.pem").write_text("x")
    channel = mllp() + ('[[destination]]\nname = "m"\ntype = "mllp"\nconnect = "10.0.0.1:0"\n'
                        'tls = { cert = "client.pem", verify = false }\n'
                        'retry = { interval = "10m", max_interval = "1m" }\n'
                        '[[destination]]\nname = "t"\ntype = "mllp"\nconnect = "10.0.0.1:6661"\n'
                        'tls = { ca = "missing-ca.pem" }\nmax_in_flight = 0\n')
    problems = problems_of(write_tree(tmp_path, {"a.toml": channel}))
    assert "port 0 only makes sense for listening" in only(problems, "destination[m].connect").reason
    assert "cert and key go together" in only(problems, "destination[m].tls").reason
    assert "must not be shorter than interval" in only(problems, "destination[m].retry.max_interval").reason
    assert "file not found" in only(problems, "destination[t].tls.ca").reason
    assert only(problems, "destination[t].max_in_flight").reason == "must be 1 to 64"


def test_source_tls_needs_cert_and_key(tmp_path):
    channel = mllp() + 'tls = { cert = "nowhere.pem", kye = "x" }\n'
    problems = problems_of(write_tree(tmp_path, {"a.toml": channel}))
    assert "file not found" in only(problems, "source.tls.cert").reason
    assert only(problems, "source.tls.key").reason == "required key is missing"
    assert "did you mean 'key'" in only(problems, "source.tls.kye").reason


def test_engine_choices_and_missing_channels_dir(tmp_path):
    config = '[engine]\nlog_level = "verbose"\nlog_format = "xml"\nchannels_dir = "chans"\n[admin]\nlisten = "x"\n'
    problems = problems_of(write_tree(tmp_path, {}, config=config))
    assert "one of: debug, info, warning, error" in only(problems, "engine.log_level").reason
    assert "one of: text, json" in only(problems, "engine.log_format").reason
    assert "directory not found" in only(problems, "engine.channels_dir").reason
    assert "has no port" in only(problems, "admin.listen").reason


def test_many_problems_are_all_reported_at_once(tmp_path):
    channels = {
        "a.toml": mllp(2575) + 'idle_timeout = "soon"\n[[filter]]\nwhen = "x"\nuse = "y"\n',
        "b.toml": mllp(2575, name='"a"', inbound='"yaml"') + '[[destination]]\nname = "d"\ntype = "carrier-pigeon"\n',
        "c.toml": "[source\n",
        "d.toml": '[source]\ntype = "file"\n[[destination]]\nname = "x"\ntype = "channel"\nchannel = "ghost"\n',
    }
    problems = problems_of(write_tree(tmp_path, channels, config=CONFIG.replace('"text"', '"yaml"')), environ={})
    keys = {(Path(p.file).name, p.key) for p in problems}
    assert keys >= {
        ("config.toml", "engine.log_format"), ("a.toml", "source.idle_timeout"), ("a.toml", "filter[1]"),
        ("b.toml", "name"), ("b.toml", "inbound"), ("b.toml", "destination[d].type"), ("c.toml", ""),
        ("d.toml", "source.path"), ("d.toml", "destination[x].channel"),
    }
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "config.toml", environ={})
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]


def test_environment_substitution(tmp_path):
    config = '[admin]\nlisten = "${ADMIN_HOST:-127.0.0.1}:${ADMIN_PORT:-9999}"\ntoken = "${TOKEN}"\n'
    channel = mllp() + ('max_connections = "${MAX_CONN:-7}"\n[[transform]]\ninline = "cost: $${price}"\n'
                        '[[destination]]\nname = "d"\ntype = "http"\nurl = "${AGENCY_URL:-http://127.0.0.1:9000/}"\n'
                        'headers = { Authorization = "Bearer ${AGENCY_TOKEN}" }\n')
    path = write_tree(tmp_path, {"a.toml": channel}, config=config)
    environ = {"ADMIN_PORT": "8481", "TOKEN": "admin-token", "AGENCY_TOKEN": "t", "AGENCY_URL": ""}
    loaded = load_config(path, environ=environ)
    assert (loaded.admin.listen, loaded.admin.token) == (("127.0.0.1", 8481), "admin-token")
    channel = loaded.channels[0]
    assert channel.source.options["max_connections"] == 7
    assert channel.transforms[0].inline == "cost: ${price}"
    destination = channel.destinations[0]
    assert destination.options["url"] == "http://127.0.0.1:9000/"  # empty, like unset, takes the default
    assert destination.options["headers"]["Authorization"] == "Bearer t"


def test_undefined_variable_names_the_key_and_the_variable(tmp_path):
    config = write_tree(tmp_path, {"a.toml": mllp() + 'ack = "${ACK_MODE}"\n'}, config='[admin]\ntoken = "${TOKEN}"\n')
    problems = problems_of(config, environ={})
    assert len(problems) == 2  # one each, and no second complaint about the empty value
    assert "${TOKEN} is not set" in only(problems, "admin.token").reason
    assert "${ACK_MODE} is not set" in only(problems, "source.ack").reason


def test_malformed_substitution(tmp_path):
    problems = problems_of(write_tree(tmp_path, {"a.toml": mllp(description='"a ${b c"')}))
    assert "write $${ for a literal" in only(problems, "description").reason


def test_secrets_never_appear_in_problems(tmp_path):
    secret = "s3cr3t-70000-zz"
    channel = ('[source]\ntype = "mllp"\nlisten = "${SECRET}"\nack = "${SECRET}"\nidle_timeout = "${SECRET}"\n'
               'max_message_size = "${SECRET}"\nmax_connections = "${SECRET}"\nlenient_end_byte = "${SECRET}"\n'
               'tls = { cert = "${SECRET}", key = "${SECRET}" }\n'
               '[[destination]]\nname = "d"\ntype = "${SECRET}"\n'
               '[[destination]]\nname = "e"\ntype = "http"\nurl = "http://x/"\nretry = { interval = "${SECRET}" }\n')
    problems = problems_of(write_tree(tmp_path, {"a.toml": channel}), environ={"SECRET": secret})
    assert len(problems) >= 10
    text = "\n".join(map(str, problems))
    assert secret not in text and "s3cr3t" not in text and "70000" not in text
    assert all("${SECRET}" in p.reason for p in problems)


def test_plugin_connector_types(tmp_path):
    options = ConnectorOptions.builtin()
    options.register("source", "sftp", {"host": OptionSpec("address", required=True),
                                        "poll": OptionSpec("duration", "1m")}, inbound="csv")
    channel = '[source]\ntype = "sftp"\nhost = "files.example.org:22"\n'
    config = load_config(write_tree(tmp_path, {"a.toml": channel}), environ={}, connector_options=options)
    source = config.channels[0].source
    assert (source.type, source.options["host"], source.options["poll"]) == ("sftp", ("files.example.org", 22), 60.0)
    assert config.channels[0].inbound == "csv"

    (tmp_path / "channels" / "a.toml").write_text('[source]\ntype = "sftp"\nhots = "x:1"\n')
    problems = problems_of(tmp_path / "config.toml", connector_options=options)
    assert "did you mean 'host'" in only(problems, "source.hots").reason
    assert "known source types: channel, file, http, mllp" in only(
        problems_of(tmp_path / "config.toml"), "source.type").reason  # without the plugin it is unknown


def test_register_rejects_mistakes():
    options = ConnectorOptions.builtin()
    with pytest.raises(ValueError, match="already registered"):
        options.register("source", "mllp", {})
    with pytest.raises(ValueError, match="side"):
        options.register("sink", "x", {})
    with pytest.raises(ValueError):
        options.register("destination", "x", {"name": OptionSpec("str")})
    with pytest.raises(ValueError, match="unknown option kind"):
        OptionSpec("colour")
