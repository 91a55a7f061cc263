"""HL7 batches (FHS/BHS ... BTS/FTS): split into messages on segment names.

Why not ``hl7.parse_file``: it fully parses every message of the batch and its ParseException
quotes the offending segment (PHI).  Splitting on segment names touches nothing else.
"""

from __future__ import annotations

from engine.hl7.encoding import (
    _TRIM,
    DEFAULT_FIELD_SEP,
    HEADER_SEGMENTS,
    normalize_segments,
)


def split_batch(text: str) -> tuple[list[str], int | None]:
    """Split FHS/BHS/MSH.../BTS/FTS (or bare concatenated messages) into messages.

    Returns (messages, each segment ending with CR, declared count) where the declared count is the sum of the
    BTS-1 values, or None when any BTS lacks one (or there is no BTS).  Comparing it with
    ``len(messages)`` is the caller's decision.  ValueError, naming positions and segment types
    only, for: a segment before the first MSH, FHS not first or repeated, BHS inside an open
    batch, BTS without BHS, anything after FTS, a BHS without BTS or FHS without FTS (a
    truncated file), a BTS-1 that is not a number, or an FTS-1 (the file's batch count) that is
    not a number or does not match: the number of BHS batches, or with no BHS, 1 or the number of
    messages (both are seen from senders that write FHS/MSH.../FTS).
    """
    text = normalize_segments(text)
    field_sep = text[3] if text[:3] in HEADER_SEGMENTS and len(text) > 3 else DEFAULT_FIELD_SEP
    messages: list[list[str]] = []
    current: list[str] | None = None
    file_open = file_closed = batch_open = False
    counts: list[int | None] = []
    batches = 0
    file_count: int | None = None
    for position, segment in enumerate(text.split("\r"), start=1):
        if not segment.strip(_TRIM):
            continue
        name = segment[:3]
        if file_closed:
            raise ValueError(f"malformed batch: segment {position} follows FTS")
        if name == "MSH":
            current = [segment]
            messages.append(current)
        elif name == "FHS":
            if file_open or position != 1:
                raise ValueError(f"malformed batch: FHS at segment {position} is not the first")
            file_open = True
        elif name == "BHS":
            if batch_open:
                raise ValueError(f"malformed batch: BHS at segment {position} inside an open batch")
            batch_open, current = True, None
            batches += 1
        elif name == "BTS":
            if not batch_open:
                raise ValueError(f"malformed batch: BTS at segment {position} without BHS")
            batch_open, current = False, None
            count = (segment.split(field_sep) + [""])[1].strip()
            if count and not count.isdigit():
                raise ValueError(f"malformed batch: BTS-1 at segment {position} is not a number")
            counts.append(int(count) if count else None)
        elif name == "FTS":
            if not file_open or batch_open:
                raise ValueError(f"malformed batch: FTS at segment {position} out of place")
            file_closed, current = True, None
            count = (segment.split(field_sep) + [""])[1].strip()
            if count and not count.isdigit():
                raise ValueError(f"malformed batch: FTS-1 at segment {position} is not a number")
            file_count = int(count) if count else None
        elif current is None:
            raise ValueError(f"malformed batch: segment {position} is outside any message")
        else:
            current.append(segment)
    if batch_open or (file_open and not file_closed):
        raise ValueError("malformed batch: BHS without BTS or FHS without FTS (truncated?)")
    if file_count is not None:
        allowed = {batches} if batches else {1, len(messages)}
        if file_count not in allowed:
            held = f"{batches} batch(es) (BHS)" if batches else f"{len(messages)} message(s) and no BHS"
            raise ValueError(f"malformed batch: FTS-1 declares {file_count} batch(es) but the file holds {held}")
    declared = sum(counts) if counts and None not in counts else None
    return ["".join(segment + "\r" for segment in segs) for segs in messages], declared
