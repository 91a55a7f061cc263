"""Property-based tests (hypothesis) of the parts every byte from outside goes through first.

* The MLLP framer (``FrameDecoder``) and the listener protocol (``MllpServerProtocol`` over a
  ``StringTransport``): for any byte stream cut into any reads, nothing raises, every complete
  frame is found and answered exactly once, in arrival order, whatever order the store commits in.
  The sink here is a stub at the protocol's boundary (it returns Deferred receipts, fired when the
  test says); the real daemon is exercised by tests/e2e/test_reliability_catalogue.py.
* HL7 escaping and the path accessor: for any text value and any legal delimiters, ``escape``
  then reading the value back with ``HL7View`` returns it, and no value can add a field,
  component, repetition or segment (RELIABILITY 19).  ``build_segment`` likewise.
* The path accessor and ``build_ack`` never raise on arbitrary text.

Expected results come from how each input was *built* (the payloads put into a stream, the value
put into a field), or from feeding the same bytes whole: never from re-running the code's logic.
"""

from __future__ import annotations

from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from engine.core.channel import Receipt
from engine.connectors.mllp.source import MllpServerFactory
from engine.connectors.mllp.framing import FrameDecoder
from engine.hl7.view import HL7View
from engine.hl7.ack import build_ack, parse_ack
from engine.hl7.encoding import build_segment, escape
from engine.hl7.msh import peek_msh

VT, FS, CR = 0x0B, 0x1C, 0x0D
FAST = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


# -- strategies -------------------------------------------------------------------------------

def _bytes_without(*excluded: int, max_size: int = 40):
    allowed = [b for b in range(256) if b not in excluded]
    return st.lists(st.sampled_from(allowed), max_size=max_size).map(bytes)


junk = _bytes_without(VT, max_size=12)            # what may sit between frames
payload = _bytes_without(FS, max_size=60)         # what may sit inside a frame (0x0B included)


