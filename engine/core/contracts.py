"""The destination connector contract: what ``send`` returns and how it fails.

A connector says *how* a send went; the queue decides what happens next: ``SendResult`` means
SENT, ``TransientError`` means retry with backoff holding the line, ``PermanentError`` means
ERROR and the line moves on.  Any other exception is treated as transient (a connector bug should
delay, never drop).  Messages are PHI-free: status codes, MSA codes, exception type names.
"""

from __future__ import annotations

from dataclasses import dataclass


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
