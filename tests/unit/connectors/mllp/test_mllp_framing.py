"""The MLLP decoder over byte streams: RELIABILITY 1-10 at the framing level."""

from engine.connectors.mllp.framing import FrameDecoder, frame

MSG = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|X1|P|2.5\rPID|1||123"


def kinds(events):
    return [e.kind for e in events]


def test_one_frame_round_trip():
    decoder = FrameDecoder(1024)
    events = decoder.feed(frame(MSG))
    assert kinds(events) == ["frame"]
    assert events[0].payload == MSG
    assert not decoder.partial


def test_junk_before_start_is_counted_and_dropped():  # RELIABILITY 1
    decoder = FrameDecoder(1024)
    events = decoder.feed(b"\x00\x00garbage" + frame(MSG))
    assert kinds(events) == ["junk", "frame"]
    assert events[0].count == 9
    assert events[1].payload == MSG


def test_hl7_without_frame_is_junk_only():  # RELIABILITY 2
    decoder = FrameDecoder(1024)
    assert kinds(decoder.feed(MSG)) == ["junk"]
    assert not decoder.partial


def test_end_byte_without_cr_is_strict_by_default():  # RELIABILITY 3, 4
    decoder = FrameDecoder(1024)
    events = decoder.feed(b"\x0b" + MSG + b"\x1cX")
    assert kinds(events) == ["bad_end"]
    assert decoder.broken
    assert decoder.feed(frame(MSG)) == []


def test_lenient_end_byte_option():  # RELIABILITY 3
    decoder = FrameDecoder(1024, lenient_end=True)
    events = decoder.feed(b"\x0b" + MSG + b"\x1c" + b"\x0b" + MSG + b"\x1c\x0d")
    assert kinds(events) == ["frame", "frame"]


def test_end_byte_split_from_cr_waits():
    decoder = FrameDecoder(1024)
    assert decoder.feed(b"\x0b" + MSG + b"\x1c") == []
    events = decoder.feed(b"\x0d")
    assert kinds(events) == ["frame"] and events[0].payload == MSG


def test_partial_frame_is_reported_partial():  # RELIABILITY 5
    decoder = FrameDecoder(1024)
    assert decoder.feed(b"\x0b" + MSG[:10]) == []
    assert decoder.partial


def test_start_byte_inside_frame_reaches_the_caller():  # RELIABILITY 6: the caller answers AR
    decoder = FrameDecoder(1024)
    events = decoder.feed(frame(MSG[:20] + b"\x0b" + MSG[20:]))
    assert kinds(events) == ["frame"]
    assert b"\x0b" in events[0].payload


def test_oversize_frame_stops_before_growing():  # RELIABILITY 8
    decoder = FrameDecoder(100)
    events = decoder.feed(b"\x0b" + b"A" * 60)
    assert events == []
    events = decoder.feed(b"A" * 60)
    assert kinds(events) == ["oversize"]
    assert decoder.broken and len(decoder.buffer) == 0
    assert decoder.feed(b"A" * 10_000) == []
    assert len(decoder.buffer) == 0


def test_oversize_complete_frame_in_one_read():
    decoder = FrameDecoder(10)
    assert kinds(decoder.feed(frame(b"B" * 50))) == ["oversize"]


def test_several_frames_in_one_read_in_order():  # RELIABILITY 9
    decoder = FrameDecoder(1024)
    payloads = [MSG.replace(b"X1", f"X{i}".encode()) for i in range(5)]
    events = decoder.feed(b"".join(frame(p) for p in payloads))
    assert [e.payload for e in events] == payloads


def test_one_byte_at_a_time():  # RELIABILITY 10
    decoder = FrameDecoder(1024)
    stream = frame(MSG) + frame(MSG + b"2")
    events = []
    for i in range(len(stream)):
        events.extend(decoder.feed(stream[i:i + 1]))
    assert [e.payload for e in events] == [MSG, MSG + b"2"]


def test_empty_frame_is_a_frame():  # RELIABILITY 12: the caller answers AR
    decoder = FrameDecoder(1024)
    events = decoder.feed(b"\x0b\x1c\x0d")
    assert kinds(events) == ["frame"] and events[0].payload == b""
