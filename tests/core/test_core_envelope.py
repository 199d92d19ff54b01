"""Enqueue request parsing and validation (digest §1, §5, §8, §13, §14.1)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ojs_core.envelope import (
    OPTION_FIELDS,
    SYSTEM_FIELDS,
    parse_enqueue,
    parse_rate_limit,
    parse_retry,
    parse_unique,
    validate_queue,
)
from ojs_core.errors import ValidationError
from ojs_core.ids import deterministic_uuid7, is_uuid7, uuid7
from ojs_core.model import DEFAULT_UNIQUE_STATES, RateLimit, RetryPolicy, UniquePolicy, Window
from ojs_core.states import JobState

SETTINGS = settings(max_examples=200, deadline=None)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
JOB_ID = "01940000-0000-7000-8000-000000000001"

# Reference grammars from the digest, written independently of envelope.py.
TYPE_REF = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*")
QUEUE_REF = re.compile(r"[a-z0-9][a-z0-9\-.]*")
UUID7_REF = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def parse(body: dict[str, Any], **kw: Any):
    return parse_enqueue(body, now=NOW, **kw)


def base(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "email.send", "args": []}
    body.update(kw)
    return body


def invalid(body: Any, **kw: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_enqueue(body, now=NOW, **kw)
    return info.value


# --- minimal and defaults ---------------------------------------------------------------------


def test_minimal_job_defaults() -> None:
    job = parse({"type": "email.send", "args": ["a@example.com"]})
    assert is_uuid7(job.id)
    assert job.type == "email.send"
    assert job.args == ["a@example.com"]
    assert job.queue == "default"
    assert job.priority == 0
    assert job.meta == {}
    assert job.tags == []
    assert job.extra == {}
    assert job.specversion == "1.0"
    assert job.retry == RetryPolicy()
    assert job.unique is None
    assert job.state is JobState.AVAILABLE
    assert job.attempt == 0
    assert job.created_at == NOW
    assert job.enqueued_at == NOW
    assert job.started_at is None
    assert job.max_attempts == 3


def test_generated_id_uses_now() -> None:
    job = parse(base())
    ms = int(job.id.replace("-", "")[:12], 16)
    assert ms >= int(NOW.timestamp() * 1000)


def test_empty_args_allowed() -> None:
    assert parse(base(args=[])).args == []


@pytest.mark.parametrize("body", [None, [], "job", 1])
def test_body_must_be_object(body: Any) -> None:
    err = invalid(body)
    assert err.status == 400
    assert err.code == "invalid_request"


def test_missing_type() -> None:
    err = invalid({"args": []})
    assert err.path == "type"
    assert err.status == 400
    assert err.details["validation_errors"][0]["path"] == "type"


@pytest.mark.parametrize("args", [None, {}, "x", 1])
def test_args_required_and_array(args: Any) -> None:
    body: dict[str, Any] = {"type": "a"}
    if args is not None:
        body["args"] = args
    assert invalid(body).path == "args"


# --- type, queue and id grammars ----------------------------------------------------------------


@SETTINGS
@given(st.from_regex(TYPE_REF, fullmatch=True).filter(lambda s: len(s) <= 255))
def test_valid_types_accepted(jtype: str) -> None:
    assert parse(base(type=jtype)).type == jtype


@SETTINGS
@given(st.text(max_size=30) | st.from_regex(r"[A-Za-z0-9_.\- ]{0,12}\n?", fullmatch=True))
def test_invalid_types_rejected(jtype: str) -> None:
    assume(not TYPE_REF.fullmatch(jtype))
    err = invalid(base(type=jtype))
    assert err.path == "type"
    assert err.status == 400


@pytest.mark.parametrize(
    "jtype",
    [
        "Email.send",
        "email..send",
        ".email",
        "email.",
        "1email",
        "email.1x",
        "email send",
        "a" * 256,
        "",
        "email.send\n",
        7,
    ],
)
def test_invalid_type_examples(jtype: Any) -> None:
    assert invalid(base(type=jtype)).path == "type"


def test_type_length_limit() -> None:
    assert parse(base(type="a" * 255)).type == "a" * 255


@SETTINGS
@given(st.from_regex(QUEUE_REF, fullmatch=True).filter(lambda s: len(s) <= 128), st.booleans())
def test_valid_queues_accepted(queue: str, in_options: bool) -> None:
    body = base(options={"queue": queue}) if in_options else base(queue=queue)
    assert parse(body).queue == queue
    assert validate_queue(queue) == queue


@SETTINGS
@given(st.text(min_size=1, max_size=30), st.booleans())
def test_invalid_queues_rejected(queue: str, in_options: bool) -> None:
    assume(not QUEUE_REF.fullmatch(queue))
    body = base(options={"queue": queue}) if in_options else base(queue=queue)
    err = invalid(body)
    assert err.path == ("options.queue" if in_options else "queue")


@pytest.mark.parametrize("queue", ["", "Default", "-q", ".q", "q_1", "q 1", "a" * 129, "q\n", 5])
def test_invalid_queue_examples(queue: Any) -> None:
    with pytest.raises(ValidationError) as info:
        validate_queue(queue)
    assert info.value.path == "queue"


def test_queue_length_limit() -> None:
    assert validate_queue("q" * 128) == "q" * 128


@SETTINGS
@given(st.integers(min_value=0, max_value=(1 << 48) - 1))
def test_valid_uuid7_ids_accepted(ms: int) -> None:
    # deterministic_uuid7 leaves uuid7()'s process-wide monotonic state alone.
    job_id = deterministic_uuid7(ms, "envelope-test", str(ms))
    assert parse(base(id=job_id)).id == job_id


@SETTINGS
@given(st.text(max_size=40) | st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()))
def test_invalid_ids_rejected(job_id: str) -> None:
    assume(not UUID7_REF.fullmatch(job_id))
    assert invalid(base(id=job_id)).path == "id"


def test_id_examples() -> None:
    good = uuid7()
    assert invalid(base(id=good.upper())).path == "id"
    assert invalid(base(id="")).path == "id"
    assert invalid(base(id=good + "\n")).path == "id"
    assert invalid(base(id="b3c5e1a2-5f0e-4e0b-9c1d-1a2b3c4d5e6f")).path == "id"  # v4
    assert invalid(base(id=123)).path == "id"


# --- priority ---------------------------------------------------------------------------------


@SETTINGS
@given(st.integers(min_value=-100, max_value=100), st.booleans())
def test_priority_in_range_accepted(priority: int, in_options: bool) -> None:
    body = base(options={"priority": priority}) if in_options else base(priority=priority)
    assert parse(body).priority == priority


@SETTINGS
@given(st.integers().filter(lambda p: not -100 <= p <= 100), st.booleans())
def test_priority_out_of_range_rejected(priority: int, in_options: bool) -> None:
    body = base(options={"priority": priority}) if in_options else base(priority=priority)
    assert invalid(body).path == ("options.priority" if in_options else "priority")


@pytest.mark.parametrize(
    ("name", "value"), [("high", 10), ("normal", 0), ("low", -10), ("critical", 20), ("HIGH", 10)]
)
def test_priority_names(name: str, value: int) -> None:
    assert parse(base(priority=name)).priority == value


@pytest.mark.parametrize("value", [1.5, "5", "urgent", True, [], {}])
def test_priority_must_be_integer(value: Any) -> None:
    assert invalid(base(priority=value)).path == "priority"


def test_priority_integral_float_accepted() -> None:
    assert parse(base(priority=5.0)).priority == 5


# --- both request styles ----------------------------------------------------------------------

option_values = st.fixed_dictionaries(
    {},
    optional={
        "queue": st.sampled_from(["default", "critical", "q.1"]),
        "priority": st.integers(min_value=-100, max_value=100),
        "timeout_ms": st.integers(min_value=1, max_value=10**6),
        "visibility_timeout_ms": st.integers(min_value=1, max_value=10**6),
        "scheduled_at": st.sampled_from(
            ["2026-01-01T00:00:10Z", "2025-12-31T00:00:00Z", "+PT5S", "2026-01-01T09:00:00+09:00"]
        ),
        "expires_at": st.sampled_from(["2026-01-02T00:00:00Z", "+PT1H"]),
        "retry": st.fixed_dictionaries(
            {},
            optional={
                "max_attempts": st.integers(min_value=0, max_value=25),
                "backoff_coefficient": st.floats(min_value=1.0, max_value=5.0),
                "jitter": st.booleans(),
                "on_exhaustion": st.sampled_from(["discard", "dead_letter"]),
            },
        ),
        "unique": st.fixed_dictionaries(
            {}, optional={"keys": st.just(["type", "args"]), "period": st.just("PT1M")}
        ),
        "tags": st.lists(st.text(max_size=5), max_size=3),
        "pending": st.booleans(),
        "rate_limit": st.just({"max_per_second": 5}),
    },
)


@SETTINGS
@given(option_values)
def test_top_level_and_options_styles_agree(options: dict[str, Any]) -> None:
    top = parse(base(id=JOB_ID, **options))
    nested = parse(base(id=JOB_ID, options=options))
    assert top == nested
    assert top.extra == {}


def test_options_win_over_top_level() -> None:
    job = parse(base(queue="top", priority=1, options={"queue": "opt", "priority": 2}))
    assert (job.queue, job.priority) == ("opt", 2)


def test_options_null_values_fall_back_to_top_level() -> None:
    job = parse(base(queue="top", options={"queue": None}))
    assert job.queue == "top"


def test_options_must_be_object() -> None:
    assert invalid(base(options=[1])).path == "options"


def test_timeouts_in_both_units() -> None:
    assert parse(base(timeout=30)).timeout_ms == 30_000
    assert parse(base(timeout="PT1M")).timeout_ms == 60_000
    assert parse(base(options={"timeout_ms": 2000})).timeout_ms == 2000
    assert parse(base(options={"timeout_ms": 0})).timeout_ms is None
    assert parse(base(visibility_timeout=10)).visibility_timeout_ms == 10_000
    assert parse(base(options={"visibility_timeout": "PT5S"})).visibility_timeout_ms == 5000
    assert parse(base(options={"visibility_timeout_ms": 3000})).visibility_timeout_ms == 3000


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (base(options={"timeout_ms": -1}), "options.timeout_ms"),
        (base(options={"timeout_ms": "x"}), "options.timeout_ms"),
        (base(timeout=0), "timeout"),
        (base(timeout="forever"), "timeout"),
        (base(options={"visibility_timeout_ms": 0}), "options.visibility_timeout_ms"),
        (base(scheduled_at="tomorrow"), "scheduled_at"),
        (base(options={"delay_until": "2026-01-01T00:00:00"}), "options.delay_until"),
        (base(expires_at=12), "expires_at"),
        (base(options={"delay_ms": -5}), "options.delay_ms"),
        (base(meta=[1]), "meta"),
        (base(options={"metadata": "x"}), "options.metadata"),
        (base(options={"tags": "a,b"}), "options.tags"),
        (base(tags=[1]), "tags"),
        (base(options={"pending": "yes"}), "options.pending"),
        (base(schema=5), "schema"),
        (base(specversion="2.0"), "specversion"),
        (base(options={"unique": {"keys": ["colour"]}}), "options.unique.keys"),
        (base(options={"unique": {"on_conflict": "explode"}}), "options.unique.on_conflict"),
        (base(options={"unique": {"states": ["dead"]}}), "options.unique.states"),
        (base(options={"unique": {"period": "soon"}}), "options.unique.period"),
        (base(options={"unique": []}), "options.unique"),
        (base(options={"rate_limit": {"max_per_second": 0}}), "options.rate_limit.max_per_second"),
        (base(options={"rate_limit": {}}), "options.rate_limit"),
        (base(options={"rate_limit": {"rate": {"limit": 0}}}), "options.rate_limit.rate.limit"),
    ],
)
def test_invalid_fields_are_named(body: dict[str, Any], path: str) -> None:
    err = invalid(body)
    assert err.path == path
    assert err.message.startswith(path + ":")
    assert err.status == 400


def test_error_path_prefix_for_batches() -> None:
    assert invalid({"args": []}, path="jobs[3]").path == "jobs[3].type"
    assert invalid(base(options={"queue": "BAD"}), path="jobs[0]").path == "jobs[0].options.queue"
    assert invalid(base(specversion="2.0"), path="jobs[1]").path == "jobs[1].specversion"


# --- scheduling and state ---------------------------------------------------------------------


def test_future_scheduled_at_makes_scheduled() -> None:
    job = parse(base(scheduled_at="2026-01-01T00:00:10Z"))
    assert job.state is JobState.SCHEDULED
    assert job.scheduled_at == NOW + timedelta(seconds=10)
    assert job.enqueued_at is None


def test_past_scheduled_at_makes_available() -> None:
    job = parse(base(options={"delay_until": "2025-01-01T00:00:00Z"}))
    assert job.state is JobState.AVAILABLE
    assert job.enqueued_at == NOW


def test_relative_and_delay_forms() -> None:
    assert parse(base(options={"scheduled_at": "+PT5S"})).scheduled_at == NOW + timedelta(seconds=5)
    job = parse(base(options={"delay_ms": 1500}))
    assert job.scheduled_at == NOW + timedelta(milliseconds=1500)
    assert job.state is JobState.SCHEDULED
    assert parse(base(options={"delay_ms": 0})).state is JobState.AVAILABLE


def test_scheduled_at_keeps_client_offset() -> None:
    job = parse(base(scheduled_at="2026-01-01T09:00:10+09:00"))
    assert job.scheduled_at.utcoffset() == timedelta(hours=9)
    assert job.scheduled_at == NOW + timedelta(seconds=10)


def test_pending_option() -> None:
    job = parse(base(options={"pending": True, "scheduled_at": "+PT1H"}))
    assert job.state is JobState.PENDING
    assert job.enqueued_at is None
    assert parse(base(options={"pending": False})).state is JobState.AVAILABLE


def test_expires_at_parsed() -> None:
    job = parse(base(options={"expires_at": "+PT30S"}))
    assert job.expires_at == NOW + timedelta(seconds=30)
    off = parse(base(expires_at="2026-01-01T05:00:00+05:00")).expires_at
    assert off == NOW
    assert off.tzinfo == timezone(timedelta(hours=5))


def test_metadata_merges_into_meta() -> None:
    job = parse(base(meta={"a": 1, "b": 1}, options={"metadata": {"b": 2, "c": 3}}))
    assert job.meta == {"a": 1, "b": 2, "c": 3}


# --- unknown and system fields ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
RESERVED = (
    {"id", "type", "args", "meta", "schema", "specversion", "options"}
    | OPTION_FIELDS
    | SYSTEM_FIELDS
)


@SETTINGS
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda k: k not in RESERVED),
        json_values,
        max_size=5,
    )
)
def test_unknown_top_level_fields_preserved(unknown: dict[str, Any]) -> None:
    job = parse({**base(), **unknown})
    assert job.extra == unknown


def test_x_fields_preserved() -> None:
    job = parse(base(x_trace={"a": 1}, x_flag=True))
    assert job.extra == {"x_trace": {"a": 1}, "x_flag": True}


def test_system_fields_ignored() -> None:
    job = parse(
        base(
            state="completed",
            attempt=7,
            created_at="2020-01-01T00:00:00Z",
            result={"r": 1},
            max_attempts=99,
            error={"code": "x"},
        )
    )
    assert job.state is JobState.AVAILABLE
    assert job.attempt == 0
    assert job.created_at == NOW
    assert job.result is None
    assert job.max_attempts == 3
    assert job.error is None
    assert job.extra == {}


def test_unknown_fields_inside_options_are_not_extra() -> None:
    assert parse(base(options={"x_custom": 1})).extra == {}


# --- retry policy -----------------------------------------------------------------------------


def test_partial_retry_policy_merges_over_defaults() -> None:
    policy = parse_retry({"max_attempts": 5})
    assert policy == RetryPolicy(max_attempts=5)


def test_retry_policy_all_fields() -> None:
    policy = parse_retry(
        {
            "max_attempts": 4,
            "initial_interval": "PT2S",
            "max_interval": "PT1M",
            "backoff_coefficient": 3,
            "jitter": False,
            "non_retryable_errors": ["Auth.*"],
            "on_exhaustion": "dead_letter",
            "backoff_strategy": "linear",
        }
    )
    assert policy == RetryPolicy(
        max_attempts=4,
        initial_interval_ms=2000,
        max_interval_ms=60_000,
        backoff_coefficient=3.0,
        jitter=False,
        non_retryable_errors=("Auth.*",),
        on_exhaustion="dead_letter",
        backoff_strategy="linear",
    )


def test_retry_interval_spellings() -> None:
    assert parse_retry({"initial_interval_ms": 250}).initial_interval_ms == 250
    assert parse_retry({"initial_interval": 1.5}).initial_interval_ms == 1500
    assert parse_retry({"initial_interval": "2s"}).initial_interval_ms == 2000
    assert parse_retry({"backoff_type": "none"}).backoff_strategy == "constant"


def test_retry_policy_alias() -> None:
    job = parse(base(options={"retry_policy": {"max_attempts": 7}}))
    assert job.retry.max_attempts == 7


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"max_attempts": -1}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient"),
        ({"backoff_coefficient": "2"}, "backoff_coefficient"),
        ({"jitter": "yes"}, "jitter"),
        ({"on_exhaustion": "explode"}, "on_exhaustion"),
        ({"backoff_strategy": "fibonacci"}, "backoff_strategy"),
        ({"initial_interval": "soon"}, "initial_interval"),
        ({"initial_interval_ms": -1}, "initial_interval_ms"),
        ({"initial_interval": "PT10M"}, "max_interval"),
        ({"non_retryable_errors": "Auth.*"}, "non_retryable_errors"),
    ],
)
def test_invalid_retry_policy_is_422(raw: dict[str, Any], field: str) -> None:
    err = invalid(base(options={"retry": raw}))
    assert err.status == 422
    assert err.path == f"options.retry.{field}"
    assert err.error_type == "validation_error"
    assert field in err.message
    assert err.to_wire()["error"]["type"] == "validation_error"


def test_retry_must_be_object() -> None:
    err = invalid(base(retry=[1]))
    assert (err.path, err.status) == ("retry", 422)


@SETTINGS
@given(st.integers(min_value=0, max_value=1000), st.floats(min_value=1.0, max_value=100.0))
def test_valid_retry_values_accepted(max_attempts: int, coefficient: float) -> None:
    policy = parse_retry({"max_attempts": max_attempts, "backoff_coefficient": coefficient})
    assert policy.max_attempts == max_attempts
    assert policy.backoff_coefficient == coefficient


@SETTINGS
@given(st.floats(max_value=1.0, exclude_max=True, allow_nan=False))
def test_coefficient_below_one_rejected(coefficient: float) -> None:
    with pytest.raises(ValidationError) as info:
        parse_retry({"backoff_coefficient": coefficient})
    assert info.value.path == "retry.backoff_coefficient"


# --- unique policy and rate limit -------------------------------------------------------------


def test_unique_defaults_and_spellings() -> None:
    assert parse_unique({}) == UniquePolicy()
    policy = parse_unique({"key": ["args"], "on_conflict": "use_existing", "period": "PT1H"})
    assert policy.keys == ("type", "args")
    assert policy.on_conflict == "ignore"
    assert policy.period_ms == 3_600_000
    assert policy.states == DEFAULT_UNIQUE_STATES
    assert parse_unique({"keys": ["queue", "type"]}).keys == ("type", "queue")
    assert parse_unique({"states": []}).states == DEFAULT_UNIQUE_STATES
    assert parse_unique({"states": ["completed"]}).states == (JobState.COMPLETED,)
    assert parse_unique({"period_ms": 500}).period_ms == 500


def test_unique_meta_needs_meta_keys() -> None:
    with pytest.raises(ValidationError) as info:
        parse_unique({"keys": ["meta"], "meta_keys": []})
    assert info.value.path == "unique.meta_keys"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"max_per_second": 10}, RateLimit(rate=Window(limit=10, period_ms=1000))),
        ({"max_per_second": 0.5}, RateLimit(rate=Window(limit=1, period_ms=2000))),
        ({"limit": 5, "period": "PT1M"}, RateLimit(rate=Window(limit=5, period_ms=60_000))),
        (
            {"rate": {"limit": 3, "period": 250}, "key": "tenant"},
            RateLimit(rate=Window(limit=3, period_ms=250), key="tenant"),
        ),
        ({"rate": {"limit": 3}}, RateLimit(rate=Window(limit=3, period_ms=1000))),
        (
            {
                "key": "stripe-api",
                "concurrency": 5,
                "rate": {"limit": 100, "period": "PT1M"},
                "throttle": {"limit": 10, "period": "PT1S"},
                "on_limit": "reschedule",
            },
            RateLimit(
                key="stripe-api",
                concurrency=5,
                rate=Window(limit=100, period_ms=60_000),
                throttle=Window(limit=10, period_ms=1000),
                on_limit="reschedule",
            ),
        ),
        ({"key": "db", "concurrency": 0}, RateLimit(key="db", concurrency=0)),
    ],
)
def test_rate_limit_shapes(raw: dict[str, Any], expected: RateLimit) -> None:
    assert parse_rate_limit(raw) == expected


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({}, "rate_limit"),
        ({"key": "has space", "concurrency": 1}, "rate_limit.key"),
        ({"key": ".dot", "concurrency": 1}, "rate_limit.key"),
        ({"key": "k" * 256, "concurrency": 1}, "rate_limit.key"),
        ({"key": 5, "concurrency": 1}, "rate_limit.key"),
        ({"concurrency": -1}, "rate_limit.concurrency"),
        ({"concurrency": 10_001}, "rate_limit.concurrency"),
        ({"concurrency": 1, "on_limit": "later"}, "rate_limit.on_limit"),
        ({"rate": {"period": "PT1S"}}, "rate_limit.rate.limit"),
        ({"rate": {"limit": 0}}, "rate_limit.rate.limit"),
        ({"throttle": {"limit": 1, "period": "soon"}}, "rate_limit.throttle.period"),
        ({"throttle": "fast"}, "rate_limit.throttle"),
    ],
)
def test_bad_rate_limits_name_the_field(raw: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_rate_limit(raw)
    assert err.value.path == path


def test_a_stored_policy_keeps_any_key() -> None:
    """Keys were not checked before: a stored job must stay readable."""
    assert parse_rate_limit({"key": "old key", "limit": 1}, stored=True).key == "old key"


@pytest.mark.parametrize("coefficient", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_backoff_coefficient_is_refused(coefficient: float) -> None:
    with pytest.raises(ValidationError) as err:
        parse_retry({"backoff_coefficient": coefficient})
    assert err.value.details["validation_errors"][0]["path"] == "retry.backoff_coefficient"
