"""The security pass (RELIABILITY "Security", DESIGN §5): what the package may never contain, the
sandbox escapes it must refuse, its dependency ranges, the admin token, and PHI in logs.

* Static rules over every ``.py`` under engine/ and plugins/, read with ``ast`` (so comments and
  docstrings that *mention* pickle do not count): no pickle/marshal/shelve, no eval/exec/compile,
  no ``yaml.load``, no shell=True or os.system, no non-sandboxed Jinja environment outside a short
  list of reviewed ones, every XML parse behind the DTD guard, and no ``==``/``in`` on a secret
  (tokens, passwords, CSRF values): those go through ``hmac.compare_digest``.
* The known Jinja sandbox escapes, through ``engine.templates.Templates``: attribute walks to
  ``__class__``/``__mro__``/``__subclasses__``/``__globals__``, the str.format family including
  the CVE-2024-56326 (stored ``.format``) and CVE-2025-27516 (``|attr('format')``) shapes, and
  ``range(10**9)``.  (tests/unit/core/test_templates.py holds the first set; these are the rest.)
* Dependencies: every one pinned to a range with both bounds, floors above the known CVEs, and
  the installed versions inside them.
* The admin token: none shipped, generated at first start when empty, compared in constant time,
  and checked before a byte of a request body is read.
* A marker: one daemon at ``log_level = "debug"`` with MLLP, HTTP and file sources, failing
  templates, refusing/failing/echoing destinations and bad input of every kind; the marker rides
  in several fields of every message and never appears in a log line or in ``switchboard status``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import stat
import threading
import time
import tomllib
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from support.daemon import ROOT, Daemon, MllpClient, MllpPeer, api_call, control_id_of, free_port, hl7, wait_for

from engine.config.schema import ADMIN, TLS_CLIENT
from engine.hl7.view import HL7View
from engine.core.message import MessageParseError, parse_inbound
from engine.core.templates import TemplateError, Templates

PACKAGE_DIRS = (ROOT / "engine", ROOT / "plugins")


def package_sources() -> list[tuple[Path, ast.Module]]:
    found = []
    for directory in PACKAGE_DIRS:
        for path in sorted(directory.rglob("*.py")):
            if "__pycache__" not in path.parts:
                found.append((path, ast.parse(path.read_text(encoding="utf-8"), str(path))))
    assert len(found) > 40, "the scan found too few modules: is ROOT right?"
    return found


SOURCES = package_sources()


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def imported_modules(tree: ast.Module) -> dict[str, str]:
    """Local name -> module (``import xml.etree.ElementTree as ET`` -> {'ET': 'xml.etree.ElementTree'})."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def calls(tree: ast.Module):
    """(call node, the called name resolved through the module's imports)."""
    modules = imported_modules(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            head, _, rest = name.partition(".")
            yield node, (modules[head] + ("." + rest if rest else "")) if head in modules else name


# -- static rules -----------------------------------------------------------------------------------

BANNED_MODULES = ("pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "jsonpickle")
BANNED_CALLS = {
    "eval", "exec", "compile", "__import__", "os.system", "os.popen", "os.execv", "os.execl", "os.spawnl",
    "pty.spawn", "tempfile.mktemp", "yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load",
    "yaml.unsafe_load_all", "ssl._create_unverified_context",
}


def test_no_pickle_marshal_or_shelve_anywhere():
    found = []
    for path, tree in SOURCES:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(rel(path), a.name) for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] in BANNED_MODULES:
                    found.append((rel(path), node.module))
    assert found == []


def test_no_eval_exec_yaml_load_or_shell_anywhere():
    found = []
    for path, tree in SOURCES:
        for node, name in calls(tree):
            if name in BANNED_CALLS or name.startswith("os.exec") or name.startswith("os.spawn"):
                found.append((rel(path), node.lineno, name))
            if name.startswith("subprocess.") and any(
                    k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords):
                found.append((rel(path), node.lineno, f"{name}(shell=...)"))
    assert found == []


def test_the_ban_list_catches_what_it_bans():
    tree = ast.parse("import yaml, os\nimport subprocess as sp\nyaml.load(x)\neval('1')\nos.system('x')\n"
                     "sp.run('x', shell=True)\n")
    names = [name for _node, name in calls(tree)]
    assert {"yaml.load", "eval", "os.system"} <= set(names) and "subprocess.run" in names


XML_PARSERS = {"fromstring", "fromstringlist", "parse", "XML", "iterparse", "XMLParser", "XMLPullParser",
               "parseString", "ParserCreate", "make_parser", "XMLID"}
XML_MODULES = ("xml", "lxml", "defusedxml")


def test_every_xml_parse_is_behind_the_dtd_guard():
    sites = []
    for path, tree in SOURCES:
        for node, name in calls(tree):
            if name.split(".")[0] in XML_MODULES and name.rsplit(".", 1)[-1] in XML_PARSERS:
                sites.append((path, tree, node, name))
    assert sites, "no XML parse found at all: the scan is broken (engine/core/message.py parses XML)"
    for path, tree, node, name in sites:
        function = enclosing_function(tree, node)
        assert function is not None, f"{rel(path)}:{node.lineno} parses XML outside a function"
        guards = [n for n in ast.walk(function) if isinstance(n, ast.Call) and dotted(n.func) == "_DTD.search"
                  and n.lineno < node.lineno]
        assert guards, f"{rel(path)}:{node.lineno} {name} is not preceded by the _DTD guard in {function.name}"


def enclosing_function(tree: ast.Module, target: ast.AST):
    best = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(n is target for n in ast.walk(node)):
            if best is None or node.lineno > best.lineno:
                best = node
    return best


@pytest.mark.parametrize("document", [
    '<!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>',
    '<?xml version="1.0"?>\n<!doctype r SYSTEM "file:///etc/passwd"><r/>',
    '<r/><!ENTITY x "late">',
    '<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><r>&b;</r>',
    '\ufeff<!DOCTYPE r><r/>',
])
def test_the_dtd_guard_refuses_every_dtd_shape(document):
    with pytest.raises(MessageParseError, match="DTD"):
        parse_inbound(document, "xml")


SECRET_NAME = re.compile(r"token|secret|passw|api_?key|csrf|credential", re.IGNORECASE)


def secret_operand(node: ast.AST) -> str | None:
    name = dotted(node) or (dotted(node.value) if isinstance(node, ast.Subscript) else "")
    return name if name and SECRET_NAME.search(name.rsplit(".", 1)[-1]) else None


def secret_comparisons(tree: ast.AST) -> list[tuple[int, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value in (None, "", b"") for o in operands):
                continue                                         # "is it set at all?" reveals nothing
            named = [name for name in map(secret_operand, operands) if name]
            if named:
                found.append((node.lineno, named))
    return found


def test_secrets_are_never_compared_with_eq_or_in():
    found = [(rel(path), *hit) for path, tree in SOURCES for hit in secret_comparisons(tree)]
    assert found == []


def test_the_secret_rule_catches_what_it_should():
    flagged = secret_comparisons(ast.parse(
        "a = presented == self.token\nb = csrf_value != form['csrf']\nc = key in api_keys\n"
        "d = self.token is None\ne = token == ''\nf = name == 'x'\n"))
    assert [line for line, _names in flagged] == [1, 2, 3]


def test_token_checks_use_compare_digest():
    users = {rel(path) for path, tree in SOURCES for _node, name in calls(tree) if name == "hmac.compare_digest"}
    assert {"engine/admin/auth.py", "engine/connectors/http/source.py"} <= users
    auth = next(tree for path, tree in SOURCES if rel(path) == "engine/admin/auth.py")
    who = next(n for n in ast.walk(auth) if isinstance(n, ast.FunctionDef) and n.name == "who")
    assert any(name == "hmac.compare_digest" for _node, name in calls(ast.Module(body=[who], type_ignores=[])))


# Reviewed non-sandboxed Jinja environments: our own HTML pages (autoescape, files shipped in the
# package, never config or message content) and a parse-only environment (nothing is rendered).
PLAIN_JINJA_ALLOWED = {"engine/admin/dashboard.py": "autoescape", "engine/runtime/reload_plan.py": "parse-only"}


def test_no_unsandboxed_jinja_environment_renders_config_or_data():
    found = {}
    for path, tree in SOURCES:
        for node, name in calls(tree):
            if name in ("jinja2.Environment", "jinja2.Template", "jinja2.environment.Environment",
                        "jinja2.nativetypes.NativeEnvironment"):
                found.setdefault(rel(path), []).append(node)
    assert set(found) <= set(PLAIN_JINJA_ALLOWED), found
    for module, nodes in found.items():
        tree = next(t for p, t in SOURCES if rel(p) == module)
        if PLAIN_JINJA_ALLOWED[module] == "autoescape":
            assert all(any(k.arg == "autoescape" and getattr(k.value, "value", None) is True for k in n.keywords)
                       for n in nodes), module
        else:
            methods = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call)
                       and isinstance(n.func, ast.Attribute)}
            assert not methods & {"from_string", "compile", "compile_expression", "get_template", "render"}, module
        assert not any(dotted(n.func).endswith("from_string") for n in ast.walk(tree) if isinstance(n, ast.Call))


