"""SFTP as a plugin connector: the source and destination, registered through the plugin hooks.

The engine ships this module as a built-in plugin (``engine.plugins.BUILTIN_PLUGINS``), but it uses
nothing a third-party plugin could not: ``register_sources`` / ``register_destinations`` and
connector classes carrying their own ``option_schema`` (checked by ``switchboard check`` like any
built-in type).  The source lives in ``engine.connectors.sftp_source``; the connection (paramiko in
pool threads, host-key verification, reconnects) in ``engine.connectors.sftp_session``.

Destination (``[[destination]] type = "sftp"``): upload to ``remote_path/.NAME<temp_suffix>``, then
``posix-rename@openssh.com`` to NAME (atomic on OpenSSH, and it replaces an existing NAME), so a
reader never sees half a file.  Permission denied or no such directory: PermanentError (the
message goes ERROR).  Connection trouble, timeouts, host-key or authentication failures and any
other server failure (disk full...): TransientError (retried, holding the line); a failure during
the rename is a possible duplicate.  paramiko has no ``fsync@openssh.com`` call, so durability on
the remote disk is the server's (OpenSSH has closed the file before it answers the rename).
"""

from __future__ import annotations

import posixpath

from twisted.internet import defer, threads

from engine.config.schema import OptionSpec
from engine.connectors.file.naming import FilenameTemplate
from engine.connectors.sftp.options import SSH_OPTIONS, session_module
from engine.connectors.sftp.source import SftpSource
from engine.core.contracts import PermanentError, SendResult, TransientError
from engine.hl7.encoding import with_final_cr
from engine.hookspecs import hookimpl

DESTINATION_OPTIONS = {
    **SSH_OPTIONS,
    "filename": OptionSpec("str", "{{ id }}.txt"),
    "temp_suffix": OptionSpec("str", ".tmp", check=lambda s: None if s and "/" not in s
                              else "must be non-empty, without '/'"),
}


def upload(sftp, directory: str, name: str, suffix: str, data: bytes) -> str:
    """Write ``.NAME<suffix>`` then rename it to NAME; a failure says at which stage (``sftp_stage``)."""
    temp, final = posixpath.join(directory, f".{name}{suffix}"), posixpath.join(directory, name)
    try:
        with sftp.open(temp, "wb") as remote:
            remote.set_pipelined(True)
            remote.write(data)
    except Exception as error:
        error.sftp_stage = "upload"
        if session_module().is_server_answer(error):  # the link is fine: do not leave a half-written temp behind
            try:
                sftp.remove(temp)
            except Exception:  # noqa: BLE001 - best effort; the next attempt truncates it anyway
                pass
        raise
    try:
        sftp.posix_rename(temp, final)
    except Exception as error:
        error.sftp_stage = "rename"
        raise
    return name


# -- the destination -------------------------------------------------------------------------
class SftpDestination:
    type_name = "sftp"
    option_schema = DESTINATION_OPTIONS

    def __init__(self, config, context, reactor) -> None:
        options = config.options
        self.remote = options["remote_path"]
        self.suffix = options.get("temp_suffix") or ".tmp"
        self.filename = FilenameTemplate(context, options.get("filename") or "{{ id }}.txt",
                                         f"destination[{config.name}].filename",
                                         reserve=1 + len(self.suffix.encode("utf-8")), remote_path=self.remote)
        self.channel = context.channel_name
        self.session = session_module().SftpSession(options, reactor, label=f"{context.channel_name}/{config.name}")

    def send(self, delivery):
        if self.filename.needs_message:   # the name reads the stored message: off the reactor thread
            d = threads.deferToThread(self.filename.render, delivery)
        else:
            try:
                d = defer.succeed(self.filename.render(delivery))
            except PermanentError as error:
                return defer.fail(error)
        body = with_final_cr(delivery.body).encode("utf-8")
        d.addCallback(lambda name: self.session.run(upload, self.remote, name, self.suffix, body))
        return d.addCallbacks(lambda written: SendResult(f"uploaded {written}"), self._failed)

    @staticmethod
    def _failed(failure):
        error = failure.value
        stage = getattr(error, "sftp_stage", None)
        session = session_module()
        reason = session.describe(error) if stage is None else f"{stage} failed: {session.describe(error)}"
        if session.is_refusal(error):
            raise PermanentError(reason)
        raise TransientError(reason, possible_duplicate=stage == "rename")

    def close(self):
        return self.session.close()


@hookimpl
def register_sources():
    return [SftpSource]


@hookimpl
def register_destinations():
    return [SftpDestination]
