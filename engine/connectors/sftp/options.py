"""The options both SFTP connectors take (docs/sftp.md), apart from the session code.

Why a module of its own: the built-in plugins register at every start, SFTP or not, and
``sftp_session`` imports paramiko (2.5 MB of resident memory, measured); the connectors import
the session only when a channel actually uses SFTP.
"""

from __future__ import annotations

from engine.config.schema import OptionSpec


def positive(value: float) -> str | None:
    return None if value > 0 else "must be more than 0"


# The options both SFTP connectors take (docs/sftp.md).  ``known_hosts`` absent: ~/.ssh/known_hosts.
SSH_OPTIONS = {
    "host": OptionSpec("str", required=True),
    "port": OptionSpec("int", 22, check=lambda port: None if 0 < port < 65536 else "must be 1-65535"),
    "username": OptionSpec("str", required=True),
    "password": OptionSpec("str", ""),
    "private_key": OptionSpec("file"),
    "passphrase": OptionSpec("str", ""),
    "known_hosts": OptionSpec("file"),
    "insecure_skip_host_key_check": OptionSpec("bool", False),
    "remote_path": OptionSpec("str", required=True, check=lambda path: None if path.strip() else "must not be empty"),
    "connect_timeout": OptionSpec("duration", "10s", check=positive),
    "timeout": OptionSpec("duration", "30s", check=positive),
}


def session_module():
    """``engine.connectors.sftp_session``, imported on first use (it imports paramiko)."""
    from engine.connectors.sftp import session as sftp_session

    return sftp_session
