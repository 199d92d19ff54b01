"""Hypothesis strategies for jobs and their parts, for the property tests of every package
(the codec's round trip, the NATS records' stored form)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import attrs
from hypothesis import strategies as st

from ojs_core.ids import deterministic_uuid7
from ojs_core.model import (
    ON_LIMIT,
    Job,
    JobError,
    RateLimit,
    RetryPolicy,
    UniquePolicy,
    Window,
)
from ojs_core.states import JobState

JOB_FIELDS = {a.name for a in attrs.fields(Job)}

windows = st.builds(Window, limit=st.integers(1, 1000), period_ms=st.integers(1, 10**8))

aware = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-3, minutes=-30))]
    ),
)
opt_dt = st.none() | aware
json_scalar = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=6)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)


@st.composite
def retry_policies(draw) -> RetryPolicy:
    initial = draw(st.integers(0, 10**7))
    return RetryPolicy(
        max_attempts=draw(st.integers(0, 100)),
        initial_interval_ms=initial,
        max_interval_ms=draw(st.integers(initial, 10**9)),
        backoff_coefficient=draw(st.floats(1.0, 100.0)),
        jitter=draw(st.booleans()),
        non_retryable_errors=tuple(draw(st.lists(st.text(max_size=8), max_size=3))),
        on_exhaustion=draw(st.sampled_from(["discard", "dead_letter"])),
        backoff_strategy=draw(st.sampled_from(["exponential", "linear", "constant", "polynomial"])),
    )


@st.composite
def unique_policies(draw) -> UniquePolicy:
    dims = draw(st.lists(st.sampled_from(["queue", "args", "meta"]), unique=True))
    keys = ("type", *dims)
    meta_keys = draw(st.none() | st.lists(names, min_size=1, max_size=2).map(tuple))
    return UniquePolicy(
        keys=keys,
        args_keys=draw(st.none() | st.lists(names, max_size=2).map(tuple)),
        meta_keys=meta_keys,
        period_ms=draw(st.none() | st.integers(1, 10**9)),
        states=tuple(draw(st.lists(st.sampled_from(list(JobState)), min_size=1, unique=True))),
        on_conflict=draw(
            st.sampled_from(["reject", "replace", "replace_except_schedule", "ignore"])
        ),
    )


job_errors = st.builds(
    JobError,
    code=st.text(max_size=8),
    message=st.text(max_size=8),
    type=st.none() | st.text(max_size=8),
    retryable=st.none() | st.booleans(),
    details=st.none() | st.dictionaries(st.text(max_size=4), json_value, max_size=2),
    backtrace=st.none() | st.lists(st.text(max_size=8), max_size=2),
    attempt=st.none() | st.integers(0, 50),
    occurred_at=opt_dt,
)


@st.composite
def jobs(draw) -> Job:
    return Job(
        id=deterministic_uuid7(draw(st.integers(0, 2**48 - 1)), "codec"),
        type=draw(names),
        queue=draw(names),
        args=draw(st.lists(json_value, max_size=3)),
        meta=draw(st.dictionaries(st.text(max_size=5), json_value, max_size=3)),
        priority=draw(st.integers(-100, 100)),
        timeout_ms=draw(st.none() | st.integers(1, 10**8)),
        visibility_timeout_ms=draw(st.none() | st.integers(1, 10**8)),
        scheduled_at=draw(opt_dt),
        expires_at=draw(opt_dt),
        retry=draw(retry_policies()),
        unique=draw(st.none() | unique_policies()),
        schema=draw(st.none() | st.text(max_size=10)),
        tags=draw(st.lists(st.text(max_size=5), max_size=3)),
        rate_limit=draw(
            st.none()
            | st.builds(
                RateLimit,
                rate=st.none() | windows,
                throttle=st.none() | windows,
                concurrency=st.none() | st.integers(0, 10_000),
                on_limit=st.sampled_from(ON_LIMIT),
                key=st.none() | st.text(max_size=5),
            ).filter(lambda r: (r.rate, r.throttle, r.concurrency) != (None, None, None))
        ),
        extra=draw(
            st.dictionaries(
                st.text(min_size=1, max_size=8).filter(
                    lambda k: k not in JOB_FIELDS and k != "max_attempts"
                ),
                json_value,
                max_size=3,
            )
        ),
        state=draw(st.sampled_from(list(JobState))),
        attempt=draw(st.integers(0, 100)),
        created_at=draw(opt_dt),
        enqueued_at=draw(opt_dt),
        started_at=draw(opt_dt),
        completed_at=draw(opt_dt),
        cancelled_at=draw(opt_dt),
        discarded_at=draw(opt_dt),
        activated_at=draw(opt_dt),
        error=draw(st.none() | job_errors),
        errors=draw(st.lists(job_errors, max_size=2)),
        result=draw(json_value),
        worker_id=draw(st.none() | st.text(max_size=6)),
        next_attempt_at=draw(opt_dt),
        retry_delay_ms=draw(st.none() | st.integers(0, 10**8)),
        parent_results=draw(st.none() | st.lists(json_value, max_size=3)),
        dead_letter=draw(st.booleans()),
        visible_until=draw(opt_dt),
        unique_key=draw(st.none() | st.text(max_size=8)),
        workflow_id=draw(st.none() | st.text(max_size=8)),
        workflow_node=draw(st.none() | st.integers(0, 100)),
    )