def test_tls_clients_verify_peers_by_default():
    assert TLS_CLIENT["verify"].default is True


# -- Jinja sandbox escapes ------------------------------------------------------------------------

REFUSED = "unsafe operation refused by the sandbox"
MSG = HL7View("MSH|^~\\&|EHR|HOSP|SWB|AG|20240101||ADT^A08|X1|P|2.5\rPID|1||M1^^^H^MR||DOE^JANE")


@pytest.mark.parametrize("source, reason", [
    ("{{ '{a.__class__}'.format_map({'a': msg}) }}", REFUSED),                        # str.format_map
    ("{% set f = '{0.__class__.__mro__}'|attr('format') %}{{ f(msg) }}", REFUSED),    # CVE-2025-27516
    ("{% set f = '{0.__class__}'.format %}{{ f(msg) }}", REFUSED),                    # CVE-2024-56326
    ("{{ '{0.text.__class__}'.format(msg) }}", REFUSED),
    ("{{ msg|attr('__class__') }}", REFUSED),
    ("{{ ().__class__.__base__.__subclasses__() }}", REFUSED),
    ("{{ [].__class__.__mro__ }}", REFUSED),
    ("{{ lipsum.__globals__ }}", "'lipsum' is undefined"),   # removed from the globals altogether
    ("{{ range.__globals__ }}", REFUSED),
    ("{{ namespace.__init__.__globals__ }}", REFUSED),
    ("{{ self.__init__.__globals__ }}", REFUSED),
    ("{{ msg.get.__func__ }}", REFUSED),
    ("{{ msg.segments|attr('__self__') }}", REFUSED),
    ("{{ ''.join.__self__ }}", REFUSED),
    ("{{ msg.__reduce_ex__(2) }}", REFUSED),
    ("{{ joiner()|attr('__call__') }}", REFUSED),
    ("{{ msg._segments }}", REFUSED),                                                 # private state
    ("{{ range(10**9)|list }}", "OverflowError"),                                     # MAX_RANGE
    ("{% for i in range(10**9) %}{% endfor %}", "OverflowError"),
])
def test_known_sandbox_escapes_are_refused(source, reason):
    compiled = Templates(None).from_string(source, "escape.j2")
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        compiled.render({"msg": MSG})
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert time.monotonic() - started < 1.0


