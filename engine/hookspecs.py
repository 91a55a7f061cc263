"""The plugin API: every way a plugin can extend Switchboard, one documented hook each.

A plugin is a module (a file in ``plugins_dir`` or a package named by a ``switchboard`` entry
point) with functions marked ``@hookimpl``.  The built-in connectors, filters and template helpers
register through these same hooks (see ``engine.plugins.BUILTIN_PLUGINS``), so a third-party
plugin has exactly the powers the engine's own parts have.

``register_*`` hooks return things to register (classes, factories or name -> callable maps); the
engine collects every plugin's answer when it starts and refuses two plugins claiming one name.
The observer hooks (``message_event``, ``alert``) are called for their side effects; an exception
raised by one is logged (by plugin name) and never stops the message or the channel.
"""

from __future__ import annotations

import pluggy

PROJECT = "switchboard"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_sources():
    """Return a list of source connector classes.

    Each class has ``type_name`` (the ``[source] type`` it serves), ``option_schema`` (a dict of
    key -> ``engine.config_schema.OptionSpec``, checked by ``switchboard check``) and is built as
    ``cls(channel_config, sink, reactor)`` where ``sink.receive(...)`` takes what it reads.  It has
    ``start()`` and ``stop()`` (both may return a Deferred).  ``stop()`` stops accepting input; in-flight
    messages are finished by the engine.
    """


@hookspec
def register_destinations():
    """Return a list of destination connector classes.

    Each class has ``type_name``, ``option_schema`` and is built as ``cls(destination_config,
    context, reactor)``.  ``send(delivery)`` returns a Deferred firing a ``SendResult`` or failing
    with ``TransientError`` (retried with backoff, holding the line) or ``PermanentError`` (the
    message goes ERROR, the line moves on); see ``engine.delivery``.  ``close()`` releases sockets.
    """


@hookspec
def register_filters():
    """Return a dict of filter name -> factory.

    ``factory(options: dict)`` is called once per channel with the other keys of the ``[[filter]]``
    table (``use = "name"``) and returns an object whose ``check(message, context)`` returns a
    ``FilterResult(passed: bool, reason: str, rules: list[str])``.  ``reason`` is stored and logged,
    so it must name rules and thresholds, never patient values; ``rules`` (optional) explains the
    verdict rule by rule with the values read and is shown only by ``switchboard test``.  A filter
    that raises marks the message ERROR.  A factory raises ``ValueError`` for bad options;
    ``switchboard check`` reports it.
    """


@hookspec
def register_transforms():
    """Return a dict of transform step name -> factory.

    ``factory(options: dict)`` returns an object whose ``apply(message, context)`` returns the
    step's output text (the next step's input).  Raising marks the message ERROR with the reason.
    """


@hookspec
def register_template_helpers():
    """Return a dict with optional keys ``"filters"`` and ``"globals"``, each a name -> callable map.

    They are added to the sandboxed Jinja environment used by every template and ``when``
    expression.  Helpers must be pure functions of their arguments: they run inside the sandbox
    and are called once per message.
    """


@hookspec
def message_event(event):
    """Observe a message event: ``event`` is an ``engine.core.contracts.MessageEvent``.

    Kinds (``engine.core.contracts.EventKind``): received, duplicate, rejected, filtered, sent,
    error, replayed, source_error, file_duplicate, http_refused, frame_too_large,
    partial_frame_discarded.  The event carries ids,
    statuses and PHI-free reasons only, never message content.  Called in the reactor thread: do
    not block; hand slow work to a thread.
    """


@hookspec
def alert(alert, context):
    """Something needs a person: ``alert`` is an ``engine.admin.alerts.Alert``.

    Kinds: ``destination_failing`` (a destination's sends have failed for longer than
    ``[alerts] failing_longer_than``), ``destination_queued`` (its oldest queued delivery has
    waited longer than ``queued_longer_than``), ``message_error`` (messages of a channel went
    ERROR since the last check; ids in ``alert.message_ids``, at most 50).  ``alert.state`` is
    ``"firing"`` (sent again every ``repeat_after`` while it lasts) or ``"resolved"`` (the
    condition cleared; not sent for ``message_error``).  Every field is PHI-free: names, ids,
    counts, times and stored reasons, never message content; ``alert.text`` is a one-line summary.

    ``context`` (an ``engine.admin.alerts.AlertContext``: ``config`` -- the engine's ``Config``,
    whose ``alerts`` table holds the thresholds and the webhook settings -- and ``reactor``) is
    there for plugins that need settings or network I/O; a plugin may declare ``alert(alert)``
    alone.  Called in the reactor thread: do not block (use Twisted or hand the work to a thread).
    The built-in ``engine.admin.alert_webhook`` POSTs the alert as JSON to ``webhook_url``.
    """
