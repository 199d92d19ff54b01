"""Error wire bodies and the manual clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from ojs_core.clock import ManualClock, SystemClock
from ojs_core.errors import (
    BackendUnavailableError,
    DuplicateJobError,
    NotFoundError,
    OJSError,
    PayloadTooLargeError,
    UnsupportedError,
    ValidationError,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_validation_error_body() -> None:
    err = ValidationError("is required", path="type")
    assert err.message == "type: is required"
    assert err.path == "type"
    body = err.to_wire("r1")["error"]
    assert body == {
        "code": "invalid_request",
        "message": "type: is required",
        "retryable": False,
        "type": "validation_error",
        "details": {"validation_errors": [{"path": "type", "message": "is required"}]},
        "request_id": "r1",
    }


def test_validation_errors_have_one_shape_whatever_the_status() -> None:
    err = ValidationError("bad", path="retry.max_attempts", status=422)
    assert err.status == 422
    assert err.to_wire()["error"]["type"] == "validation_error"
    # The class default is untouched.
    assert ValidationError("x").status == 400
    assert ValidationError("x").to_wire()["error"]["type"] == "validation_error"


def test_validation_error_custom_code() -> None:
    err = ValidationError("cycle", path="steps", code="invalid_workflow")
    assert err.code == "invalid_workflow"
    assert ValidationError("x").code == "invalid_request"


def test_not_found_has_hint_and_docs() -> None:
    body = NotFoundError("job", "abc").to_wire()["error"]
    assert body["code"] == "not_found"
    assert body["message"] == "Job 'abc' not found"
    assert body["details"] == {"resource_type": "job", "resource_id": "abc"}
    assert body["hint"]
    assert body["docs_url"].endswith("#not_found")
    assert "request_id" not in body


def test_status_codes() -> None:
    assert (OJSError("x").status, OJSError("x").code) == (500, "internal_error")
    assert PayloadTooLargeError("x").status == 413
    assert DuplicateJobError("x").status == 409
    assert DuplicateJobError("x").code == "duplicate"
    assert UnsupportedError("x").status == 422
    unavailable = BackendUnavailableError("down", retry_after_s=5)
    assert unavailable.status == 503
    assert unavailable.retry_after_s == 5
    assert unavailable.to_wire()["error"]["retryable"] is True


def test_manual_clock_advance() -> None:
    clock = ManualClock(NOW + timedelta(microseconds=1500))
    assert clock.now() == NOW + timedelta(milliseconds=1)
    assert clock.advance(2) == NOW + timedelta(seconds=2, milliseconds=1)
    assert clock.advance(ms=5) == NOW + timedelta(seconds=2, milliseconds=6)
    assert ManualClock().now() == NOW


def test_system_clock_is_ms_aware_utc() -> None:
    now = SystemClock().now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert now.microsecond % 1000 == 0


async def test_manual_clock_sleep_wakes_on_advance() -> None:
    clock = ManualClock(NOW)
    task = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    clock.advance(9)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(1)
    await asyncio.wait_for(task, timeout=5)
    assert task.done()
    await clock.sleep(0)  # non-positive sleeps return at once
