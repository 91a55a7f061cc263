"""The contracts between the engine's parts and its plugins: one module, so a connector or plugin
author reads one file to know what to implement and what comes back.

* A **source** calls its sink's ``receive`` (a ``Sink``) and answers its sender from the ``Receipt``.
* A **destination** connector says *how* a send went; the queue decides what happens next:
  ``SendResult`` means SENT, ``TransientError`` means retry with backoff holding the line,
  ``PermanentError`` means ERROR and the line moves on.  Any other exception is treated as
  transient (a connector bug should delay, never drop).
* **Events** (``EventKind``) are PHI-free facts about a message's way, for observers and counters.

Every reason carried here is PHI-free: status codes, MSA codes, exception type names, positions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Receipt:
    """What a source needs to answer: taken or not, and why not (PHI-free)."""

    message_id: int | None
    ok: bool
    duplicate: bool = False
    status: str = "RECEIVED"
    error: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One queued entry: what to send for which message."""

    id: int
    message_id: int
    body: str
    attempts: int = 0
    meta: dict | None = None


@dataclass(frozen=True)
class SendResult:
    response: str | None = None


class StartError(Exception):
    """The daemon cannot start as configured (a listener that cannot open: its address taken, a
    privileged port...).  ``switchboard run`` prints it as one sentence and exits 1."""


class DeliveryError(Exception):
    def __init__(self, reason: str, response: str | None = None, *, retry_after: float | None = None,
                 possible_duplicate: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response
        self.retry_after = retry_after
        self.possible_duplicate = possible_duplicate


class TransientError(DeliveryError):
    """The peer may take it later: connection refused/reset, timeout, 5xx, garbage ACK."""


class PermanentError(DeliveryError):
    """The peer refused this message: AE/AR/CE/CR, a 4xx other than 408/429."""


class EventKind(str, enum.Enum):
    """Every kind of ``MessageEvent`` the engine emits (hookspecs.message_event lists the same)."""

    RECEIVED = "received"                   # stored; the sender may be answered
    DUPLICATE = "duplicate"                 # a byte-identical re-send inside the dedupe window
    REJECTED = "rejected"                   # refused before storing (AR / 400): not HL7, bad batch
    FILTERED = "filtered"                   # a channel filter stopped it
    SENT = "sent"                           # a destination's peer took it
    ERROR = "error"                         # its transform failed or a destination refused it
    REPLAYED = "replayed"                   # processed again by a replay
    SOURCE_ERROR = "source_error"           # a file source could not read or move a file
    FILE_DUPLICATE = "file_duplicate"       # a file whose content was already processed
    HTTP_REFUSED = "http_refused"           # the HTTP source refused a request (status in the reason)
    FRAME_TOO_LARGE = "frame_too_large"     # an MLLP frame over max_message_size
    PARTIAL_FRAME_DISCARDED = "partial_frame_discarded"   # a connection closed inside a frame


@dataclass(frozen=True)
class MessageEvent:
    kind: str                   # an EventKind value
    channel: str
    message_id: int | None = None
    destination: str | None = None
    reason: str = ""            # PHI-free: stage names, status codes, exception type names


@runtime_checkable
class Sink(Protocol):
    """What a source hands messages to (a channel): the only engine object a source sees."""

    name: str

    def receive(self, raw: str, *, msh: Any = None, original: bytes | None = None,
                idempotency_key: str | None = None) -> Any:
        """Store ``raw``; the Deferred fires with a ``Receipt`` once it is durable (or refused)."""

    def note_rejected(self, reason: str) -> None:
        """A frame refused before storing (counted, reason only)."""

    def note_event(self, kind: str, detail: str) -> None:
        """A source-level event (an ``EventKind`` value) with a PHI-free detail."""


@runtime_checkable
class Source(Protocol):
    """A source connector: ``cls(channel_config, sink, reactor)``."""

    type_name: str

    def start(self) -> Any:
        """Begin accepting (a Deferred or None); raising means the channel failed to start."""

    def stop(self) -> Any:
        """Stop accepting and let in-flight messages get their answers."""

    def retarget(self, sink: Sink) -> None:
        """Hand what arrives from now on to ``sink`` (live reload swaps channels this way)."""


@runtime_checkable
class Destination(Protocol):
    """A destination connector: ``cls(destination_config, context, reactor)``."""

    type_name: str

    def send(self, delivery: Delivery) -> Any:
        """A ``SendResult`` (or a Deferred of one); raise ``TransientError`` / ``PermanentError``."""


@runtime_checkable
class Filter(Protocol):
    """A plugin filter: ``factory(options)``; ``check`` returns bool or ``FilterResult``."""

    def check(self, message: Any, context: dict) -> Any: ...


@runtime_checkable
class Step(Protocol):
    """A plugin transform step: ``factory(options)``; ``apply`` returns the next step's input text."""

    def apply(self, message: Any, context: dict) -> str: ...


@runtime_checkable
class EventSink(Protocol):
    """An in-process observer of message events (metrics, alerts): called in the reactor thread."""

    def __call__(self, event: MessageEvent) -> None: ...
