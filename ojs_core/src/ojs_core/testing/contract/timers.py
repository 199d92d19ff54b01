"""Time-driven transitions: scheduled jobs, retry backoff, visibility and execution timeouts,
expiry, and the timer index behind them (``due_jobs``).

Every test runs in both time modes (see :mod:`ojs_core.testing.timecontrol`); delays are about
a second so that a real-time run stays short.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from ...errors import ConflictError, InvalidStateTransitionError
from ...service import JobService
from ...states import JobState
from ..helpers import (
    NO_JITTER,
    expect_events,
    fetch_one,
    fetch_when_ready,
    job_error,
    push,
)
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestExpiry", "TestRetryTiming", "TestScheduled", "TestTimeouts", "TestTimerIndex"]

S = JobState
SECOND = timedelta(seconds=1)


async def _state_is(service: JobService, job_id: str, state: JobState) -> bool:
    return (await service.get(job_id)).state is state


class TestScheduled(KitTest):
    """Jobs with ``scheduled_at``/``delay_ms`` become available at their time, not before."""

    async def test_scheduled_job_waits_for_its_time(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Stored ``scheduled``, never fetchable early, available (and fetchable) once due."""
        t = ojs_time
        job = await push(service, scheduled_at=t.at(1))
        assert job.state is S.SCHEDULED
        assert job.enqueued_at is None
        due = job.scheduled_at
        assert due is not None
        assert await service.fetch(["default"]) == []
        await t.just_before(due)
        if t.before(due):
            assert await _state_is(service, job.id, S.SCHEDULED)
            assert await service.fetch(["default"]) == []
        await t.advance_to(due)
        await t.until(lambda: _state_is(service, job.id, S.AVAILABLE), what="promotion")
        promoted = await service.get(job.id)
        assert promoted.enqueued_at is not None
        assert promoted.enqueued_at >= due
        assert (await fetch_one(service)).id == job.id

    async def test_delay_ms_and_past_times(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """``delay_ms`` counts from creation; a ``scheduled_at`` in the past is available now."""
        t = ojs_time
        delayed = await push(service, delay_ms=1000)
        assert delayed.state is S.SCHEDULED
        assert delayed.created_at is not None
        assert delayed.scheduled_at == delayed.created_at + SECOND
        past = await push(service, scheduled_at=t.at(-5))
        assert past.state is S.AVAILABLE
        assert [j.id for j in await service.fetch(["default"], count=5)] == [past.id]
        await t.advance_to(delayed.scheduled_at)
        assert (await fetch_when_ready(t, service)).id == delayed.id

    async def test_many_scheduled_jobs_come_due_together(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Jobs sharing a due time are all promoted; none is lost or doubled."""
        t = ojs_time
        when = t.at(1)
        ids = {(await push(service, args=[i], scheduled_at=when)).id for i in range(25)}
        job = await service.get(next(iter(ids)))
        assert job.scheduled_at is not None
        await t.advance_to(job.scheduled_at)
        got: list[str] = []

        async def all_claimed() -> bool:
            got.extend(j.id for j in await service.fetch(["default"], count=25))
            return len(got) >= 25

        await t.until(all_claimed, what="25 promoted jobs")
        assert sorted(got) == sorted(ids)

    async def test_cancelled_scheduled_job_never_fires(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Cancelling removes the job's timer: it stays cancelled after its time."""
        t = ojs_time
        job = await push(service, scheduled_at=t.at(1))
        await service.cancel(job.id)
        keep = await push(service, scheduled_at=t.at(1))
        assert keep.scheduled_at is not None
        await t.advance_to(keep.scheduled_at)
        await t.until(lambda: _state_is(service, keep.id, S.AVAILABLE), what="the other job")
        assert (await service.get(job.id)).state is S.CANCELLED
        assert [j.id for j in await service.fetch(["default"], count=5)] == [keep.id]


class TestRetryTiming(KitTest):
    """Backoff: a retryable job is fetchable again exactly when its delay has passed."""

    async def test_exponential_backoff_then_exhaustion(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """1 s, then 2 s between attempts; the third failure discards with the full history."""
        t = ojs_time
        retry = {
            "max_attempts": 3,
            "initial_interval": "PT1S",
            "backoff_coefficient": 2,
            "on_exhaustion": "discard",
            **NO_JITTER,
        }
        job = await push(service, retry=retry)
        await fetch_one(service, worker_id="w")
        failed = await service.nack(job.id, job_error("first"), worker_id="w")
        assert failed.state is S.RETRYABLE
        assert failed.retry_delay_ms == 1000
        assert failed.error is not None
        assert failed.error.occurred_at is not None
        assert failed.next_attempt_at == failed.error.occurred_at + SECOND
        await t.just_before(failed.next_attempt_at)
        if t.before(failed.next_attempt_at):
            assert await _state_is(service, job.id, S.RETRYABLE)
            assert await service.fetch(["default"]) == []
        await t.advance_to(failed.next_attempt_at)
        second = await fetch_when_ready(t, service, worker_id="w")
        assert second.attempt == 2

        again = await service.nack(job.id, job_error("second"), worker_id="w")
        assert again.retry_delay_ms == 2000
        assert again.error is not None
        assert again.error.occurred_at is not None
        assert again.next_attempt_at == again.error.occurred_at + 2 * SECOND
        await t.just_before(again.next_attempt_at)
        if t.before(again.next_attempt_at):
            assert await service.fetch(["default"]) == []
        await t.advance_to(again.next_attempt_at)
        third = await fetch_when_ready(t, service, worker_id="w")
        assert third.attempt == 3

        final = await service.nack(job.id, job_error("third"), worker_id="w")
        assert final.state is S.DISCARDED
        assert not final.dead_letter
        assert [e.message for e in final.errors] == ["first", "second", "third"]
        assert [e.attempt for e in final.errors] == [1, 2, 3]
        await expect_events(
            t,
            service,
            ["job.retrying", "job.retrying", "job.discarded"],
            "job.retrying",
            "job.discarded",
        )

    @pytest.mark.parametrize(
        ("strategy", "delays"),
        [("constant", [1000, 1000]), ("linear", [1000, 2000]), ("polynomial", [1000, 4000])],
    )
    async def test_backoff_strategies(
        self, service: JobService, ojs_time: TimeControl, strategy: str, delays: list[int]
    ) -> None:
        """The stored delay follows the policy's strategy (coefficient 2)."""
        t = ojs_time
        retry = {
            "max_attempts": 3,
            "initial_interval": "PT1S",
            "backoff_coefficient": 2,
            "backoff_strategy": strategy,
            **NO_JITTER,
        }
        job = await push(service, retry=retry)
        await fetch_one(service)
        first = await service.nack(job.id, job_error())
        assert first.retry_delay_ms == delays[0]
        assert first.next_attempt_at is not None
        await t.advance_to(first.next_attempt_at)
        await fetch_when_ready(t, service)
        second = await service.nack(job.id, job_error())
        assert second.retry_delay_ms == delays[1]

    async def test_max_interval_caps_the_delay(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """No delay exceeds ``max_interval`` (1 s, then 10 s capped to 2 s)."""
        retry = {
            "max_attempts": 3,
            "initial_interval": "PT1S",
            "backoff_coefficient": 10,
            "max_interval": "PT2S",
            **NO_JITTER,
        }
        job = await push(service, retry=retry)
        await fetch_one(service)
        first = await service.nack(job.id, job_error())
        assert first.retry_delay_ms == 1000
        assert first.next_attempt_at is not None
        await ojs_time.advance_to(first.next_attempt_at)
        await fetch_when_ready(ojs_time, service)
        second = await service.nack(job.id, job_error())
        assert second.retry_delay_ms == 2000

    async def test_retry_then_success_keeps_the_history(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A job that succeeds on retry is completed, error cleared, history kept."""
        t = ojs_time
        job = await push(service, retry={"max_attempts": 3, "initial_interval": "PT0S"})
        await fetch_one(service)
        await service.nack(job.id, job_error("flaky"))
        retried = await fetch_when_ready(t, service)
        assert retried.attempt == 2
        done = await service.ack(job.id, "ok")
        assert done.state is S.COMPLETED
        assert done.error is None
        assert [e.message for e in done.errors] == ["flaky"]


class TestTimeouts(KitTest):
    """Visibility timeouts (no ack, nack or heartbeat in time) and execution timeouts."""

    async def test_visibility_timeout_makes_the_job_available_again(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """An abandoned job goes back to ``available`` with a ``visibility_timeout`` error."""
        t = ojs_time
        job = await push(service)
        claimed = await fetch_one(service, worker_id="w1", visibility_ms=1000)
        deadline = claimed.visible_until
        assert deadline is not None
        await t.just_before(deadline)
        if t.before(deadline):
            assert await _state_is(service, job.id, S.ACTIVE)
        await t.advance_to(deadline)
        await t.until(lambda: _state_is(service, job.id, S.AVAILABLE), what="visibility expiry")
        back = await service.get(job.id)
        assert back.worker_id is None
        assert back.error is not None
        assert back.error.type == "visibility_timeout"
        again = await fetch_one(service, worker_id="w2")
        assert again.attempt == 2
        assert again.worker_id == "w2"

    async def test_late_ack_by_the_previous_worker_is_a_conflict(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """After the job moved to another worker, the first worker's ack/nack is refused."""
        t = ojs_time
        job = await push(service)
        claimed = await fetch_one(service, worker_id="w1", visibility_ms=1000)
        assert claimed.visible_until is not None
        await t.advance_to(claimed.visible_until)
        await fetch_when_ready(t, service, worker_id="w2")
        with pytest.raises(ConflictError) as exc:
            await service.ack(job.id, "late", worker_id="w1")
        assert not isinstance(exc.value, InvalidStateTransitionError)
        with pytest.raises(ConflictError):
            await service.nack(job.id, job_error(), worker_id="w1")
        still = await service.get(job.id)
        assert still.state is S.ACTIVE
        assert still.worker_id == "w2"
        assert (await service.ack(job.id, "on time", worker_id="w2")).result == "on time"

    async def test_visibility_timeout_with_no_attempt_left_discards(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """The visibility timeout counts as a failed attempt: the last one discards."""
        t = ojs_time
        job = await push(service, retry={"max_attempts": 1})
        claimed = await fetch_one(service, visibility_ms=1000)
        assert claimed.visible_until is not None
        await t.advance_to(claimed.visible_until)
        await t.until(lambda: _state_is(service, job.id, S.DISCARDED), what="discard")

    async def test_heartbeat_extends_visibility(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A heartbeat moves the worker's own jobs' deadline; others' jobs time out as before."""
        t = ojs_time
        job = await push(service)
        other = await push(service)
        mine = await fetch_one(service, worker_id="w1", visibility_ms=1000)
        theirs = await fetch_one(service, worker_id="w2", visibility_ms=1000)
        beat = await service.heartbeat("w1", [job.id, other.id], visibility_ms=2000)
        assert beat.directive == "running"
        assert beat.extended == [job.id]
        extended = await service.get(job.id)
        assert mine.visible_until is not None
        assert theirs.visible_until is not None
        assert extended.visible_until is not None
        assert extended.visible_until > mine.visible_until
        await t.advance_to(theirs.visible_until)
        await t.until(lambda: _state_is(service, other.id, S.AVAILABLE), what="w2's job expiry")
        if t.before(extended.visible_until):
            assert await _state_is(service, job.id, S.ACTIVE)
        await t.advance_to(extended.visible_until)
        await t.until(lambda: _state_is(service, job.id, S.AVAILABLE), what="w1's job expiry")

    async def test_execution_timeout_fails_the_attempt(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """``timeout_ms`` after the start the attempt fails with a ``timeout`` error."""
        t = ojs_time
        retry = {"max_attempts": 2, "initial_interval": "PT1H", "max_interval": "PT1H", **NO_JITTER}
        job = await push(service, timeout_ms=1000, retry=retry)
        claimed = await fetch_one(service, visibility_ms=60_000)
        assert claimed.started_at is not None
        deadline = claimed.started_at + SECOND
        await t.just_before(deadline)
        if t.before(deadline):
            assert await _state_is(service, job.id, S.ACTIVE)
        await t.advance_to(deadline)
        await t.until(lambda: _state_is(service, job.id, S.RETRYABLE), what="execution timeout")
        out = await service.get(job.id)
        assert out.error is not None
        assert out.error.type == "timeout"
        assert out.error.code == "timeout"
        assert out.error.occurred_at is not None
        assert out.next_attempt_at == out.error.occurred_at + timedelta(hours=1)

    async def test_finished_job_ignores_its_old_deadline(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """An acked job's visibility deadline passing changes nothing."""
        t = ojs_time
        job = await push(service)
        claimed = await fetch_one(service, visibility_ms=1000)
        done = await service.ack(job.id, "ok")
        marker = await push(service, scheduled_at=t.at(1))
        assert claimed.visible_until is not None
        assert marker.scheduled_at is not None
        await t.advance_to(max(claimed.visible_until, marker.scheduled_at))
        await t.until(lambda: _state_is(service, marker.id, S.AVAILABLE), what="marker")
        assert await service.get(job.id) == done


class TestExpiry(KitTest):
    """``expires_at``: a job that has not started by then is discarded, never executed."""

    async def test_waiting_jobs_expire_on_their_timer(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Available, scheduled and pending jobs are discarded at ``expires_at``."""
        t = ojs_time
        expiry = t.at(1)
        ready = await push(service, expires_at=expiry)
        later = await push(service, scheduled_at=t.at(30), expires_at=expiry)
        pending = await push(service, pending=True, expires_at=expiry)
        deadline = ready.expires_at
        assert deadline is not None
        await t.just_before(deadline)
        if t.before(deadline):
            assert await _state_is(service, ready.id, S.AVAILABLE)
        await t.advance_to(deadline)
        ids = [ready.id, later.id, pending.id]

        async def all_expired() -> bool:
            jobs = await service.backend.get_jobs(ids)
            return all(j is not None and j.state is S.DISCARDED for j in jobs)

        await t.until(all_expired, what="three expiries")
        for jid in ids:
            out = await service.get(jid)
            assert out.error is not None
            assert out.error.type == "enqueue_ttl_expired"
            assert out.attempt == 0
        assert await service.fetch(["default"]) == []
        events = await expect_events(t, service, ["job.expired"] * 3, "job.expired")
        assert {e.data["job_id"] for e in events} == set(ids)

    async def test_fetch_notices_expiry_by_itself(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """An expired job met by a fetch before its timer ran is discarded, not claimed."""
        t = ojs_time
        stale = await push(service, expires_at=t.at(1))
        fresh = await push(service, expires_at=t.at(60))
        assert stale.expires_at is not None
        await t.advance_to(stale.expires_at, timers=False)
        got = await service.fetch(["default"], count=5)
        assert [j.id for j in got] == [fresh.id]
        assert (await service.get(stale.id)).state is S.DISCARDED
        await expect_events(t, service, ["job.expired"], "job.expired", job_id=stale.id)

    async def test_started_job_does_not_expire(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """``expires_at`` only concerns waiting jobs: an active one runs to completion."""
        t = ojs_time
        job = await push(service, expires_at=t.at(1))
        await fetch_one(service, visibility_ms=60_000)
        assert job.expires_at is not None
        marker = await push(service, queue="marker", scheduled_at=t.at(1))
        assert marker.scheduled_at is not None
        await t.advance_to(max(job.expires_at, marker.scheduled_at))
        await t.until(lambda: _state_is(service, marker.id, S.AVAILABLE), what="marker")
        assert await _state_is(service, job.id, S.ACTIVE)
        assert (await service.ack(job.id, "done")).state is S.COMPLETED


class TestTimerIndex(KitTest):
    """``due_jobs`` directly: what is due, in which order, and for how long."""

    async def test_due_jobs_earliest_first(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Due ids come back by deadline, not by insertion."""
        t = ojs_time
        c = await push(service, args=["c"], scheduled_at=t.at(1.5))
        a = await push(service, args=["a"], scheduled_at=t.at(0.5))
        b = await push(service, args=["b"], scheduled_at=t.at(1))
        assert c.scheduled_at is not None
        await t.advance_to(c.scheduled_at + timedelta(milliseconds=50), timers=False)
        order = [a.id, b.id, c.id]

        async def all_due() -> list[str] | None:
            due = await service.backend.due_jobs(t.now(), 10)
            return due if len(due) >= 3 else None

        due = await t.until(all_due, what="three due jobs", timers=False)
        assert due == order

    async def test_due_job_stays_due_until_updated(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """An id handed out but not updated is handed out again; updated, it is gone."""
        t = ojs_time
        job = await push(service, scheduled_at=t.at(0.5))
        assert job.scheduled_at is not None
        await t.advance_to(job.scheduled_at, timers=False)

        async def is_due() -> bool:
            return job.id in await service.backend.due_jobs(t.now(), 10)

        await t.until(is_due, what="first report", timers=False)
        await t.until(is_due, what="second report", timers=False)
        assert (await service.get(job.id)).state is S.SCHEDULED
        await t.until(lambda: _state_is(service, job.id, S.AVAILABLE), what="promotion")
        assert job.id not in await service.backend.due_jobs(t.now(), 10)

    async def test_due_jobs_honours_limit(self, service: JobService, ojs_time: TimeControl) -> None:
        """At most ``limit`` ids per call."""
        t = ojs_time
        jobs = [await push(service, args=[i], scheduled_at=t.at(0.5)) for i in range(5)]
        assert jobs[-1].scheduled_at is not None
        await t.advance_to(jobs[-1].scheduled_at, timers=False)

        async def two_due() -> list[str] | None:
            due = await service.backend.due_jobs(t.now(), 2)
            assert len(due) <= 2
            return due if len(due) == 2 else None

        due = await t.until(two_due, what="two due ids", timers=False)
        assert set(due) <= {j.id for j in jobs}

    async def test_nothing_is_due_early(self, service: JobService, ojs_time: TimeControl) -> None:
        """A future deadline is not reported; an untimed job never is."""
        t = ojs_time
        job = await push(service, scheduled_at=t.at(30))
        await push(service)
        assert job.id not in await service.backend.due_jobs(t.now(), 100)
        assert await service.backend.due_jobs(t.now(), 100) == []

    async def test_two_services_apply_each_timer_once(
        self, service: JobService, replica_service: JobService, ojs_time: TimeControl
    ) -> None:
        """Timers run by two replicas at once: every job is promoted exactly once."""
        t = ojs_time
        when = t.at(0.5)
        ids = [(await push(service, args=[i], scheduled_at=when)).id for i in range(20)]
        first = await service.get(ids[0])
        assert first.scheduled_at is not None
        await t.advance_to(first.scheduled_at, timers=False)
        applied: list[int] = []

        async def all_promoted() -> bool:
            counts: Any = await asyncio.gather(service.run_timers(), replica_service.run_timers())
            applied.extend(counts)
            jobs = await service.backend.get_jobs(ids)
            return all(j is not None and j.state is S.AVAILABLE for j in jobs)

        await t.until(all_promoted, what="20 promotions", timers=False)
        assert sum(applied) == 20
