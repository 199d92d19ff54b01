"""Cron expressions, time zones, next-fire times and registration requests (digest §7.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ojs_core.cron import (
    OVERLAP_POLICIES,
    next_fire,
    parse_cron_request,
    validate_expression,
    validate_timezone,
)
from ojs_core.errors import ValidationError

SETTINGS = settings(max_examples=200, deadline=None)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "0 0 * * *",
        "*/15 * * * *",
        "0 9-17 * * 1-5",
        "0 0 1,15 * *",
        "0 0 * JAN,jul SUN",
        "0 0 * * 7",
        "@daily",
        "@hourly",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@midnight",
        "@DAILY",
        "*/30 * * * * *",
        "0 0 9 * * *",
        "@every 30s",
        "@every 1h30m",
        "@every 500ms",
        "  * * * * *  ",
    ],
)
def test_valid_expressions(expr: str) -> None:
    assert validate_expression(expr) == expr.strip()


@pytest.mark.parametrize(
    "expr",
    [
        "not a valid cron",
        "0 0 0 0 0 0 0",
        "99 25 32 13 8",
        "*/0 * * * *",
        "0 */0 * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * *",
        "",
        "   ",
        "@sometimes",
        "@every",
        "@every 0s",
        "@every 30",
        "@every soon",
        None,
        5,
    ],
)
def test_invalid_expressions(expr: Any) -> None:
    with pytest.raises(ValidationError) as info:
        validate_expression(expr)
    assert info.value.path == "expression"
    assert info.value.status == 400
    assert info.value.code == "invalid_request"


def test_expression_error_path_follows_field() -> None:
    with pytest.raises(ValidationError) as info:
        validate_expression("bad", "cron")
    assert info.value.path == "cron"


@SETTINGS
@given(
    st.integers(0, 59),
    st.integers(0, 23),
    st.integers(1, 28),
    st.integers(1, 12),
    st.integers(0, 7),
)
def test_in_range_fields_accepted(minute: int, hour: int, dom: int, month: int, dow: int) -> None:
    expr = f"{minute} {hour} {dom} {month} {dow}"
    assert validate_expression(expr) == expr


@SETTINGS
@given(st.integers(0, 4), st.integers(100, 10**6))
def test_out_of_range_fields_rejected(position: int, value: int) -> None:
    fields = ["0", "0", "1", "1", "*"]
    fields[position] = str(value)
    with pytest.raises(ValidationError):
        validate_expression(" ".join(fields))


# --- time zones -------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin"])
def test_valid_timezones(tz: str) -> None:
    assert validate_timezone(tz) == tz


@pytest.mark.parametrize(
    "tz",
    ["EST", "+05:00", "UTC+5", "Etc/GMT+5", "Mars/Olympus", "", None, 3, "../etc/passwd", "GMT"],
)
def test_invalid_timezones(tz: Any) -> None:
    with pytest.raises(ValidationError) as info:
        validate_timezone(tz)
    assert info.value.path == "timezone"


# --- next_fire --------------------------------------------------------------------------------


def test_next_fire_tokyo_morning_is_utc_midnight() -> None:
    after = datetime(2025, 12, 31, 12, tzinfo=UTC)
    fire = next_fire("0 9 * * *", "Asia/Tokyo", after)
    assert fire == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert fire.utcoffset() == timedelta(0)


def test_next_fire_is_strictly_after() -> None:
    assert next_fire("0 9 * * *", "Asia/Tokyo", NOW) == NOW + timedelta(days=1)
    assert next_fire("* * * * *", "UTC", NOW) == NOW + timedelta(minutes=1)
    assert next_fire("@hourly", "UTC", NOW + timedelta(minutes=59, seconds=59)) == NOW + timedelta(
        hours=1
    )


def test_next_fire_shortcuts() -> None:
    assert next_fire("@daily", "UTC", NOW) == NOW + timedelta(days=1)
    # 2026-01-01 is a Thursday; @weekly is Sunday midnight.
    assert next_fire("@weekly", "UTC", NOW) == datetime(2026, 1, 4, tzinfo=UTC)
    assert next_fire("@monthly", "UTC", NOW) == datetime(2026, 2, 1, tzinfo=UTC)
    assert next_fire("@yearly", "UTC", NOW) == datetime(2027, 1, 1, tzinfo=UTC)


def test_next_fire_new_york_respects_dst() -> None:
    winter = next_fire("0 9 * * *", "America/New_York", NOW)
    assert winter == datetime(2026, 1, 1, 14, tzinfo=UTC)
    summer = next_fire("0 9 * * *", "America/New_York", datetime(2026, 7, 1, tzinfo=UTC))
    assert summer == datetime(2026, 7, 1, 13, tzinfo=UTC)


def test_next_fire_seconds_first() -> None:
    assert next_fire("*/15 * * * * *", "UTC", NOW) == NOW + timedelta(seconds=15)
    assert next_fire("30 0 9 * * *", "UTC", NOW) == NOW + timedelta(hours=9, seconds=30)


def test_next_fire_drops_sub_second_precision() -> None:
    after = NOW + timedelta(milliseconds=500)
    assert next_fire("* * * * *", "UTC", after) == NOW + timedelta(minutes=1)


def test_next_fire_every_is_anchored() -> None:
    assert next_fire("@every 30s", "UTC", NOW, anchor=NOW) == NOW + timedelta(seconds=30)
    later = NOW + timedelta(seconds=45)
    assert next_fire("@every 30s", "UTC", later, anchor=NOW) == NOW + timedelta(seconds=60)
    exact = NOW + timedelta(seconds=60)
    assert next_fire("@every 30s", "UTC", exact, anchor=NOW) == NOW + timedelta(seconds=90)
    assert next_fire("@every 1h30m", "UTC", NOW) == NOW + timedelta(minutes=90)


@SETTINGS
@given(st.integers(1, 86_400), st.integers(0, 10**7))
def test_every_fires_on_the_anchor_grid(period_s: int, elapsed_ms: int) -> None:
    after = NOW + timedelta(milliseconds=elapsed_ms)
    fire = next_fire(f"@every {period_s}s", "UTC", after, anchor=NOW)
    assert fire > after
    assert fire - timedelta(seconds=period_s) <= after
    assert (fire - NOW) % timedelta(seconds=period_s) == timedelta(0)


@SETTINGS
@given(
    st.sampled_from(["* * * * *", "*/5 * * * *", "0 * * * *", "30 2 * * *", "0 0 * * 1", "@daily"]),
    st.sampled_from(["UTC", "Asia/Tokyo", "America/New_York", "Asia/Kolkata"]),
    st.integers(0, 365 * 86_400),
)
def test_next_fire_is_in_the_future_and_on_the_minute(expr: str, tz: str, offset_s: int) -> None:
    after = NOW + timedelta(seconds=offset_s)
    fire = next_fire(expr, tz, after)
    assert fire > after
    assert fire.utcoffset() == timedelta(0)
    assert fire.second == 0
    assert fire.microsecond == 0
    assert fire - after <= timedelta(days=7, hours=1)


# --- parse_cron_request -----------------------------------------------------------------------


def test_openapi_shape() -> None:
    cron = parse_cron_request(
        {
            "name": "nightly-report",
            "expression": "0 9 * * *",
            "timezone": "Asia/Tokyo",
            "overlap_policy": "cancel",
            "job_template": {"type": "report.build", "args": [1], "options": {"queue": "reports"}},
        },
        NOW,
    )
    assert cron.name == "nightly-report"
    assert cron.expression == "0 9 * * *"
    assert cron.timezone == "Asia/Tokyo"
    assert cron.overlap_policy == "cancel_previous"
    assert cron.enabled is True
    assert cron.job_template == {
        "type": "report.build",
        "args": [1],
        "options": {"queue": "reports"},
    }
    assert cron.created_at == cron.updated_at == NOW
    assert cron.next_run_at == NOW + timedelta(days=1)
    assert cron.last_run_at is None
    assert cron.run_count == 0


def test_sdk_shape() -> None:
    cron = parse_cron_request(
        {
            "name": "cleanup",
            "cron": "@hourly",
            "type": "files.cleanup",
            "args": ["/tmp"],
            "options": {"queue": "maintenance"},
            "meta": {"owner": "ops"},
            "description": "hourly cleanup",
        },
        NOW,
    )
    assert cron.expression == "@hourly"
    assert cron.timezone == "UTC"
    assert cron.overlap_policy == "skip"
    assert cron.description == "hourly cleanup"
    assert cron.job_template == {
        "type": "files.cleanup",
        "args": ["/tmp"],
        "options": {"queue": "maintenance"},
        "meta": {"owner": "ops"},
    }
    assert cron.next_run_at == NOW + timedelta(hours=1)


def test_both_shapes_give_the_same_entry() -> None:
    a = parse_cron_request(
        {
            "name": "n",
            "expression": "*/5 * * * *",
            "job_template": {"type": "t", "args": [], "options": {"queue": "q"}},
        },
        NOW,
    )
    b = parse_cron_request(
        {"name": "n", "cron": "*/5 * * * *", "type": "t", "options": {"queue": "q"}}, NOW
    )
    assert a == b


def test_template_args_default_and_id_dropped() -> None:
    cron = parse_cron_request(
        {"name": "n", "expression": "@daily", "job_template": {"type": "t", "id": "x"}}, NOW
    )
    assert cron.job_template == {"type": "t", "args": []}


def test_disabled_has_no_next_run() -> None:
    cron = parse_cron_request({"name": "n", "cron": "@daily", "type": "t", "enabled": False}, NOW)
    assert cron.enabled is False
    assert cron.next_run_at is None


def test_every_anchored_on_registration() -> None:
    cron = parse_cron_request({"name": "n", "cron": "@every 45s", "type": "t"}, NOW)
    assert cron.next_run_at == NOW + timedelta(seconds=45)


@pytest.mark.parametrize("policy", sorted(OVERLAP_POLICIES))
def test_overlap_policies(policy: str) -> None:
    cron = parse_cron_request(
        {"name": "n", "cron": "@daily", "type": "t", "overlap_policy": policy}, NOW
    )
    assert cron.overlap_policy == OVERLAP_POLICIES[policy]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"cron": "@daily", "type": "t"}, "name"),
        ({"name": "Bad Name", "cron": "@daily", "type": "t"}, "name"),
        ({"name": "n\n", "cron": "@daily", "type": "t"}, "name"),
        ({"name": "a" * 256, "cron": "@daily", "type": "t"}, "name"),
        ({"name": "n", "type": "t"}, "expression"),
        ({"name": "n", "cron": "bad", "type": "t"}, "cron"),
        ({"name": "n", "expression": "*/0 * * * *", "job_template": {"type": "t"}}, "expression"),
        ({"name": "n", "cron": "@daily", "type": "t", "timezone": "EST"}, "timezone"),
        ({"name": "n", "cron": "@daily", "type": "t", "overlap_policy": "queue"}, "overlap_policy"),
        ({"name": "n", "cron": "@daily"}, "type"),
        ({"name": "n", "cron": "@daily", "type": "Bad Type"}, "type"),
        ({"name": "n", "expression": "@daily", "job_template": {"args": []}}, "job_template.type"),
        (
            {
                "name": "n",
                "expression": "@daily",
                "job_template": {"type": "t", "options": {"queue": "Q"}},
            },
            "job_template.options.queue",
        ),
        ({"name": "n", "expression": "@daily", "job_template": []}, "job_template"),
        ({"name": "n", "cron": "@daily", "type": "t", "enabled": "yes"}, "enabled"),
    ],
)
def test_invalid_requests(body: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_cron_request(body, NOW)
    assert info.value.path == path
    assert info.value.status == 400


def test_body_must_be_object() -> None:
    with pytest.raises(ValidationError):
        parse_cron_request(["x"], NOW)


# --- DST (digest §7.3: a skipped time does not fire, a repeated time fires once) ---------------


def test_spring_forward_skips_the_missing_time() -> None:
    # 2026-03-08: New York clocks jump from 02:00 EST to 03:00 EDT; 02:30 does not exist.
    fire = next_fire("30 2 * * *", "America/New_York", datetime(2026, 3, 8, 5, tzinfo=UTC))
    assert fire == datetime(2026, 3, 9, 6, 30, tzinfo=UTC)


def test_fall_back_fires_the_repeated_time_once() -> None:
    # 2026-11-01: New York clocks go from 02:00 EDT back to 01:00 EST; 01:30 happens twice.
    first = next_fire("30 1 * * *", "America/New_York", datetime(2026, 11, 1, 4, tzinfo=UTC))
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert next_fire("30 1 * * *", "America/New_York", first) == datetime(
        2026, 11, 2, 6, 30, tzinfo=UTC
    )
