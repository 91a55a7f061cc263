"""Which codec decodes an HL7 frame (a BOM, a hint, MSH-18), and decoding that never raises (RELIABILITY 17)."""

from __future__ import annotations

import codecs

from engine.hl7.msh import peek_msh

# HL7 table 0211 (MSH-18) to Python codecs.
HL7_CHARSETS = {
    "ASCII": "ascii", "ISO IR6": "ascii", "UNICODE UTF-8": "utf-8", "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32", "UNICODE": "utf-16", "8859/1": "latin-1", "ISO IR100": "latin-1",
    "8859/2": "iso8859-2", "ISO IR101": "iso8859-2", "8859/3": "iso8859-3", "8859/4": "iso8859-4",
    "8859/5": "iso8859-5", "ISO IR144": "iso8859-5", "8859/6": "iso8859-6",
    "ISO IR127": "iso8859-6", "8859/7": "iso8859-7", "ISO IR126": "iso8859-7",
    "8859/8": "iso8859-8", "ISO IR138": "iso8859-8", "8859/9": "iso8859-9",
    "ISO IR148": "iso8859-9", "8859/15": "iso8859-15", "ISO IR87": "iso2022-jp",
    "ISO IR159": "iso2022-jp-1", "KS X 1001": "euc-kr", "BIG-5": "big5", "GB 18030-2000": "gb18030",
}
# Codec names a sender may write in MSH-18 outside table 0211 ("UTF-8", "windows-1252"...).  Only
# plain character sets are accepted: a name like "unicode_escape" or "rot13" must not choose a
# transforming codec.
_PLAIN_CODECS = ("utf-8", "utf-16", "utf-32", "ascii", "latin-1", "iso8859-", "cp125", "cp437",
                 "cp850", "mac-roman", "koi8-", "shift_jis", "euc_jp", "euc_kr", "gb", "big5")


def charset_codec(name: str) -> str | None:
    """The Python codec for an MSH-18 value (table 0211 or a plain charset name), else None."""
    name = name.strip()
    if not name:
        return None
    mapped = HL7_CHARSETS.get(name.upper())
    if mapped is not None:
        return mapped
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return None
    return codec if codec.startswith(_PLAIN_CODECS) else None


def frame_codec(raw: bytes, charset_hint: str = "") -> str:
    """The codec a frame is decoded with: a BOM wins (``utf-8-sig`` / ``utf-16``, which drop it);
    then ``charset_hint``; then MSH-18, read from a Latin-1 decode of the first segment; else
    UTF-8.  ``switchboard show`` names it when a message's original bytes were kept."""
    if raw.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    codec = charset_codec(charset_hint) if charset_hint else None
    if codec is None and raw.startswith(b"MSH"):
        end = len(raw)
        for stop in (b"\r", b"\n"):
            found = raw.find(stop, 0, end)
            if found != -1:
                end = found
        msh = peek_msh(raw[:end].decode("latin-1"))
        codec = charset_codec(msh.charset) if msh is not None else None
    return codec or "utf-8"


def decode_frame(raw: bytes, charset_hint: str = "") -> tuple[str, bytes | None]:
    """Decode a frame by its declared charset (``frame_codec``, RELIABILITY 17), never raising:
    ``(text, original)``.

    Invalid bytes become U+FFFD, and only then is ``original`` the frame itself (``raw``, the same
    object: no copy), for the store to keep; a valid frame gives ``None``.  The strict decode is
    tried first and the replacing one only after a UnicodeDecodeError, so a valid frame is still
    decoded once (its cost: bench/README.md, "Decoding a frame").
    """
    codec, body = frame_codec(raw, charset_hint), raw
    if codec == "utf-8-sig":  # C-speed utf-8 on the rest, not the pure-Python utf-8-sig codec (3x)
        codec, body = "utf-8", raw[3:]
    try:
        return body.decode(codec), None  # the hot path: one strict decode, no copy kept
    except UnicodeDecodeError:
        pass
    except (LookupError, UnicodeError):  # a codec that fails as such: read the frame as UTF-8
        codec = "utf-8"
        try:
            return body.decode(codec), None
        except UnicodeDecodeError:
            pass
    try:
        return body.decode(codec, "replace"), raw
    except (LookupError, UnicodeError):
        return body.decode("utf-8", "replace"), raw


def decode_bytes(raw: bytes, charset_hint: str = "") -> str:
    """``decode_frame``'s text only, for callers with nowhere to keep the original bytes."""
    return decode_frame(raw, charset_hint)[0]
