"""Users and roles through the real daemon (DESIGN §3.12, docs/users-and-roles.md).

The role table: every route of the admin listener -- walked from the router itself (the API's
resource tree with its ``examples`` children, the dashboard's handlers with their ``EXAMPLES``), so a
new route cannot skip it -- is called by every kind of user (viewer, operator, admin, each with
and without ``phi``, and the ``[admin] token``); a route the user may not use answers 403 with a
sentence naming the user, one it may never answers 401 or 403.  A user without ``phi`` never sees
the message's content in any answer.  The audit log names the user; ``switchboard audit --user``
finds their entries; the dashboard signs in by name and password."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlencode

import pytest

from engine.admin import dashboard as dashboard_module
from engine.admin.api import Endpoint, NotFound, Refused, build_root
from engine.admin.dashboard import EXAMPLES, Dashboard, Favicon, Route, Static
from engine.admin.roles import User, allowed, need_for
from support.daemon import ADMIN_TOKEN, Daemon, MllpClient, hl7, wait_for
from support.daemon import http_call as call

pytestmark = pytest.mark.slow

SECRET = "ZYXSECRETNAME"          # in PID-5: content, never in metadata
PASSWORD = "correct horse battery staple"
CHANNEL = """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[transform]]
edit = [{ set = "MSH.5", value = "LAB" }]

[metadata]
mrn = "PID.3.1"

[[destination]]
name = "files"
type = "file"
directory = "outbox"
"""
KINDS = [(role, phi) for role in ("viewer", "operator", "admin") for phi in (False, True)]


def token_of(role: str, phi: bool) -> str:
    return f"token-{role}-{'phi' if phi else 'nophi'}-0123456789"


def users_toml() -> str:
    from argon2 import PasswordHasher

    blocks = []
    for role, phi in KINDS:
        name = f"{role}-{'phi' if phi else 'nophi'}"
        digest = hashlib.sha256(token_of(role, phi).encode()).hexdigest()
        blocks.append(f'[[admin.user]]\nname = "{name}"\nrole = "{role}"\nphi = {str(phi).lower()}\n'
                      f'token_sha256 = "{digest}"\n')
    blocks.append(f'[[admin.user]]\nname = "maria"\nrole = "viewer"\npassword = "{PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)}"\n')
    return "\n".join(blocks)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("users")
    daemon = Daemon(root / "d", {"intake": CHANNEL}, extra_config=users_toml())
    daemon.start(1)
    client = MllpClient(daemon.ports["intake"])
    assert client.request(hl7("U-1", mrn="M1", extra=f"NTE|1||{SECRET}"))["code"] == "AA"
    client.close()
    wait_for(lambda: daemon.api("GET", "/api/channels/intake")[1]["sent"] == 1, what="the message delivered")
    message_id = daemon.api("GET", "/api/messages?channel=intake")[1][0]["id"]
    yield daemon, message_id
    daemon.stop()


def routes(values: dict) -> list[tuple[str, str]]:
    """Every (method, path) the admin listener answers, from its router: the resource tree of
    engine/admin/api.py (static children, json_* methods, ``examples`` children) and the
    dashboard's Route handlers (``<name>_<METHOD>`` with ``EXAMPLES``)."""
    root = build_root(None)
    dashboard = Dashboard.__new__(Dashboard)
    dashboard.static = {name: None for name in dashboard_module.STATIC}
    Dashboard.mount(dashboard, root)
    found: list[tuple[str, str]] = []
    visited: set[type] = set()

    def walk(resource, path: str) -> None:
        visited.add(type(resource))
        if isinstance(resource, Route):
            handlers = {name for name in dir(Dashboard) if name.startswith(f"{resource.name}_")}
            examples = EXAMPLES[resource.name]
            assert handlers == {f"{resource.name}_{method}" for method in examples}, resource.name
            if path == "":                   # "/" is the channel list
                found.append(("GET", "/"))
                return
            for method, tails in examples.items():
                for tail in tails:
                    found.append((method, f"{path}/{tail.format(**values)}".rstrip("/")))
            return
        if isinstance(resource, Static):
            found.extend(("GET", f"{path}/{name.decode()}") for name in dashboard.static)
            return
        if isinstance(resource, Favicon):
            found.append(("GET", path))
            return
        assert isinstance(resource, Endpoint), f"{path}: an unknown kind of resource"
        if b"" not in resource.children:
            found.extend((name[5:], path or "/") for name in dir(resource) if name.startswith("json_"))
        for name, child in resource.children.items():
            if name:
                walk(child, f"{path}/{name.decode()}")
        for example in resource.examples:
            name = example.decode() if isinstance(example, bytes) else example
            name = name.format(**values)
            walk(resource.getChild(name.encode(), None), f"{path}/{name}")

    walk(root, "")
    kinds = {cls for cls in vars(__import__("engine.admin.api", fromlist=["x"])).values()
             if isinstance(cls, type) and issubclass(cls, Endpoint) and cls not in (NotFound, Refused)}
    assert kinds <= visited, f"API resources the walk cannot reach (give them examples): {kinds - visited}"
    return sorted(set(found))


