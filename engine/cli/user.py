"""``switchboard user add NAME --role R [--phi] [--password]``: a new ``[[admin.user]]`` (DESIGN §3.12).

Prints a new random API token once, and the TOML block to paste into config.toml with the token's
SHA-256 (the config keeps only the digest, so a leaked config gives no token).  ``--password``
asks for a password (twice on a terminal; one line from stdin otherwise, for scripts) and adds
its argon2id hash for the dashboard's name-and-password sign-in.  Nothing is written: the config
file is the person's to edit, and the daemon picks the user up at its next start.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import re
import secrets
import sys

from engine.cli.common import CommandError
from engine.config.schema import ROLES
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MIN_PASSWORD = 12


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="user_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a user: print its API token once and its [[admin.user]] block")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="viewer: counts and summaries; operator: + replay, pause, start, stop; admin: everything")
    add.add_argument("--phi", action="store_true", help="may see message content (raw, transformed, sent, responses)")
    add.add_argument("--password", action="store_true",
                     help="also ask for a password for the dashboard (stored as an argon2id hash)")


def user_command(args, _path) -> int:
    if not NAME.fullmatch(args.name) or args.name == "admin":
        raise CommandError(f"a user name may only contain letters, digits, '.', '_' and '-', start with a letter "
                           f"or digit, and not be 'admin' (the [admin] token's)")
    password_hash = _password_hash() if args.password else None
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    print(f"API token for {args.name} (shown once; give it to them, it is not stored anywhere):")
    print(f"  {token}")
    print()
    print("Add this to config.toml and restart the daemon:")
    print()
    print("[[admin.user]]")
    print(f'name = "{args.name}"')
    print(f'role = "{args.role}"')
    print(f"phi = {'true' if args.phi else 'false'}")
    print(f'token_sha256 = "{digest}"')
    if password_hash:
        print(f'password = "{password_hash}"')
    return 0


def _password_hash() -> str:
    from argon2 import PasswordHasher

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        again = getpass.getpass("Again: ")
        if not hmac.compare_digest(again.encode(), password.encode()):
            raise CommandError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise CommandError(f"a password needs at least {MIN_PASSWORD} characters")
    return PasswordHasher().hash(password)
