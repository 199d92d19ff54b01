"""Atomic inserts: batch enqueue stores every job or none; duplicate ids are refused."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from ...backend import UniqueConflict
from ...errors import DuplicateJobError, ValidationError
from ...ids import uuid7
from ...model import Job, UniquePolicy
from ...service import JobService
from ...states import JobState
from ...unique import unique_key
from ..helpers import expect_stats, push
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestBatchEnqueue", "TestInsertJobs"]

S = JobState


def _job(service: JobService, jtype: str = "i.job", **fields: Any) -> Job:
    now = service.now()
    return Job(id=fields.pop("id", uuid7()), type=jtype, created_at=now, enqueued_at=now, **fields)


class TestBatchEnqueue(KitTest):
    """:meth:`JobService.enqueue_batch`: all stored, in order, or nothing."""

    async def test_stores_all_in_order(self, service: JobService, ojs_time: TimeControl) -> None:
        """Every job is created and claimable in the order given."""
        outcomes = await service.enqueue_batch(
            [{"type": "a.job", "args": [i], "options": {"queue": "bulk"}} for i in range(50)]
        )
        assert all(o.created for o in outcomes)
        assert [o.job.args for o in outcomes] == [[i] for i in range(50)]
        got = await service.fetch(["bulk"], count=50)
        assert [j.id for j in got] == [o.job.id for o in outcomes]
        await expect_stats(ojs_time, service, "bulk", active=50)

    async def test_mixed_queues_and_states(self, service: JobService) -> None:
        """A batch may mix queues, scheduled and pending jobs."""
        outcomes = await service.enqueue_batch(
            [
                {"type": "a.now", "args": []},
                {"type": "a.later", "args": [], "options": {"scheduled_at": "+PT1H"}},
                {"type": "a.held", "args": [], "options": {"pending": True}},
                {"type": "a.elsewhere", "args": [], "options": {"queue": "q2"}},
            ]
        )
        states = [o.job.state for o in outcomes]
        assert states == [S.AVAILABLE, S.SCHEDULED, S.PENDING, S.AVAILABLE]
        for outcome in outcomes:
            assert await service.get(outcome.job.id) == outcome.job
        assert [j.type for j in await service.fetch(["default", "q2"], count=5)] == [
            "a.now",
            "a.elsewhere",
        ]

    async def test_one_invalid_job_stores_nothing(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Validation happens before any write; the error names the index and field."""
        with pytest.raises(ValidationError) as exc:
            await service.enqueue_batch(
                [
                    {"type": "a.ok", "args": []},
                    {"type": "a.ok", "args": [], "options": {"priority": "urgent!"}},
                ]
            )
        assert exc.value.details["index"] == 1
        assert exc.value.details["field"] == "jobs[1].options.priority"
        assert await service.fetch(["default"]) == []
        await expect_stats(ojs_time, service, "default")
        with pytest.raises(ValidationError):
            await service.enqueue_batch([])

    async def test_unique_conflict_with_a_stored_job_stores_nothing(
        self, service: JobService
    ) -> None:
        """A conflict on any job of the batch refuses the whole batch."""
        unique = {"keys": ["type"]}
        existing = await push(service, "a.unique", unique=unique)
        free = uuid7()
        with pytest.raises(DuplicateJobError) as exc:
            await service.enqueue_batch(
                [
                    {"id": free, "type": "a.free", "args": []},
                    {"type": "a.unique", "args": [], "options": {"unique": unique}},
                ]
            )
        assert exc.value.details["index"] == 1
        assert exc.value.details["existing_job_id"] == existing.id
        assert await service.backend.get_job(free) is None
        assert [j.id for j in await service.fetch(["default"], count=5)] == [existing.id]

    async def test_conflict_inside_the_batch_stores_nothing(self, service: JobService) -> None:
        """Two jobs of one batch with the same key conflict with each other."""
        unique = {"keys": ["type"]}
        with pytest.raises(DuplicateJobError) as exc:
            await service.enqueue_batch(
                [
                    {"type": "a.same", "args": [], "options": {"unique": unique}},
                    {"type": "a.same", "args": [], "options": {"unique": unique}},
                ]
            )
        assert exc.value.details["index"] == 1
        assert await service.fetch(["default"]) == []

    async def test_ignored_duplicate_in_a_batch(self, service: JobService) -> None:
        """With ``ignore`` the duplicate answers with the holder; the others are created."""
        unique = {"keys": ["type"], "on_conflict": "ignore"}
        existing = await push(service, "a.once", unique=unique)
        outcomes = await service.enqueue_batch(
            [
                {"type": "a.new", "args": []},
                {"type": "a.once", "args": [], "options": {"unique": unique}},
            ]
        )
        assert [o.created for o in outcomes] == [True, False]
        assert outcomes[1].job.id == existing.id
        got = {j.id for j in await service.fetch(["default"], count=5)}
        assert got == {existing.id, outcomes[0].job.id}

    async def test_batch_with_an_existing_id_stores_nothing(self, service: JobService) -> None:
        """A client-chosen id that exists already refuses the whole batch."""
        taken = await push(service)
        fresh = uuid7()
        with pytest.raises(DuplicateJobError):
            await service.enqueue_batch(
                [
                    {"id": fresh, "type": "a.x", "args": []},
                    {"id": taken.id, "type": "a.x", "args": []},
                ]
            )
        assert await service.backend.get_job(fresh) is None
        assert await service.get(taken.id) == taken
        # Whatever the refused batch announced of the existing job, it is handed out once.
        assert [j.id for j in await service.fetch(["default"], count=10)] == [taken.id]
        assert await service.fetch(["default"], count=10) == []

    async def test_duplicate_id_inside_the_batch_stores_nothing(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """One client-chosen id twice in a batch refuses it; nothing it began stays behind."""
        dup, other = uuid7(), uuid7()
        with pytest.raises(DuplicateJobError):
            await service.enqueue_batch(
                [
                    {"id": dup, "type": "a.b", "args": [1]},
                    {"id": other, "type": "a.b", "args": [2]},
                    {"id": dup, "type": "a.b", "args": [3]},
                ]
            )
        assert await service.backend.get_jobs([dup, other]) == [None, None]
        assert await service.fetch(["default"], count=10) == []
        fresh = await push(service)
        assert [j.id for j in await service.fetch(["default"], count=10)] == [fresh.id]
        await expect_stats(ojs_time, service, "default", active=1)

    async def test_a_refused_batch_never_hides_the_next_job(self, service: JobService) -> None:
        """A batch refused for the id of a finished job leaves the queue as it was."""
        done = await push(service)
        await service.ack((await service.fetch(["default"]))[0].id)
        with pytest.raises(DuplicateJobError):
            await service.enqueue_batch(
                [
                    {"id": uuid7(), "type": "a.b", "args": []},
                    {"id": done.id, "type": "a.b", "args": []},
                ]
            )
        job = await push(service)
        assert [j.id for j in await service.fetch(["default"], count=1)] == [job.id]


class TestInsertJobs(KitTest):
    """``insert_jobs`` directly: ids, unique holders and the conflict predicate."""

    async def test_duplicate_id_within_the_batch(self, service: JobService) -> None:
        """The same id twice in one insert: DuplicateJobError, nothing written."""
        other = _job(service)
        twice = _job(service)
        with pytest.raises(DuplicateJobError):
            await service.backend.insert_jobs([other, twice, twice])
        assert await service.backend.get_jobs([other.id, twice.id]) == [None, None]
        assert await service.fetch(["default"]) == []

    async def test_existing_id(self, service: JobService) -> None:
        """An id that exists: DuplicateJobError, none of the batch written, holder intact."""
        first = _job(service, args=[1])
        assert await service.backend.insert_jobs([first]) == []
        fresh = _job(service)
        again = attrs.evolve(first, args=[2])
        with pytest.raises(DuplicateJobError):
            await service.backend.insert_jobs([fresh, again])
        assert await service.backend.get_job(fresh.id) is None
        assert await service.backend.get_job(first.id) == first

    async def test_conflicts_are_returned_and_nothing_written(self, service: JobService) -> None:
        """When the predicate says conflict, every conflict is returned and nothing stored."""
        policy = UniquePolicy(keys=("type",))
        holder = _job(service, "u.job", unique=policy)
        holder = attrs.evolve(holder, unique_key=unique_key(holder, policy))
        assert await service.backend.insert_jobs([holder]) == []
        free = _job(service, "u.free")
        clash = attrs.evolve(_job(service, "u.job", unique=policy), unique_key=holder.unique_key)
        seen: list[tuple[str, str]] = []

        def conflict(new: Job, existing: Job) -> bool:
            seen.append((new.id, existing.id))
            return True

        result = await service.backend.insert_jobs([free, clash], conflict)
        assert result == [UniqueConflict(index=1, existing=holder)]
        assert (clash.id, holder.id) in seen
        assert await service.backend.get_jobs([free.id, clash.id]) == [None, None]

    async def test_no_conflict_makes_the_new_job_the_holder(self, service: JobService) -> None:
        """When the predicate says no, the new job is written and holds the key from then on."""
        policy = UniquePolicy(keys=("type",))
        key = unique_key(_job(service, "u.job"), policy)
        old = attrs.evolve(_job(service, "u.job", unique=policy), unique_key=key)
        new = attrs.evolve(_job(service, "u.job", unique=policy), unique_key=key)
        assert await service.backend.insert_jobs([old]) == []
        assert await service.backend.insert_jobs([new], lambda n, e: False) == []
        probe = attrs.evolve(_job(service, "u.job", unique=policy), unique_key=key)
        holders: list[str] = []

        def record(n: Job, e: Job) -> bool:
            holders.append(e.id)
            return True

        conflicts = await service.backend.insert_jobs([probe], record)
        assert [c.existing.id for c in conflicts] == [new.id]
        assert holders == [new.id]

    async def test_earlier_job_of_the_batch_is_the_holder(self, service: JobService) -> None:
        """Within one insert, a later job with a key is checked against the earlier one."""
        policy = UniquePolicy(keys=("type",))
        key = unique_key(_job(service, "u.job"), policy)
        a = attrs.evolve(_job(service, "u.job", unique=policy), unique_key=key)
        b = attrs.evolve(_job(service, "u.job", unique=policy), unique_key=key)
        conflicts = await service.backend.insert_jobs([a, b], lambda n, e: e.id == a.id)
        assert conflicts == [UniqueConflict(index=1, existing=a)]
        assert await service.backend.get_jobs([a.id, b.id]) == [None, None]

    async def test_stored_job_equals_the_inserted_one(self, service: JobService) -> None:
        """Every field survives storage, including unknown envelope fields (``extra``)."""
        outcome = await service.enqueue(
            {
                "type": "round.trip",
                "args": [1, "two", {"three": [3.5, None, True]}],
                "meta": {"trace": "abc", "nested": {"x": 1}},
                "x_custom_field": {"kept": True},
                "options": {
                    "queue": "rt",
                    "priority": 7,
                    "timeout_ms": 5000,
                    "visibility_timeout_ms": 9000,
                    "tags": ["a", "b"],
                    "expires_at": "+PT1H",
                    "retry": {
                        "max_attempts": 4,
                        "initial_interval": "PT2S",
                        "backoff_coefficient": 1.5,
                        "non_retryable_errors": ["fatal.*"],
                        "on_exhaustion": "dead_letter",
                    },
                    "unique": {"keys": ["type", "args"], "period": "PT1H"},
                },
            }
        )
        job = outcome.job
        assert job.extra.get("x_custom_field") == {"kept": True}
        assert await service.get(job.id) == job
        claimed = (await service.fetch(["rt"]))[0]
        assert await service.get(job.id) == claimed
        assert (
            attrs.evolve(
                claimed,
                state=job.state,
                attempt=0,
                started_at=None,
                worker_id=None,
                visible_until=None,
            )
            == job
        )