# -- dependencies -----------------------------------------------------------------------------------

FLOORS = {  # the first version without the named advisories
    "jinja2": ("3.1.6", "CVE-2024-56201, CVE-2024-56326, CVE-2025-27516 (sandbox escapes)"),
    "twisted": ("24.7", "CVE-2024-41671 (HTTP pipelining order), CVE-2024-41810 (redirectTo XSS)"),
    "paramiko": ("3.4", "CVE-2023-48795 (Terrapin)"),
    "setuptools": ("78.1.1", "CVE-2025-47273 (build requirement)"),
}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def all_requirements() -> list[Requirement]:
    data = project()
    texts = [*data["project"]["dependencies"], *data["build-system"]["requires"]]
    for group in data["project"].get("optional-dependencies", {}).values():
        texts += group
    return [Requirement(text) for text in texts]


def test_every_dependency_has_a_lower_and_an_upper_bound():
    for requirement in all_requirements():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators & {">=", ">", "~=", "=="}, f"{requirement} has no lower bound"
        assert operators & {"<", "<=", "~=", "=="}, f"{requirement} has no upper bound"


def test_dependency_floors_exclude_known_vulnerable_versions():
    by_name = {r.name.lower(): r for r in all_requirements()}
    for name, (floor, advisories) in FLOORS.items():
        requirement = by_name[name]
        lowest = min(Version(s.version) for s in requirement.specifier if s.operator in (">=", "~=", "=="))
        assert lowest >= Version(floor), f"{requirement}: {advisories} are fixed in {floor}"


