"""MLLP framing: turning a TCP byte stream into frames, and frames into one write each.

Kept apart from the listener so the framing rules of RELIABILITY 1-17 can be tested byte by byte
with ``StringTransport`` and reused by the MLLP client (``switchboard send``, the MLLP destination).

A frame is ``0x0B <payload> 0x1C 0x0D``.  The decoder is a small state machine over a bytearray:
it never grows a frame past ``max_size`` (the caller closes the connection instead) and never
raises on any input; it reports what it found through callbacks so that the protocol decides
what to answer.
"""

from __future__ import annotations

from dataclasses import dataclass

START = 0x0B
END = 0x1C
CR = 0x0D
START_BYTE = b"\x0b"
END_BYTES = b"\x1c\x0d"


def frame(payload: bytes) -> bytes:
    """Wrap one payload; callers write the result in a single ``transport.write``."""
    return START_BYTE + payload + END_BYTES


@dataclass
class FrameEvent:
    """What the decoder found: ``kind`` is frame | junk | bad_end | start_inside | oversize."""

    kind: str
    payload: bytes = b""
    count: int = 0


class FrameDecoder:
    """Incremental MLLP decoder.

    ``feed(data)`` returns the events found in ``data`` in order:

    - ``frame``: a complete payload (may contain 0x0B, which the caller answers AR: RELIABILITY 6);
    - ``junk``: bytes outside any frame were discarded (count only: RELIABILITY 1, 2);
    - ``bad_end``: 0x1C followed by a byte other than 0x0D (RELIABILITY 3, 4, 7); in strict mode
      the decoder stops (``broken`` is set) because the stream can no longer be trusted;
    - ``oversize``: the frame in progress passed ``max_size`` (RELIABILITY 8); the decoder stops.

    With ``lenient_end`` a lone 0x1C ends the frame (RELIABILITY 3's option).
    """

    def __init__(self, max_size: int, *, lenient_end: bool = False) -> None:
        self.max_size = max_size
        self.lenient_end = lenient_end
        self.buffer = bytearray()
        self.inside = False
        self.broken = False

    @property
    def partial(self) -> bool:
        """True while a frame has started and not ended (what an idle timeout discards)."""
        return self.inside and not self.broken

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Take ``data`` and return every event it completes (the MLLP client, tests)."""
        self.append(data)
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def append(self, data: bytes) -> None:
        """Take ``data`` without decoding it yet: ``next_event`` decodes one event at a time, so a
        listener that stops reading (backpressure) keeps the rest as bytes, not as events."""
        if not self.broken:
            self.buffer += data

    def next_event(self) -> FrameEvent | None:
        """The next event in the bytes taken so far, or None when they hold no complete one."""
        while self.buffer and not self.broken:
            if not self.inside:
                start = self.buffer.find(START)
                if start < 0:
                    count = len(self.buffer)
                    self.buffer.clear()
                    return FrameEvent("junk", count=count)
                del self.buffer[: start + 1]
                self.inside = True
                if start:
                    return FrameEvent("junk", count=start)
                continue
            end = self.buffer.find(END)
            if end < 0:
                if len(self.buffer) > self.max_size:
                    return self._stop("oversize")
                return None
            if end > self.max_size:
                return self._stop("oversize")
            if end + 1 >= len(self.buffer):
                return None  # 0x1C is the last byte so far: 0x0D may come in the next read
            payload = bytes(self.buffer[:end])
            if self.buffer[end + 1] == CR:
                del self.buffer[: end + 2]
                self.inside = False
                return FrameEvent("frame", payload)
            if self.lenient_end:
                del self.buffer[: end + 1]
                self.inside = False
                return FrameEvent("frame", payload)
            self.broken = True
            self.inside = False
            self.buffer.clear()
            return FrameEvent("bad_end", payload)
        return None

    def _stop(self, kind: str) -> FrameEvent:
        event = FrameEvent(kind, count=len(self.buffer))
        self.broken = True
        self.inside = False  # reported once, as its own kind: not a partial frame any more
        self.buffer.clear()
        return event