def body_for(method: str, path: str, message_id: int) -> tuple[bytes | None, str]:
    if method != "POST":
        return None, "application/json"
    if path == "/api/replay":
        return json.dumps({"ids": [message_id], "dry_run": True}).encode(), "application/json"
    if path.startswith("/api/messages/"):
        return json.dumps({"dry_run": True}).encode(), "application/json"
    if path.startswith("/api/"):
        return b"", "application/json"
    return urlencode({"next": "/"}).encode(), "application/x-www-form-urlencoded"


def test_every_route_for_every_role(world):
    """The role table (the test that makes a new route declare who may use it)."""
    daemon, message_id = world
    table = routes({"channel": "intake", "id": message_id})
    assert ("POST", "/api/channels/intake/stop") in table and ("GET", "/messages/%d/raw" % message_id) in table
    people = [(User(f"{role}-{'phi' if phi else 'nophi'}", role, phi), token_of(role, phi)) for role, phi in KINDS]
    people.append((User("admin", "admin", True), ADMIN_TOKEN))
    checked = 0
    for method, path in table:
        need, named = need_for(method.encode(), path.encode(), {})
        assert named, f"{method} {path} has no rule in engine/admin/roles.py RULES"
        for user, token in people:
            body, kind = body_for(method, path, message_id)
            status, _headers, text = call(daemon.admin_port, method, path, token, body, kind)
            if allowed(user, need):
                assert status != 403 and (need.role is None or status != 401), (method, path, user, status, text)
            else:
                assert status == 403, (method, path, user, status, text)
                assert f"user {user.name}" in json.loads(text)["error"], text
            if not user.phi:
                assert SECRET not in text, (method, path, user.name)
            checked += 1
    assert checked == len(table) * len(people) and len(table) >= 25


@pytest.mark.parametrize("path", ["/api/messages?text=DOE", "/search?go=1&text=DOE", "/messages?go=1&text=DOE",
                                  "/channels/intake?go=1&text=DOE"])
def test_no_text_search_without_phi(world, path):
    daemon, _message_id = world
    status, _headers, text = call(daemon.admin_port, "GET", path, token_of("admin", False))
    assert status == 403 and "no PHI access" in json.loads(text)["error"]
    assert call(daemon.admin_port, "GET", path, token_of("viewer", True))[0] == 200


def test_without_phi_a_message_is_its_summary_and_metadata(world):
    daemon, message_id = world
    status, _headers, text = call(daemon.admin_port, "GET", f"/api/messages/{message_id}", token_of("operator", False))
    shown = json.loads(text)
    assert status == 200 and shown["raw"] is None and shown["transformed"] is None
    assert shown["meta"] == {"mrn": "M1"} and shown["type"] == "ADT^A08" and "no PHI access" in shown["content_hidden"]
    assert all(d["sent"] is None and d["response"] is None for d in shown["destinations"])
    status, _headers, page = call(daemon.admin_port, "GET", f"/messages/{message_id}", token_of("viewer", False))
    assert status == 200 and 'id="content-hidden"' in page and SECRET not in page
    assert 'id="replay"' not in page                       # a viewer is not offered what it may not do
    status, _headers, full = call(daemon.admin_port, "GET", f"/api/messages/{message_id}", token_of("viewer", True))
    assert SECRET in json.loads(full)["raw"]