def test_installed_versions_are_inside_the_pinned_ranges():
    for requirement in all_requirements():
        if requirement.name.lower() == "setuptools":
            continue                                  # a build requirement, not installed in the venv
        installed = version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), f"{requirement.name} {installed}"


# -- the admin token ------------------------------------------------------------------------------

def test_no_token_is_shipped():
    assert ADMIN["token"].default == "" and dict(ADMIN["tokens"].default or {}) == {}
    shipped = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))
    assert shipped["admin"]["token"] == "${SWITCHBOARD_TOKEN:-}"        # empty unless the site sets one
    for path in [ROOT / "config.toml", *sorted((ROOT / "channels").glob("*.toml"))]:
        for key, value in re.findall(r'^\s*(\w*token\w*)\s*=\s*"([^"]*)"', path.read_text(), re.MULTILINE):
            assert re.fullmatch(r"\$\{[A-Z_]+(:-)?\}", value), f"{path.name}: {key} ships a value"


# -- the marker: never in a log line ----------------------------------------------------------------

MARKER = "ZQMARK" + uuid.uuid4().hex[:12].upper()
HTTP_TOKEN = "security-hook-token"


class EchoingHttp(BaseHTTPRequestHandler):
    """A destination that fails with 500 and quotes the request body in its answer."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        answer = b'{"error": "cannot take ' + body[:200].replace(b'"', b"'") + b'"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def quoting_nak(payload: bytes) -> bytes:
    """An AE that quotes the message's fields back in MSA-3 and ERR (peers do this)."""
    control_id = control_id_of(payload)
    text = payload.decode("utf-8", "replace").replace("\r", " ")[:300].replace("|", " ")
    return (f"MSH|^~\\&|PEER|PEER|SWB|SWB|20240101||ACK|N{control_id}|P|2.5\r"
            f"MSA|AE|{control_id}|rejected {text}\rERR|||207|E|||{text}").encode()


def echo_whole_message(payload: bytes) -> bytes:
    return payload                                     # a loopback "ACK": the message itself


FAILING = ("{% if msg['PID.18.1'] == 'FAIL-FMT' %}{{ ('{' ~ msg['PID.5.1'] ~ '}').format() }}"
           "{% elif msg['PID.18.1'] == 'FAIL-KEY' %}{{ {'a': 1}[msg['PID.3.1']] }}"
           "{% elif msg['PID.18.1'] == 'FAIL-ATTR' %}{{ msg['PID.5.1'].nope }}"
           "{% elif msg['PID.18.1'] == 'FAIL-JSON' %}{not json {{ msg['PID.3.1'] }}"
           "{% else %}{\"mrn\": {{ msg['PID.3.1'] | tojson }}}{% endif %}\n")


