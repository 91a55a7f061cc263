"""A test oracle for HL7 v2 positions, written independently of the code under test: every
position of a message as a plain dict, so a test can say which positions an edit may change and
check that every other one reads as before.  Also the shared message generators and samples."""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

from engine.hl7.encoding import normalize_segments

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
HEADERS = ("MSH", "BHS", "FHS")


def load_samples() -> dict[str, str]:
    """Every sample as the store keeps it: CR segment endings, the final CR included."""
    return {path.name: normalize_segments(path.read_text(encoding="utf-8")) + "\r"
            for path in sorted(SAMPLES_DIR.glob("*.hl7"))}


def delimiters(text: str) -> tuple[str, str, str, str, str]:
    """(field, component, repetition, escape, subcomponent) read from MSH-1/MSH-2."""
    field_sep = text[3]
    encoding = text[4:].split(field_sep, 1)[0].split("\r", 1)[0]
    encoding += "^~\\&"[len(encoding):]
    return field_sep, encoding[0], encoding[1], encoding[2], encoding[3]


def segments(text: str) -> list[str]:
    body = text[1:] if text[:1] == "\ufeff" else text
    parts = body.split("\r")
    if body.endswith("\r"):
        parts.pop()
    return parts


def model(text: str) -> dict[tuple, str]:
    """{(SEG, occurrence): segment text} and {(SEG, occurrence, field, rep, comp, sub): text}
    for every position present, MSH-1/MSH-2 as whole values (1-based, MSH counted as the
    standard does)."""
    field_sep, comp, rep, _esc, sub = delimiters(text)
    out: dict[tuple, str] = {}
    seen: dict[str, int] = {}
    for segment in segments(text):
        name = segment[:3]
        seen[name] = occurrence = seen.get(name, 0) + 1
        out[(name, occurrence)] = segment
        parts = segment.split(field_sep)
        if name in HEADERS:
            numbered = [(1, field_sep), (2, parts[1])] + list(enumerate(parts[2:], 3))
        else:
            numbered = list(enumerate(parts[1:], 1))
        for number, value in numbered:
            if name in HEADERS and number <= 2:
                out[(name, occurrence, number, 1, 1, 1)] = value
                continue
            for r, rep_text in enumerate(value.split(rep), 1):
                for c, comp_text in enumerate(rep_text.split(comp), 1):
                    for s, sub_text in enumerate(comp_text.split(sub), 1):
                        out[(name, occurrence, number, r, c, s)] = sub_text
    return out


def changed_keys(before: dict, after: dict) -> set[tuple]:
    """The positions that read differently (an absent position reads as '')."""
    return {key for key in before.keys() | after.keys()
            if before.get(key, "") != after.get(key, "")}


def within(key: tuple, segment: str, occurrence: int, field: int | None = None,
           rep: int | None = None, comp: int | None = None, sub: int | None = None) -> bool:
    """Whether ``key`` lies inside the given position (None = any)."""
    if key[:2] != (segment, occurrence):
        return False
    if len(key) == 2:
        return True  # the segment's own text changes with any position in it
    for have, want in zip(key[2:], (field, rep, comp, sub)):
        if want is not None and have != want:
            return False
    return True


# -- generated messages ----------------------------------------------------------------------

_DELIMS = "|^~\\&#$%*@!?/+"

@st.composite
def delimiter_sets(draw) -> tuple[str, str]:
    """(field separator, 4 encoding characters), all distinct; the usual ones most often."""
    if draw(st.booleans()):
        return "|", "^~\\&"
    chars = draw(st.permutations(_DELIMS))
    return chars[0], "".join(chars[1:5])


# Letters, the usual and unusual delimiters, control characters (CR, LF, the MLLP bytes), non-ASCII.
ALPHABET = "aZ09 .-" + _DELIMS + "\r\n\t\x0b\x1c\x00\x7féß€😀"
TEXT = st.text(ALPHABET, max_size=8)
SEGMENT_NAMES = ("PID", "PV1", "OBX", "NTE", "ZAB", "ZXY", "EVN", "IN1", "AL1")


@st.composite
def messages(draw) -> str:
    """An HL7 v2 message with random delimiters and segments built of random text, separators
    (field, repetition, component, subcomponent) and escape sequences: empty and trailing fields,
    trailing spaces, odd repetitions all occur.  Sometimes no final CR."""
    field_sep, encoding = draw(delimiter_sets())
    comp, rep, esc, sub = encoding[0], encoding[1], encoding[2], encoding[3]
    tokens = st.sampled_from(["a", "Z9", " ", "é€", field_sep, field_sep, comp, comp, rep, sub,
                              f"{esc}F{esc}", f"{esc}X0D{esc}", f"{esc}S{esc}"])
    body = st.lists(tokens, max_size=24).map("".join)
    header = f"MSH{field_sep}{encoding}{field_sep}" + draw(body)
    names = st.sampled_from(SEGMENT_NAMES)
    segs = [f"{draw(names)}{field_sep}{draw(body)}" for _ in range(draw(st.integers(0, 6)))]
    text = "\r".join([header, *segs])
    return text + ("\r" if draw(st.booleans()) else "")
