"""Durations, sizes and addresses as the contract (DESIGN.md §3.1-3.2) writes them."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.units import format_address, parse_address, parse_duration, parse_size

SECONDS_PER = {"ms": 0.001, "s": 1, "m": 60, "h": 60 * 60, "d": 24 * 60 * 60}
BYTES_PER = {"B": 1, "KB": 1024, "MB": 1024 * 1024, "GB": 1024 * 1024 * 1024}


@pytest.mark.parametrize("text, seconds", [
    ("500ms", 0.5), ("10s", 10.0), ("5m", 300.0), ("2h", 7200.0), ("30d", 2_592_000.0),
    ("0", 0.0), ("10", 10.0), (0, 0.0), (90, 90.0), (2.5, 2.5), ("1.5h", 5400.0), (" 10 s ", 10.0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10x", "", "s", "-5s", "5 m s", "10S", "1w", "ten seconds", "1e3s"])
def test_bad_duration_text_says_what_to_write(text):
    with pytest.raises(ValueError, match="is not a duration.*500ms, 10s, 5m, 2h, 30d"):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, None, [], -1, math.inf, math.nan])
def test_bad_duration_values(value):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_duration_reason_quotes_the_text():
    with pytest.raises(ValueError) as info:
        parse_duration("10x")
    assert str(info.value) == "'10x' is not a duration; use e.g. 500ms, 10s, 5m, 2h, 30d"


@given(st.integers(min_value=0, max_value=10**7), st.sampled_from(sorted(SECONDS_PER)))
def test_duration_units_scale(number, unit):
    assert parse_duration(f"{number}{unit}") == pytest.approx(number * SECONDS_PER[unit])


@pytest.mark.parametrize("text, size", [
    ("512KB", 512 * 1024), ("1MB", 1024 * 1024), ("1GB", 1024**3), ("100B", 100), (100, 100),
    ("0", 0), ("1kb", 1024), ("2MiB", 2 * 1024 * 1024), ("1.5KB", 1536),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("value", ["1TB", "MB", "-1KB", "", "lots", True, None, -5, math.inf])
def test_bad_sizes(value):
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(BYTES_PER)))
def test_size_units_scale(number, unit):
    assert parse_size(f"{number}{unit}") == number * BYTES_PER[unit]


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:2575", ("127.0.0.1", 2575)),
    ("[::1]:2575", ("::1", 2575)),
    ("localhost:0", ("localhost", 0)),
    ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ("mllp.example-hospital.org:6661", ("mllp.example-hospital.org", 6661)),
    (" 10.1.2.3:80 ", ("10.1.2.3", 80)),
])
def test_addresses(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text, reason", [
    ("127.0.0.1:70000", r"port 70000 is out of range \(0-65535\)"),
    ("2575", "has no port"),
    (":2575", "has no host"),
    ("::1:2575", "IPv6 address goes in brackets"),
    ("[::1]2575", "is not an address"),
    ("[::1", "is not an address"),
    ("[not-v6]:1", "is not an IPv6 address"),
    ("host:http", "is not a number"),
    ("host:-1", "is not a number"),
    ("host:", "is not a number"),
    ("bad host:1", "is not a host name"),
    ("-host:1", "is not a host name"),
])
def test_bad_addresses(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_address(text)


@pytest.mark.parametrize("value", [2575, None, ("127.0.0.1", 2575)])
def test_address_must_be_text(value):
    with pytest.raises(ValueError, match="is not an address"):
        parse_address(value)


@given(st.ip_addresses(), st.integers(min_value=0, max_value=65535))
def test_address_round_trip(ip, port):
    address = (str(ip), port)
    assert parse_address(format_address(address)) == address


# -- range-checked input of the CLI and the API (issue 15, point 6) ----------------------------
from datetime import datetime, timezone  # noqa: E402

from engine.core.units import (MAX_INTEGER, parse_age, parse_int, parse_message_id,  # noqa: E402
                               parse_time_bound)


@pytest.mark.parametrize("text, number", [("1", 1), ("+7", 7), (" 42 ", 42), ("007", 7), (9, 9),
                                          (str(MAX_INTEGER), MAX_INTEGER)])
def test_message_ids(text, number):
    assert parse_message_id(text) == number


@pytest.mark.parametrize("text, reason", [
    ("²", "must be a whole number"), ("1.5", "must be a whole number"), ("", "must be a whole number"),
    ("0x10", "must be a whole number"), (True, "must be a whole number"), ("0", "out of range"),
    ("-5", "out of range"), (str(MAX_INTEGER + 1), "out of range"), ("9" * 5000, "out of range"),
])
def test_bad_message_ids(text, reason):
    with pytest.raises(ValueError, match=reason) as caught:
        parse_message_id(text)
    assert len(str(caught.value)) < 120          # a 5,000-digit value is not echoed whole


def test_int_ranges_name_the_value():
    assert parse_int("0", "offset") == 0
    with pytest.raises(ValueError, match=r"limit must be between 1 and 1000; '1001' is out of range"):
        parse_int("1001", "limit", minimum=1, maximum=1000)


@pytest.mark.parametrize("text", ["99999999999d", "36601d", "9999-12-31T23:59:59-14:00",
                                  "0001-01-01T00:00:00+14:00", "yesterday"])
def test_time_bounds_out_of_range_are_one_sentence(text):
    with pytest.raises(ValueError) as caught:
        parse_time_bound(text)
    assert "\n" not in str(caught.value)


def test_time_bounds_are_utc():
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert parse_time_bound("1d", now) == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_time_bound("2026-01-01T02:00:00+02:00") == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_time_bound("2026-01-01") == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_time_bound("9999-12-31T23:59:59+00:00").year == 9999


@pytest.mark.parametrize("text, reason", [("0", "more than 0"), ("99999999999d", "further than"),
                                          ("soon", "not a duration")])
def test_bad_ages(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_age(text, "--older-than")
    assert parse_age("30d") == 30 * 86400
