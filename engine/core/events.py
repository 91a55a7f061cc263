"""Message events: PHI-free facts about a message's way, for observers and counters.

The channel and the queues call ``Events.emit``; it builds a ``MessageEvent`` and calls every
plugin's ``message_event`` hook.  A plugin that raises is logged by name and ignored: an observer
never changes what happens to a message.
"""

from __future__ import annotations

from twisted.logger import Logger

from engine.core.contracts import EventKind, MessageEvent

log = Logger(namespace="switchboard.events")


class Events:
    def __init__(self, hook) -> None:
        self.hook = hook
        self.listeners: list = []   # in-process observers (metrics); same contract as the hook

    def emit(self, kind: EventKind | str, channel: str, message_id: int | None = None, *,
             destination: str | None = None, reason: str = "") -> None:
        # Several events per message: pluggy's call machinery is skipped while no plugin
        # implements the hook (checked at each emit: plugins may be registered at any time).
        value = kind.value if isinstance(kind, EventKind) else EventKind(kind).value
        caller = self.hook.message_event
        hooked = not hasattr(caller, "get_hookimpls") or bool(caller.get_hookimpls())
        if not hooked and not self.listeners:
            return
        event = MessageEvent(value, channel, message_id, destination, reason)
        for listener in self.listeners:
            listener(event)
        if not hooked:
            return
        try:
            self.hook.message_event(event=event)
        except Exception:
            log.failure("a message_event plugin raised for {kind} on {channel}", kind=event.kind, channel=channel)
