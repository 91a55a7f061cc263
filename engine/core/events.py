"""Message events: PHI-free facts about a message's way, for observers and counters.

The channel and the queues call ``Events.emit``; it builds a ``MessageEvent`` and calls every
plugin's ``message_event`` hook.  A plugin that raises is logged by name and ignored: an observer
never changes what happens to a message.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

log = Logger(namespace="switchboard.events")


@dataclass(frozen=True)
class MessageEvent:
    kind: str                   # received | duplicate | rejected | filtered | queued | sent | error | replayed
    channel: str
    message_id: int | None = None
    destination: str | None = None
    reason: str = ""            # PHI-free: stage names, status codes, exception type names


class Events:
    def __init__(self, hook) -> None:
        self.hook = hook
        self.listeners: list = []   # in-process observers (metrics); same contract as the hook

    def emit(self, kind: str, channel: str, message_id: int | None = None, *,
             destination: str | None = None, reason: str = "") -> None:
        event = MessageEvent(kind, channel, message_id, destination, reason)
        for listener in self.listeners:
            listener(event)
        try:
            self.hook.message_event(event=event)
        except Exception:
            log.failure("a message_event plugin raised for {kind} on {channel}", kind=kind, channel=channel)
