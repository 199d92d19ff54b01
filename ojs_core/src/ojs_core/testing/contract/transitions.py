"""Every operation from every state: legal transitions land; illegal ones raise, writing nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ...errors import (
    ConflictError,
    InvalidStateTransitionError,
    NotFoundError,
    OJSError,
)
from ...ids import uuid7
from ...model import Job
from ...service import JobService
from ...states import JobState
from ..helpers import NO_JITTER, fetch_one, job_error, push
from ._base import KitTest

__all__ = ["TestTransitionDetails", "TestTransitionMatrix", "job_in_state"]

S = JobState
STATES = [s.value for s in S]
#: Far enough ahead that no timer fires during a test, in either time mode.
LATER = "PT1H"


async def job_in_state(service: JobService, state: str, queue: str = "default") -> Job:
    """A job driven into ``state`` through service operations only (the only job of ``queue``).

    ``discarded`` jobs are dead-lettered; ``retryable`` and ``scheduled`` ones are due in an
    hour; ``active`` ones are held by worker ``w1``.
    """
    if state == "scheduled":
        return await push(service, queue=queue, scheduled_at="+" + LATER)
    if state == "pending":
        return await push(service, queue=queue, pending=True)
    if state == "cancelled":
        job = await push(service, queue=queue)
        return (await service.cancel(job.id))[1]
    retry: dict[str, Any] = {
        "max_attempts": 3,
        "initial_interval": LATER,
        "max_interval": LATER,
        **NO_JITTER,
    }
    if state == "discarded":
        retry = {"max_attempts": 1, "on_exhaustion": "dead_letter"}
    job = await push(service, queue=queue, retry=retry)
    if state == "available":
        return job
    job = await fetch_one(service, queue, worker_id="w1")
    if state == "active":
        return job
    if state == "completed":
        return await service.ack(job.id, {"done": True}, worker_id="w1")
    return await service.nack(job.id, job_error(), worker_id="w1")


Op = Callable[[JobService, Job], Awaitable[Any]]


async def _fetch(service: JobService, job: Job) -> Any:
    jobs = await service.fetch([job.queue], worker_id="w2")
    if not jobs:
        raise LookupError("nothing fetched")
    return jobs


#: operation -> (how to run it, {from state: resulting state}, error raised from other states)
OPERATIONS: dict[str, tuple[Op, dict[str, str], type[Exception]]] = {
    "ack": (
        lambda s, j: s.ack(j.id, "ok"),
        {"active": "completed"},
        InvalidStateTransitionError,
    ),
    "nack": (
        lambda s, j: s.nack(j.id, job_error()),
        {"active": "retryable"},
        InvalidStateTransitionError,
    ),
    "requeue": (
        lambda s, j: s.nack(j.id, job_error(), requeue=True),
        {"active": "available"},
        InvalidStateTransitionError,
    ),
    "cancel": (
        lambda s, j: s.cancel(j.id),
        {st.value: "cancelled" for st in S if not st.terminal},
        InvalidStateTransitionError,
    ),
    "activate": (lambda s, j: s.activate(j.id), {"pending": "available"}, ConflictError),
    "retry_dead_letter": (
        lambda s, j: s.retry_dead_letter(j.id),
        {"discarded": "available"},
        NotFoundError,
    ),
    "fetch": (_fetch, {"available": "active"}, LookupError),
}


class TestTransitionMatrix(KitTest):
    """Each operation from each of the eight states (the OJS transition table, end to end)."""

    @pytest.mark.parametrize("state", STATES)
    @pytest.mark.parametrize("op", sorted(OPERATIONS))
    async def test_operation_from_state(self, service: JobService, op: str, state: str) -> None:
        """A legal operation stores the target state; an illegal one raises and writes nothing."""
        job = await job_in_state(service, state)
        before = await service.get(job.id)
        assert before.state.value == state
        run, legal, error = OPERATIONS[op]
        target = legal.get(state)
        if target is None:
            with pytest.raises(error) as exc:
                await run(service, job)
            if isinstance(exc.value, InvalidStateTransitionError):
                assert exc.value.current == state
            assert await service.get(job.id) == before, "a refused operation wrote something"
        else:
            await run(service, job)
            assert (await service.get(job.id)).state.value == target


class TestTransitionDetails(KitTest):
    """What each transition stores besides the state."""

    async def test_fetch_activates_with_attempt_worker_and_visibility(
        self, service: JobService
    ) -> None:
        """A claimed job is active, attempt 1, held by the worker, visible until start + vt."""
        sent = service.now()
        job = await push(service, "email.send", ["a@example.com"], queue="mail")
        assert job.state is S.AVAILABLE
        assert job.attempt == 0
        assert job.created_at is not None
        assert job.enqueued_at == job.created_at
        assert sent <= job.created_at <= service.now()
        assert await service.get(job.id) == job
        sent = service.now()
        claimed = await fetch_one(service, "mail", worker_id="w1", visibility_ms=45_000)
        assert claimed.id == job.id
        assert claimed.state is S.ACTIVE
        assert claimed.attempt == 1
        assert claimed.worker_id == "w1"
        assert claimed.started_at is not None
        assert sent <= claimed.started_at <= service.now()
        assert claimed.visible_until is not None
        assert (claimed.visible_until - claimed.started_at).total_seconds() == 45
        assert await service.get(job.id) == claimed
        assert await service.fetch(["mail"]) == []

    async def test_ack_stores_result_and_completion(self, service: JobService) -> None:
        """``active -> completed`` keeps the result and the completion time."""
        job = await push(service)
        claimed = await fetch_one(service, worker_id="w1")
        sent = service.now()
        done = await service.ack(job.id, {"sent": True, "n": [1, 2]}, worker_id="w1")
        assert done.state is S.COMPLETED
        assert done.result == {"sent": True, "n": [1, 2]}
        assert done.completed_at is not None
        assert claimed.started_at is not None
        assert claimed.started_at <= sent <= done.completed_at <= service.now()
        assert done.error is None
        assert await service.get(job.id) == done
        assert await service.fetch(["default"]) == []

    async def test_nack_records_the_error_and_the_next_attempt(self, service: JobService) -> None:
        """``active -> retryable`` records the error (attempt, time) and when to retry."""
        job = await push(
            service,
            retry={
                "max_attempts": 3,
                "initial_interval": LATER,
                "max_interval": LATER,
                **NO_JITTER,
            },
        )
        await fetch_one(service, worker_id="w")
        sent = service.now()
        failed = await service.nack(
            job.id, job_error("first", details={"error_class": "IOError"}), worker_id="w"
        )
        assert failed.state is S.RETRYABLE
        assert failed.error is not None
        assert failed.error.message == "first"
        assert failed.error.attempt == 1
        assert failed.error.occurred_at is not None
        assert sent <= failed.error.occurred_at <= service.now()
        assert failed.error.details == {"error_class": "IOError"}
        assert failed.retry_delay_ms == 3_600_000
        assert failed.next_attempt_at is not None
        assert (failed.next_attempt_at - failed.error.occurred_at).total_seconds() == 3600
        assert failed.errors == [failed.error]
        assert await service.get(job.id) == failed
        assert await service.fetch(["default"]) == []

    async def test_non_retryable_error_discards_at_once(self, service: JobService) -> None:
        """``retryable: false`` in a nack is final, whatever attempts remain."""
        job = await push(service, retry={"max_attempts": 5})
        await fetch_one(service)
        out = await service.nack(job.id, job_error(retryable=False))
        assert out.state is S.DISCARDED
        assert out.attempt == 1
        assert out.discarded_at is not None
        assert (await service.get(job.id)).state is S.DISCARDED

    async def test_non_retryable_errors_of_the_policy_discard(self, service: JobService) -> None:
        """An error whose type matches ``non_retryable_errors`` (``prefix.*``) is final."""
        retry = {"max_attempts": 5, "non_retryable_errors": ["fatal.*"]}
        job = await push(service, retry=retry)
        await fetch_one(service)
        out = await service.nack(job.id, job_error(type="fatal.disk"))
        assert out.state is S.DISCARDED
        other = await push(service, retry=retry)
        await fetch_one(service)
        assert (await service.nack(other.id, job_error(type="transient"))).state is S.RETRYABLE

    async def test_requeue_does_not_consume_an_attempt(self, service: JobService) -> None:
        """Nack with ``requeue`` puts the job straight back, attempt unchanged."""
        job = await push(service)
        await fetch_one(service, worker_id="w")
        back = await service.nack(job.id, job_error("shutting down"), worker_id="w", requeue=True)
        assert back.state is S.AVAILABLE
        assert back.attempt == 0
        assert back.worker_id is None
        again = await fetch_one(service)
        assert again.id == job.id
        assert again.attempt == 1

    async def test_another_workers_ack_is_a_conflict(self, service: JobService) -> None:
        """Only the worker holding a job may ack or nack it: 409 conflict, not a transition."""
        job = await push(service)
        await fetch_one(service, worker_id="w1")
        for attempt in (
            service.ack(job.id, "x", worker_id="w2"),
            service.nack(job.id, job_error(), worker_id="w2"),
        ):
            with pytest.raises(ConflictError) as exc:
                await attempt
            assert not isinstance(exc.value, InvalidStateTransitionError)
        still = await service.get(job.id)
        assert still.state is S.ACTIVE
        assert still.worker_id == "w1"
        assert (await service.ack(job.id, "mine", worker_id="w1")).result == "mine"

    async def test_cancelled_active_job_refuses_the_late_ack(self, service: JobService) -> None:
        """Cancelling an active job takes effect at once; its worker's ack then fails."""
        job = await push(service)
        await fetch_one(service, worker_id="w1")
        before, after = await service.cancel(job.id)
        assert before.state is S.ACTIVE
        assert after.state is S.CANCELLED
        assert after.cancelled_at is not None
        with pytest.raises(InvalidStateTransitionError):
            await service.ack(job.id, "late", worker_id="w1")
        beat = await service.heartbeat("w1", [job.id])
        assert beat.extended == []
        assert (await service.get(job.id)).state is S.CANCELLED

    async def test_pending_job_waits_for_activation(self, service: JobService) -> None:
        """A pending job is stored but never claimed until activated."""
        job = await push(service, pending=True)
        assert job.state is S.PENDING
        assert await service.fetch(["default"]) == []
        _, active = await service.activate(job.id)
        assert active.state is S.AVAILABLE
        assert active.activated_at is not None
        assert (await fetch_one(service)).id == job.id

    @pytest.mark.parametrize("op", ["get", "ack", "nack", "cancel", "activate", "dead_letter"])
    async def test_unknown_job_is_not_found(self, service: JobService, op: str) -> None:
        """Every operation on an unknown id raises NotFoundError."""
        jid = uuid7()
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "get": lambda: service.get(jid),
            "ack": lambda: service.ack(jid),
            "nack": lambda: service.nack(jid, job_error()),
            "cancel": lambda: service.cancel(jid),
            "activate": lambda: service.activate(jid),
            "dead_letter": lambda: service.retry_dead_letter(jid),
        }
        with pytest.raises(NotFoundError):
            await calls[op]()

    async def test_refused_transition_names_states(self, service: JobService) -> None:
        """The error of an illegal transition carries the job, its state and the target."""
        job = await push(service)
        with pytest.raises(InvalidStateTransitionError) as exc:
            await service.ack(job.id)
        err: OJSError = exc.value
        assert exc.value.current == "available"
        assert exc.value.attempted == "completed"
        assert err.details["job_id"] == job.id
        assert err.status == 409
