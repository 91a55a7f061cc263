"""The one HL7 acceptance check (RELIABILITY 12-14): what makes a frame a message we may store and AA.

Only MSH is read.  Every source that answers in HL7 and the store-free dry run use this check, so
"AR for what is not HL7" is decided in one place.

A frame holding a second MSH is two messages, not one with extra segments: taken whole, the
second patient's message would live on as unknown segments of the first, never processed and
never found by a search.  It is refused (AR) unless the channel splits batches, in which case
``engine.core.ingest`` splits it as it splits an FHS/BHS batch.  The scan is one substring search
for CR + "MSH" (segments are normalized to CR first).
"""

from __future__ import annotations

from engine.hl7.msh import Msh, peek_msh

MIN_MSH_FIELDS = 12
BATCH_HEADERS = ("FHS", "BHS")


def check_hl7(text: str) -> tuple[Msh | None, str | None]:
    """Return (msh, None) for an acceptable message, else (msh or None, PHI-free reason)."""
    if not text.strip():
        return None, "not an HL7 message: the frame is empty"
    msh = peek_msh(text)
    if msh is None:
        return None, "not an HL7 message: the first segment is not MSH"
    if msh.field_count < MIN_MSH_FIELDS:
        return msh, f"MSH has {msh.field_count} fields; at least {MIN_MSH_FIELDS} are required"
    if not msh.control_id:
        return msh, "MSH-10 (message control id) is empty"
    if "\x0b" in text or "\x1c" in text:
        return msh, "the message contains an MLLP framing byte (0x0B or 0x1C)"
    if holds_several_messages(text):
        return msh, (f"the frame holds {text.count(SECOND_MSH) + 1} messages (a second MSH segment); "
                     'send one message per frame, or set split = "hl7-batch" on the channel')
    return msh, None


SECOND_MSH = "\rMSH"


def holds_several_messages(text: str) -> bool:
    """True when a segment after the first is an MSH (the text's segments end with CR)."""
    return SECOND_MSH in text


def is_batch(text: str) -> bool:
    return text[:3] in BATCH_HEADERS
