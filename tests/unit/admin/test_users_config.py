"""``[[admin.user]]`` in config.toml (DESIGN §3.12): read into ``AdminConfig.users``, each mistake
named with its key, and the tokens and passwords checked by ``auth.Tokens``."""

from __future__ import annotations

import hashlib

import pytest
from argon2 import PasswordHasher

from engine.admin.auth import Tokens
from engine.admin.roles import User
from engine.config.loader import ConfigError, load_config


def write(tmp_path, users: str):
    (tmp_path / "channels").mkdir(exist_ok=True)
    (tmp_path / "config.toml").write_text('[admin]\ntoken = "admin-token"\n' + users)
    return tmp_path / "config.toml"


def test_users_are_read_with_their_role_and_phi(tmp_path):
    digest = hashlib.sha256(b"maria-token").hexdigest()
    config = load_config(write(tmp_path, f'[[admin.user]]\nname = "maria"\nrole = "operator"\nphi = true\n'
                                         f'token_sha256 = "{digest}"\n'))
    (user,) = config.admin.users
    assert (user.name, user.role, user.phi, user.token_sha256, user.password) == ("maria", "operator", True, digest, "")
    tokens = Tokens.for_engine(config)
    assert tokens.who(b"maria-token") == User("maria", "operator", True)
    assert tokens.who(b"admin-token") == User("admin", "admin", True)
    assert tokens.who(b"maria-token ") is None


def test_every_mistake_is_named_at_once(tmp_path):
    text = ('[[admin.user]]\nname = "a"\nrole = "boss"\ntoken_sha256 = "' + "0" * 64 + '"\n'
            '[[admin.user]]\nname = "b"\nrole = "viewer"\ntoken_sha256 = "XYZ"\n'
            '[[admin.user]]\nname = "c"\nrole = "viewer"\npassword = "plain-text"\n'
            '[[admin.user]]\nname = "admin"\nrole = "viewer"\ntoken_sha256 = "' + "1" * 64 + '"\n'
            '[[admin.user]]\nname = "d"\nrole = "viewer"\n'
            '[[admin.user]]\nname = "e"\nrole = "viewer"\ntoken_sha256 = "' + "2" * 64 + '"\nphi = "maybe"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    message = str(raised.value)
    for expected in ("admin.user[0].role: 'boss' is not one of: viewer, operator, admin",
                     "admin.user[1].token_sha256: must be 64 lowercase hex digits",
                     "admin.user[2].password: must be an argon2id hash",
                     "admin.user[3].name: the user name 'admin' is taken",
                     "admin.user[4]: give token_sha256 or password",
                     "admin.user[5].phi"):
        assert expected in message, message
    assert "plain-text" not in message


def test_a_password_is_checked_with_argon2_and_an_unknown_name_too(tmp_path):
    hashed = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("a long password")
    config = load_config(write(tmp_path, f'[[admin.user]]\nname = "sam"\nrole = "viewer"\npassword = "{hashed}"\n'))
    tokens = Tokens.for_engine(config)
    assert tokens.check_password("sam", "a long password") == User("sam", "viewer", False)
    assert tokens.check_password("sam", "wrong") is None
    assert tokens.check_password("nobody", "a long password") is None
    assert tokens.has_user("sam") and not tokens.has_user("nobody")