def marked(control_id: str, account: str = "ACC") -> str:
    return hl7(control_id, mrn=MARKER, account=account,
               extra=f"NTE|1||note {MARKER}").replace("DOE^JANE", f"{MARKER}^JANE")


@pytest.fixture(scope="module")
def marked_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingHttp)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    nak_peer = MllpPeer(quoting_nak)
    echo_peer = MllpPeer(echo_whole_message)
    retry = 'retry = { interval = "100ms", backoff = 1.0, max_interval = "100ms", attempts = 3 }'
    mllp_in = f"""
[source]
type = "mllp"
listen = "127.0.0.1:0"
idle_timeout = "1s"
max_message_size = "16KB"

[metadata]
mrn = "PID.3.1"
name = "PID.5.1"

[[filter]]
when = "msg['PID.18.1'] != 'DROP'"

[[transform]]
template = "failing.json.j2"
outbound = "json"

[[destination]]
name = "nak"
type = "mllp"
connect = "127.0.0.1:{nak_peer.port}"
  [destination.transform]
  inline = "{{{{ raw }}}}"

[[destination]]
name = "echo"
type = "mllp"
connect = "127.0.0.1:{echo_peer.port}"
{retry}
  [destination.transform]
  inline = "{{{{ raw }}}}"

[[destination]]
name = "down"
type = "mllp"
connect = "127.0.0.1:{free_port()}"
{retry}

[[destination]]
name = "http500"
type = "http"
url = "http://127.0.0.1:{http_server.server_address[1]}/in"
{retry}

[[destination]]
name = "files"
type = "file"
directory = "outbox"
filename = "{{{{ meta.name }}}}/{{{{ id }}}}.json"
"""
    http_in = (f'inbound = "json"\n[source]\ntype = "http"\nlisten = "127.0.0.1:0"\npath = "/in"\n'
               f'token = "{HTTP_TOKEN}"\nmax_body = "4KB"\n[metadata]\nmrn = "mrn"\n')
    files_in = '[source]\ntype = "file"\npath = "inbox"\npattern = "*.hl7"\nsettle = "100ms"\npoll_interval = "1s"\n'
    daemon = Daemon(root / "d", {"m-mllp": mllp_in, "m-http": http_in, "m-file": files_in},
                    templates={"failing.json.j2": FAILING})
    config = daemon.config.read_text()
    daemon.config.write_text(config.replace('token = "test-token"\n', ""))   # no token: one is generated
    (daemon.root / "inbox").mkdir()
    daemon.start(expect_channels=2)
    token = (daemon.root / "var" / "admin.token").read_text().strip()
    try:
        yield daemon, token
    finally:
        daemon.stop()
        http_server.shutdown()
        http_server.server_close()
        nak_peer.close()
        echo_peer.close()


