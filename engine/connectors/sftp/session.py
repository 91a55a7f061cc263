"""One reusable SFTP connection (paramiko), driven from the reactor one call at a time.

Why paramiko and threads: paramiko is the maintained blocking SSH library; asyncssh would need
the asyncio reactor, which the engine does not run.  Every SFTP call runs in the reactor's thread
pool (``deferToThreadPool``) behind a ``DeferredLock``, because one ``SFTPClient`` must not be used
by two threads at once, and the lock queues callers in the reactor without parking pool threads.

The connection is opened on first use, kept between polls and sends, and dropped when a call fails
in a way that means the link is gone (socket errors, timeouts, a closed channel); the next call
reconnects.  A refusal by the server for one path (no such file, permission denied) keeps it.

Host keys are verified: the server's key must be in ``known_hosts`` (the file given, else the
user's ``~/.ssh/known_hosts``); an unknown key or a different one is refused before any password
or key is offered.  ``insecure_skip_host_key_check`` (labs only) skips the check and says so in
the log at every connect.
"""

from __future__ import annotations

import errno
import logging
import socket

import paramiko
from twisted.internet import defer, threads
from twisted.logger import Logger


log = Logger(namespace="switchboard.sftp")

# paramiko logs through stdlib logging, which the daemon does not route; without a handler Python's
# last-resort handler would print its tracebacks to stderr.  We report every failure ourselves.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

KEEPALIVE_SECONDS = 30


REFUSALS = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.EISDIR)


class UnknownHostKey(paramiko.SSHException):
    """The server's host key is not in known_hosts: refused (never trusted on first use)."""


class _Refuse(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(f"the host key of {hostname} is not in known_hosts")


class _Skip(paramiko.MissingHostKeyPolicy):
    """insecure_skip_host_key_check: accept any key without remembering it."""

    def missing_host_key(self, client, hostname, key):
        return None


def is_server_answer(error: BaseException) -> bool:
    """True when the SFTP server answered with an error status: the connection itself is fine.

    paramiko turns a status into ``IOError``: errno ENOENT/EACCES for "no such file"/"permission
    denied", no errno for the rest (failure, unsupported).  Socket trouble is a ConnectionError,
    a timeout, or a paramiko exception, never a bare status; and nothing raised while connecting
    (a key file that vanished is a local ENOENT, not the server's answer) counts as one."""
    if not isinstance(error, OSError) or getattr(error, "sftp_connecting", False) or isinstance(
            error, (ConnectionError, TimeoutError, paramiko.ssh_exception.NoValidConnectionsError)):
        return False
    return error.errno is None or error.errno in REFUSALS


def is_refusal(error: BaseException) -> bool:
    """The server refused this path for good (no such directory, permission denied)."""
    return is_server_answer(error) and error.errno in REFUSALS


def describe(error: BaseException) -> str:
    """A PHI-free, human reason for an SFTP/SSH failure (no paths, no server text)."""
    if isinstance(error, paramiko.BadHostKeyException):
        return "the server's host key does not match known_hosts: refused"
    if isinstance(error, UnknownHostKey):
        return "the server's host key is not in known_hosts: refused"
    if isinstance(error, paramiko.AuthenticationException):
        return "SSH authentication failed"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError):
        return "cannot connect: connection refused"
    if isinstance(error, OSError) and getattr(error, "sftp_connecting", False) and error.strerror:
        return f"cannot connect: {error.strerror}"
    if isinstance(error, OSError) and error.errno in REFUSALS:
        return {errno.ENOENT: "no such file or directory", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied", errno.EEXIST: "already exists",
                errno.ENOTDIR: "not a directory", errno.EISDIR: "is a directory"}[error.errno]
    if is_server_answer(error):
        return "the SFTP server reported a failure"
    if isinstance(error, OSError) and error.strerror:
        return f"connection failed: {error.strerror}"
    if isinstance(error, EOFError):
        return "connection closed by the server"
    return f"SSH/SFTP error: {type(error).__name__}"


class SftpSession:
    """A lazily opened, reused SFTP connection for one source or destination."""

    def __init__(self, options, reactor, *, label: str) -> None:
        self.options = options
        self.reactor = reactor
        self.label = label                 # "channel/destination", for the log
        self.lock = defer.DeferredLock()
        self.client: paramiko.SSHClient | None = None
        self.sftp: paramiko.SFTPClient | None = None

    def run(self, function, *args) -> defer.Deferred:
        """``function(sftp, *args)`` in a pool thread, after (re)connecting; one call at a time."""
        pool = self.reactor.getThreadPool()
        return self.lock.run(threads.deferToThreadPool, self.reactor, pool, self._call, function, *args)

    def close(self) -> defer.Deferred:
        pool = self.reactor.getThreadPool()
        return self.lock.run(threads.deferToThreadPool, self.reactor, pool, self._drop)

    # -- in the pool thread ----------------------------------------------------------------
    def _call(self, function, *args):
        if self.sftp is None or not self._alive():
            self._drop()
            try:
                self._connect()
            except Exception as error:
                error.sftp_connecting = True
                raise
        try:
            return function(self.sftp, *args)
        except Exception as error:
            if not is_server_answer(error):
                self._drop()   # the link may be half-dead: start clean next time
            raise

    def _alive(self) -> bool:
        transport = self.client.get_transport() if self.client else None
        return bool(transport and transport.is_active())

    def _connect(self) -> None:
        options = self.options
        client = paramiko.SSHClient()
        insecure = bool(options.get("insecure_skip_host_key_check"))
        if insecure:
            client.set_missing_host_key_policy(_Skip())
        else:
            if options.get("known_hosts"):
                client.load_host_keys(str(options["known_hosts"]))
            else:
                client.load_system_host_keys()
            client.set_missing_host_key_policy(_Refuse())
        timeout = options.get("connect_timeout") or 10.0
        key = options.get("private_key")
        try:
            client.connect(
                options["host"], port=options.get("port") or 22, username=options["username"],
                password=options.get("password") or None, key_filename=str(key) if key else None,
                passphrase=options.get("passphrase") or None, timeout=timeout, banner_timeout=timeout,
                auth_timeout=timeout, channel_timeout=timeout, allow_agent=False, look_for_keys=False)
            client.get_transport().set_keepalive(KEEPALIVE_SECONDS)
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(options.get("timeout") or 30.0)
        except BaseException:
            client.close()
            raise
        if insecure:
            log.warn("{label}: connected to {host}:{port} WITHOUT checking its host key "
                     "(insecure_skip_host_key_check)", label=self.label, host=options["host"],
                     port=options.get("port") or 22)
        else:
            log.debug("{label}: connected to {host}:{port}", label=self.label, host=options["host"],
                      port=options.get("port") or 22)
        self.client, self.sftp = client, sftp

    def _drop(self) -> None:
        client, self.client, self.sftp = self.client, None, None
        if client is not None:
            client.close()