@st.composite
def chunked(draw, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (down to one byte per read)."""
    if not data:
        return [b""]
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=min(len(data) - 1, 30)))
                  if len(data) > 1 else [])
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@st.composite
def framed_stream(draw):
    """(stream, payloads, junk byte count): frames with junk between them, built piece by piece."""
    payloads = draw(st.lists(payload, max_size=8))
    stream, junk_total = bytearray(), 0
    for item in payloads:
        before = draw(junk)
        stream += before + bytes([VT]) + item + bytes([FS, CR])
        junk_total += len(before)
    tail = draw(junk)
    return bytes(stream + tail), payloads, junk_total + len(tail)


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list:
    events = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def shape(events) -> tuple:
    """What must not depend on how the stream was cut: frames and stops in order, junk in total."""
    ordered = tuple((e.kind, e.payload if e.kind != "oversize" else b"") for e in events if e.kind != "junk")
    return ordered, sum(e.count for e in events if e.kind == "junk")


# -- the decoder --------------------------------------------------------------------------------

@FAST
@given(st.data())
def test_decoder_finds_exactly_the_frames_the_stream_was_built_from(data):
    stream, payloads, junk_total = data.draw(framed_stream())
    chunks = data.draw(chunked(stream))
    decoder = FrameDecoder(max_size=64)
    events = feed_all(decoder, chunks)
    assert [e.payload for e in events if e.kind == "frame"] == payloads
    assert sum(e.count for e in events if e.kind == "junk") == junk_total
    assert {e.kind for e in events} <= {"frame", "junk"}
    assert not decoder.partial and not decoder.broken


@FAST
@given(st.data(), st.binary(max_size=300), st.integers(1, 80), st.booleans())
def test_decoder_on_any_bytes_never_raises_and_ignores_how_reads_are_cut(data, stream, max_size, lenient):
    chunks = data.draw(chunked(stream))
    whole = FrameDecoder(max_size, lenient_end=lenient)
    cut = FrameDecoder(max_size, lenient_end=lenient)
    whole_events = whole.feed(stream)
    cut_events = feed_all(cut, chunks)
    assert shape(cut_events) == shape(whole_events)
    assert (cut.partial, cut.broken) == (whole.partial, whole.broken)
    for event in cut_events:
        if event.kind == "frame":
            assert FS not in event.payload and len(event.payload) <= max_size
    stops = [e.kind for e in cut_events if e.kind in ("bad_end", "oversize")]
    assert len(stops) <= 1 and (not stops or cut_events[-1].kind == stops[0])   # nothing after a stop


# -- the listener protocol ----------------------------------------------------------------------

class HeldSink:
    """The channel's side as the protocol sees it: each ``receive`` returns a Deferred receipt that
    fires when ``release`` says (in any order), or at once when ``immediate``."""

    def __init__(self, immediate: bool) -> None:
        self.immediate = immediate
        self.held: list[defer.Deferred] = []
        self.received: list[str] = []

    def receive(self, text, *, msh=None, idempotency_key=None, original=None):
        self.received.append(text)
        receipt = Receipt(len(self.received), True)
        if self.immediate:
            return defer.succeed(receipt)
        d = defer.Deferred()
        self.held.append((d, receipt))
        return d

    def release(self, order: list[int]) -> None:
        for index in order:
            d, receipt = self.held[index]
            d.callback(receipt)

    def note_rejected(self, reason: str) -> None:
        pass

    def note_event(self, kind: str, detail: str) -> None:
        pass


@contextmanager
def no_internal_errors():
    """The protocol turns an exception into an AR "internal error" and logs it: that must not happen."""
    failures: list = []

    def observe(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not failures, failures[0].getTraceback()


def connect(sink, *, max_size: int = 1 << 20):
    options = {"max_message_size": max_size, "idle_timeout": 0, "max_connections": 10,
               "lenient_end_byte": False, "split": "none", "ack": "stored"}
    factory = MllpServerFactory("prop", sink, options)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def answers(transport: StringTransport) -> list[tuple[str, str]]:
    """(MSA-1, MSA-2) of every frame written back, in order."""
    events = FrameDecoder(1 << 24).feed(transport.value())
    assert all(e.kind == "frame" for e in events), [e.kind for e in events]
    return [parse_ack(e.payload.decode("utf-8"))[:2] for e in events]


def hl7_payload(control_id: str) -> bytes:
    return (f"MSH|^~\\&|EHR|HOSP|SWB|AG|20240101||ADT^A08|{control_id}|P|2.5\rPID|1||M1").encode()


frame_kind = st.sampled_from(["hl7", "hl7-with-vt", "garbage"])
garbage = _bytes_without(FS, ord("M"), max_size=30)   # cannot start with MSH


@FAST
@given(st.data(), st.lists(frame_kind, max_size=8), st.booleans())
def test_server_answers_every_frame_once_in_arrival_order(data, kinds, immediate):
    """Valid messages get AA with their MSH-10, a 0x0B inside gets AR with its MSH-10, anything
    else AR with an empty MSA-2: in the order the frames came, whatever order stores finish in."""
    stream, expected = bytearray(), []
    for number, kind in enumerate(kinds):
        control_id = f"C{number}"
        if kind == "hl7":
            body, answer = hl7_payload(control_id), ("AA", control_id)
        elif kind == "hl7-with-vt":
            body, answer = hl7_payload(control_id) + b"\x0b", ("AR", control_id)
        else:
            body, answer = data.draw(garbage), ("AR", "")
        stream += data.draw(junk) + bytes([VT]) + body + bytes([FS, CR])
        expected.append(answer)
    sink = HeldSink(immediate)
    with no_internal_errors():
        protocol, transport = connect(sink)
        for chunk in data.draw(chunked(bytes(stream))):
            protocol.dataReceived(chunk)
        if not immediate:
            sink.release(data.draw(st.permutations(range(len(sink.held)))))
    assert answers(transport) == expected
    assert len(sink.received) == kinds.count("hl7")       # only acceptable messages reach the store
    assert not transport.disconnecting


@FAST
@given(st.data(), st.binary(max_size=400), st.integers(8, 200))
def test_server_on_any_bytes_answers_each_complete_frame_once(data, stream, max_size):
    sink = HeldSink(immediate=False)
    with no_internal_errors():
        protocol, transport = connect(sink, max_size=max_size)
        for chunk in data.draw(chunked(stream)):
            protocol.dataReceived(chunk)
        sink.release(data.draw(st.permutations(range(len(sink.held)))))
    found = FrameDecoder(max_size).feed(stream)      # the frames in the stream, read in one piece
    complete = sum(1 for e in found if e.kind in ("frame", "bad_end"))
    written = answers(transport)
    assert len(written) == complete
    assert all(code in ("AA", "AR") for code, _control_id in written)
    if any(e.kind in ("bad_end", "oversize") for e in found):
        assert transport.disconnecting            # a broken stream is not read any further


# -- HL7 escaping and paths (RELIABILITY 19) ----------------------------------------------------

DELIMITER_POOL = "|^~\\&#$%*!@+=;:?/<>"
delimiters = st.permutations(DELIMITER_POOL).map(lambda chars: (chars[0], "".join(chars[1:5])))


def message(field_sep: str, encoding: str, segment: str) -> str:
    comp = encoding[0]
    msh = field_sep.join(["MSH", encoding, "EHR", "HOSP", "SWB", "AG", "20240101", "",
                          f"ADT{comp}A08", "X1", "P", "2.5"])
    return "\r".join([msh, segment, field_sep.join(["PID", "1", "", "M1"])])


@FAST
@given(st.text(), delimiters)
def test_an_escaped_value_reads_back_and_adds_nothing(value, delims):
    field_sep, encoding = delims
    comp, rep, sub = encoding[0], encoding[1], encoding[3]
    escaped = escape(value, encoding, field_sep)
    segment = field_sep.join(["ZZZ", "left", escaped, f"a{comp}{escaped}{comp}b",
                              f"x{rep}{escaped}", f"s{sub}{escaped}", "right"])
    view = HL7View(message(field_sep, encoding, segment))
    assert view.segment_names() == ["MSH", "ZZZ", "PID"]
    zzz = view.segments("ZZZ")[0]
    assert len(str(zzz).split(field_sep)) == 7
    assert view["ZZZ.2"] == value
    assert (view["ZZZ.3.1"], view["ZZZ.3.2"], view["ZZZ.3.3"], view["ZZZ.3.4"]) == ("a", value, "b", "")
    assert (view["ZZZ.4(1)"], view["ZZZ.4(2)"], view["ZZZ.4(3)"]) == ("x", value, "")
    assert (view["ZZZ.5.1.1"], view["ZZZ.5.1.2"], view["ZZZ.5.1.3"]) == ("s", value, "")
    assert (view["ZZZ.1"], view["ZZZ.6"], view["ZZZ.7"]) == ("left", "right", "")
    for forbidden in ("\r", "\n", "\x0b", "\x1c", field_sep, comp, rep, sub):
        assert forbidden not in escaped


leaf = st.one_of(st.none(), st.text(max_size=20))
component = st.one_of(leaf, st.lists(leaf, min_size=2, max_size=3))
field_value = st.one_of(leaf, st.lists(component, min_size=2, max_size=4))


def read_back(view: HL7View, number: int, value) -> None:
    if not isinstance(value, list):
        assert view[f"ZZZ.{number}"] == (value or "")
        return
    for c_number, comp in enumerate(value, start=1):
        if not isinstance(comp, list):
            assert view[f"ZZZ.{number}.{c_number}"] == (comp or "")
            continue
        for s_number, part in enumerate(comp, start=1):
            assert view[f"ZZZ.{number}.{c_number}.{s_number}"] == (part or "")


@FAST
@given(st.lists(field_value, max_size=8), delimiters)
def test_build_segment_reads_back_field_by_field(fields, delims):
    field_sep, encoding = delims
    segment = build_segment("ZZZ", fields, encoding, field_sep)
    view = HL7View(message(field_sep, encoding, segment))
    assert view.segment_names() == ["MSH", "ZZZ", "PID"]
    assert len(segment.split(field_sep)) == len(fields) + 1
    for number, value in enumerate(fields, start=1):
        read_back(view, number, value)
    assert view[f"ZZZ.{len(fields) + 1}"] == ""


path = st.builds(
    lambda seg, seg_rep, fld, rep, comp, sub: seg + (f"({seg_rep})" if seg_rep else "")
    + (f".{fld}" + (f"({rep})" if rep else "") + (f".{comp}" + (f".{sub}" if sub else "") if comp else "")
       if fld else ""),
    st.sampled_from(["MSH", "PID", "ZZZ", "BHS", "FHS"]), st.one_of(st.none(), st.integers(1, 3)),
    st.one_of(st.none(), st.integers(1, 14)), st.one_of(st.none(), st.integers(1, 3)),
    st.one_of(st.none(), st.integers(1, 4)), st.one_of(st.none(), st.integers(1, 3)),
)
hl7ish_text = st.text(alphabet=st.sampled_from(list("MSHPIDZ|^~\\&#\r\nX0 \x0b\x1c\u00e9")), max_size=120)


@FAST
@given(st.one_of(hl7ish_text, st.text(max_size=120)), st.lists(path, min_size=1, max_size=5))
def test_path_lookup_on_any_text_is_a_string(text, paths):
    view = HL7View(text)
    for p in paths:
        assert isinstance(view[p], str)
    assert isinstance(view.segment_names(), list)


header_field = st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=12)


@FAST
@given(delimiters, st.lists(header_field, max_size=16), st.sampled_from(["", "\rPID|1", "\nEVN|x"]))
def test_an_ack_for_any_msh_has_two_segments_and_the_control_id(delims, fields, rest):
    field_sep, encoding = delims
    msh = peek_msh(field_sep.join(["MSH", encoding, *fields]) + rest)
    assert msh is not None and msh.encoding == encoding
    ack = build_ack(msh, "AA")
    assert ack.endswith("\r") and len(ack.split("\r")) == 3   # two segments, each ending with CR
    code, control_id, _text = parse_ack(ack)
    assert code == "AA" and control_id == msh.field(10).strip()