def test_the_audit_names_the_user_and_the_cli_filters_by_user(world):
    daemon, message_id = world
    token = token_of("operator", True)
    call(daemon.admin_port, "POST", "/api/channels/intake/start", ADMIN_TOKEN, b"")   # the role walk may have stopped it
    assert call(daemon.admin_port, "GET", f"/api/messages/{message_id}", token)[0] == 200
    assert call(daemon.admin_port, "GET", "/api/messages?channel=intake", token)[0] == 200
    status, _h, _t = call(daemon.admin_port, "POST", f"/api/messages/{message_id}/replay", token, b"{}")
    assert status == 200
    assert call(daemon.admin_port, "POST", "/api/channels/intake/pause", token, b"")[0] == 200
    assert call(daemon.admin_port, "POST", "/api/channels/intake/start", token, b"")[0] == 200
    rows = daemon.cli_json("audit", "--user", "operator-phi", "--limit", "1000")
    actions = {row["action"] for row in rows}
    assert {"view", "search", "replay", "channel.pause", "channel.start"} <= actions
    assert {row["who"] for row in rows} == {"operator-phi"}


def test_sign_in_by_name_and_password_carries_the_user(world):
    daemon, _message_id = world
    form = urlencode({"name": "maria", "password": "wrong password here"}).encode()
    status, headers, text = call(daemon.admin_port, "POST", "/login", body=form, kind="application/x-www-form-urlencoded")
    assert status == 401 and headers.get("Set-Cookie") is None and "do not match" in text
    form = urlencode({"name": "maria", "password": PASSWORD}).encode()
    status, headers, _text = call(daemon.admin_port, "POST", "/login", body=form, kind="application/x-www-form-urlencoded")
    assert status == 303
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    status, _headers, page = call(daemon.admin_port, "GET", "/", cookie=cookie)
    assert status == 200 and "signed in as <strong>maria</strong>" in page and "viewer" in page
    assert 'class="action action-' not in page           # no start/stop/pause buttons for a viewer
    status, _headers, text = call(daemon.admin_port, "POST", "/channels/intake/stop", body=b"csrf=x",
                                  kind="application/x-www-form-urlencoded", cookie=cookie)
    assert status == 403 and "user maria is a viewer" in json.loads(text)["error"]
    rows = daemon.cli_json("audit", "--user", "maria")
    assert {"login", "login.failed"} <= {row["action"] for row in rows}


def test_user_add_prints_a_token_whose_digest_is_in_the_block(world):
    daemon, _message_id = world
    result = daemon.cli("user", "add", "sam", "--role", "viewer")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    token = lines[1].strip()
    assert f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"' in result.stdout
    assert 'role = "viewer"' in result.stdout and "phi = false" in result.stdout
    bad = daemon.cli("user", "add", "admin", "--role", "viewer")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_the_cli_acts_as_the_user_of_switchboard_user_token(world):
    daemon, message_id = world
    import os
    import subprocess
    import sys

    env = dict(os.environ, SWITCHBOARD_USER_TOKEN=token_of("viewer", True))
    result = subprocess.run([sys.executable, "-m", "engine.cli.main", "-c", str(daemon.config), "replay",
                             str(message_id)], capture_output=True, text=True, env=env, cwd=daemon.root, timeout=60)
    assert result.returncode == 1 and "user viewer-phi is a viewer and may not replay" in result.stderr


def test_parallel_password_guesses_cannot_outrun_the_throttle(world):
    """Last in this file: 127.0.0.1 is throttled afterwards.  Each attempt is counted before the
    slow argon2 check, so 20 guesses sent at once get at most 5 verdicts and the rest 429."""
    from concurrent.futures import ThreadPoolExecutor

    daemon, _message_id = world
    form = urlencode({"name": "maria", "password": "a wrong guess, long enough"}).encode()

    def guess(_n):
        return call(daemon.admin_port, "POST", "/login", body=form, kind="application/x-www-form-urlencoded")[0]

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(guess, range(20)))
    assert statuses.count(401) <= 5 and statuses.count(429) >= 15 and set(statuses) <= {401, 429}
