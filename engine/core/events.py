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
        event = MessageEvent(EventKind(kind).value, channel, message_id, destination, reason)
        for listener in self.listeners:
            listener(event)
        try:
            self.hook.message_event(event=event)
        except Exception:
            log.failure("a message_event plugin raised for {kind} on {channel}", kind=event.kind, channel=channel)
