"""The words for what a channel and a destination are doing, one list for the CLI
(``switchboard status``), the admin API and the dashboard, so the three say the same.

A channel is ``started``, ``paused``, ``stopped`` or ``failed`` (the running daemon's word), or,
for a channel the daemon does not run, ``disabled`` (``enabled = false``), ``invalid`` (its file
has a problem) or ``removed`` (stored messages, no file).

A destination is ``ok``; ``retrying`` since the first failure of the message at the head of its
queue (it is retried with back-off); or ``failing``: its latest delivery ended in ERROR (a
permanent refusal, or retries given up) and none has been sent since.  Its target says where it
sends: ``host:port``, a URL (without credentials), a folder, an SFTP place or a channel.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

CHANNEL_STATES = ("started", "paused", "stopped", "failed", "disabled", "invalid", "removed")
DESTINATION_STATES = ("ok", "retrying", "failing")


def destination_state(queue) -> tuple[str, str | None]:
    """(word, since as ISO UTC or None) of a ``DestinationQueue`` (None: a stopped channel: ok)."""
    if queue is None:
        return "ok", None
    if queue.failures > 0:
        since = getattr(queue, "failing_since", None)
        return "retrying", since.isoformat(timespec="seconds").replace("+00:00", "Z") if since else None
    if queue.last_error:
        return "failing", None
    return "ok", None


def describe_state(view: dict) -> str:
    """``ok``, ``retrying since 03:55:12 UTC`` or ``failing``, from an API destination view."""
    word, since = view.get("state") or "ok", view.get("state_since")
    if word == "retrying" and since:
        return f"retrying since {since[11:19]} UTC"
    return word


def target_of(destination) -> str:
    """Where a destination sends, from its options (no passwords: URLs lose their user part)."""
    options = dict(getattr(destination, "options", None) or {})
    kind = getattr(destination, "type", "")
    if "connect" in options:
        host, port = options["connect"]
        return f"{host}:{port}"
    if "url" in options:
        parts = urlsplit(str(options["url"]))
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    if "host" in options and "remote_path" in options:
        return f"sftp://{options['host']}:{options.get('port', 22)}{'' if str(options['remote_path']).startswith('/') else '/'}{options['remote_path']}"
    if "directory" in options:
        return str(options["directory"])
    if "channel" in options:
        return f"channel {options['channel']}"
    return kind