def send_marked_traffic(daemon: Daemon) -> None:
    client = MllpClient(daemon.ports["m-mllp"])
    for number, account in enumerate(["OK", "FAIL-FMT", "FAIL-KEY", "FAIL-ATTR", "FAIL-JSON", "DROP"]):
        assert client.request(marked(f"SEC-{number}", account))["code"] == "AA"
    assert client.request(marked("SEC-0", "OK"))["code"] == "AA"                       # a duplicate
    assert client.request(marked("")[:200])["code"] == "AR"                             # no MSH-10 / short
    assert client.request(marked("SEC-VT").replace("PID|", "PID|\x0b"))["code"] == "AR"  # 0x0B inside
    batch = "\r".join(["FHS|^~\\&|" + MARKER, "BHS|^~\\&", marked("SEC-B1"), "BTS|1", "FTS|1"])
    assert client.request(batch)["code"] == "AR"                                        # a batch, not split
    client.close()
    junk = MllpClient(daemon.ports["m-mllp"])
    junk.send_raw(f"junk {MARKER} before a frame".encode() + b"\x0b" + marked("SEC-J").encode() + b"\x1c\x0d")
    assert junk.read_frame()
    junk.send_raw(b"\x0b" + marked("SEC-BAD").encode() + b"\x1cX")                    # bad end byte
    junk.closed_by_peer(5)
    junk.close()
    big = MllpClient(daemon.ports["m-mllp"])
    big.send_raw(b"\x0b" + (marked("SEC-BIG") + "\rNTE|" + MARKER * 2000).encode())  # over 16 KB
    big.closed_by_peer(5)
    big.close()
    partial = MllpClient(daemon.ports["m-mllp"])
    partial.send_raw(b"\x0b" + marked("SEC-PART").encode()[:150])                     # left to time out
    partial.closed_by_peer(5)
    partial.close()
    port = daemon.ports["m-http"]
    for body, token in ((json.dumps({"mrn": MARKER, "note": MARKER}), HTTP_TOKEN),
                        ('{"mrn": "' + MARKER + '", broken', HTTP_TOKEN),
                        (json.dumps({"mrn": MARKER}), MARKER)):                         # the marker as a token
        conn_socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        data = body.encode()
        conn_socket.sendall((f"POST /in?mrn={MARKER} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                             f"X-Patient: {MARKER}\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
        assert conn_socket.recv(65536).startswith(b"HTTP/1.1 ")
        conn_socket.close()
    staging = daemon.root / "staging"
    staging.mkdir()
    for name, content in (("good.hl7", marked("SEC-FILE")), ("bad.hl7", f"not hl7 {MARKER}")):
        (staging / name).write_text(content)
        os.replace(staging / name, daemon.root / "inbox" / name)


def test_generated_admin_token_is_private_and_required(marked_world):
    daemon, token = marked_world
    path = daemon.root / "var" / "admin.token"
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api_call(daemon.admin_port, "GET", "/api/channels", token=token)[0] == 200
    assert api_call(daemon.admin_port, "GET", "/healthz", token=None)[0] == 200
    for path_, method in (("/api/channels", "GET"), ("/api/messages", "GET"), ("/metrics", "GET"),
                          ("/api/replay", "POST"), ("/api/channels/m-mllp/stop", "POST")):
        for presented in (None, "", "test-token", token + "x", token[:-1]):
            status, _body = api_call(daemon.admin_port, method, path_, {} if method == "POST" else None,
                                     token=presented)
            assert status == 401, (path_, method, presented)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic YWRtaW46YWRtaW4="])
def test_admin_refuses_before_reading_the_body(marked_world, authorization):
    daemon, _token = marked_world
    sock = socket.create_connection(("127.0.0.1", daemon.admin_port), timeout=10)
    head = "POST /api/replay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n"
    if authorization:
        head += f"Authorization: {authorization}\r\n"
    sock.sendall((head + "\r\n").encode())                  # the 50 MB body is never sent
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 401 ")


def test_marker_never_in_a_log_line_or_in_status(marked_world):
    daemon, token = marked_world
    send_marked_traffic(daemon)
    wait_for(lambda: (daemon.root / "inbox" / "done" / "good.hl7").exists()
             and (daemon.root / "inbox" / "error" / "bad.hl7.reason").exists(), what="both files handled")
    # every retrying destination has given up (attempts = 3) and the failures were logged
    wait_for(lambda: sum("gave up after 3 attempts" in line for line in daemon.log_lines) >= 3, timeout=20,
             what="the retrying destinations to give up")
    status, listed = api_call(daemon.admin_port, "GET", "/api/messages?limit=100", token=token)
    assert status == 200 and any(MARKER in json.dumps(m["meta"]) for m in listed)   # it is in the store...
    for args in (("status",), ("status", "--json")):
        shown = daemon.cli(*args)
        assert shown.returncode == 0 and MARKER not in shown.stdout + shown.stderr
    assert daemon.stop() == 0
    assert any("ERROR" in line for line in daemon.log_lines)                          # errors were logged
    leaked = [line for line in daemon.log_lines if MARKER in line or MARKER.lower() in line.lower()]
    assert leaked == [], "\n".join(leaked[:5])                                         # ...never in the log
    assert token not in daemon.log and HTTP_TOKEN not in daemon.log
