"""RFC 3339 timestamps and ISO 8601 durations (digest §1.4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ojs_core.timeutil import (
    format_duration,
    format_ts,
    from_epoch_ms,
    ms_between,
    parse_duration_ms,
    parse_ts,
    utc_ms,
)

SETTINGS = settings(max_examples=200, deadline=None)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


# --- parse_ts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01t00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01 00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00.123Z", datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)),
        ("2026-01-01T00:00:00.123456789Z", datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        ("2026-01-01T09:00:00+09:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2025-12-31T19:00:00-05:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00+00:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("  2026-01-01T00:00:00Z  ", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_ts_absolute(text: str, expected: datetime) -> None:
    parsed = parse_ts(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


def test_parse_ts_keeps_the_offset() -> None:
    parsed = parse_ts("2026-01-01T09:30:00+05:30")
    assert parsed.utcoffset() == timedelta(hours=5, minutes=30)
    assert parsed.hour == 9


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("+PT5S", timedelta(seconds=5)),
        ("+PT0.5S", timedelta(milliseconds=500)),
        ("+PT1M", timedelta(minutes=1)),
        ("+P1D", timedelta(days=1)),
        ("+PT1H30M", timedelta(hours=1, minutes=30)),
    ],
)
def test_parse_ts_relative(text: str, delta: timedelta) -> None:
    assert parse_ts(text, NOW) == NOW + delta


def test_parse_ts_relative_truncates_to_ms() -> None:
    now = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert parse_ts("+PT1S", now) == datetime(2026, 1, 1, 0, 0, 1, 123000, tzinfo=UTC)


def test_parse_ts_relative_needs_now() -> None:
    with pytest.raises(ValueError, match="reference"):
        parse_ts("+PT5S")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "2026-01-01",
        "2026-01-01T00:00:00",  # naive: no zone
        "2026-01-01T00:00Z",  # no seconds
        "2026-13-01T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-01-01T25:00:00Z",
        "2026-01-01T00:00:00+0500",
        "2026-01-01T00:00:00 UTC",
        "1767225600",
        "+5S",
        "+PTXS",
    ],
)
def test_parse_ts_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_ts(text, NOW)


# --- format_ts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00Z"),
        (datetime(2026, 1, 1, 0, 0, 0, 5000, tzinfo=UTC), "2026-01-01T00:00:00.005Z"),
        (datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), "2026-01-01T00:00:00.123456Z"),
        (
            datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=9))),
            "2026-01-01T09:00:00+09:00",
        ),
        (
            datetime(2025, 12, 31, 19, tzinfo=timezone(-timedelta(hours=5))),
            "2025-12-31T19:00:00-05:00",
        ),
        (
            datetime(2026, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2026-01-01T05:30:00+05:30",
        ),
        (
            datetime(2026, 1, 1, tzinfo=timezone(-timedelta(hours=3, minutes=30))),
            "2026-01-01T00:00:00-03:30",
        ),
    ],
)
def test_format_ts(dt: datetime, text: str) -> None:
    assert format_ts(dt) == text


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.123Z",
        "2026-06-15T12:34:56.789+05:30",
        "2026-06-15T12:34:56-08:00",
        "1999-12-31T23:59:59.999999+14:00",
    ],
)
def test_format_parse_round_trip_text(text: str) -> None:
    assert format_ts(parse_ts(text)) == text


offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)


@SETTINGS
@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9998, 12, 31),
        timezones=st.just(UTC) | offsets,
    )
)
def test_format_parse_round_trip_property(dt: datetime) -> None:
    text = format_ts(dt)
    back = parse_ts(text)
    assert back == dt
    assert back.utcoffset() == dt.utcoffset()
    assert format_ts(back) == text


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("PT1S", 1000),
        ("PT0.5S", 500),
        ("PT1.5S", 1500),
        ("PT30S", 30_000),
        ("PT5M", 300_000),
        ("PT1H", 3_600_000),
        ("PT1H30M", 5_400_000),
        ("P1D", 86_400_000),
        ("P1W", 604_800_000),
        ("P1DT1S", 86_401_000),
        ("PT0S", 0),
        ("1500ms", 1500),
        ("2s", 2000),
        ("1.5s", 1500),
        ("30m", 1_800_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        (" PT1S ", 1000),
    ],
)
def test_parse_duration_ms(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P",
        "PT",
        "P1DT",
        "PT1",
        "1",
        "P1Y",
        "P1M",
        "PT-1S",
        "-1s",
        "1.5",
        "abc",
        "PT1S junk",
        "1 s",
    ],
)
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "PT0S"),
        (1000, "PT1S"),
        (1500, "PT1.5S"),
        (500, "PT0.5S"),
        (300_000, "PT300S"),
        (1, "PT0.001S"),
    ],
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text


@SETTINGS
@given(st.integers(min_value=0, max_value=10**15))
def test_duration_round_trip(ms: int) -> None:
    assert parse_duration_ms(format_duration(ms)) == ms


# --- helpers ----------------------------------------------------------------------------------


def test_utc_ms_truncates() -> None:
    dt = datetime(2026, 1, 1, 0, 0, 0, 123999, tzinfo=UTC)
    assert utc_ms(dt) == datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)


def test_ms_between() -> None:
    later = NOW + timedelta(seconds=2, milliseconds=5)
    assert ms_between(NOW, later) == 2005
    assert ms_between(later, NOW) == -2005


def test_from_epoch_ms() -> None:
    assert from_epoch_ms(int(NOW.timestamp() * 1000) + 250) == NOW + timedelta(milliseconds=250)


def test_format_ts_keeps_the_zone_of_equal_instants() -> None:
    # format_ts remembers recent results; equal instants in other zones must not share them.
    utc = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    plus_one = utc.astimezone(timezone(timedelta(hours=1)))
    assert utc == plus_one
    assert format_ts(utc) == "2026-03-01T12:00:00Z"
    assert format_ts(plus_one) == "2026-03-01T13:00:00+01:00"
    assert format_ts(utc) == "2026-03-01T12:00:00Z"
