"""Batched compare-and-swaps (the optional :class:`~ojs_core.backend.BatchUpdates`): each item
decided as :meth:`~ojs_core.backend.Backend.update_job` would decide it alone. Skipped on a
backend without the capability."""

from __future__ import annotations

import attrs
import pytest

from ...backend import BatchUpdates
from ...errors import ConflictError, NotFoundError
from ...ids import uuid7
from ...model import Job
from ...service import JobService
from ...states import JobState
from ..helpers import push
from ._base import KitTest

__all__ = ["TestBatchUpdates"]


def _batches(service: JobService) -> BatchUpdates:
    backend = service.backend
    if not isinstance(backend, BatchUpdates):
        pytest.skip("the backend does not write batches (BatchUpdates)")
    return backend


def _count(job: Job) -> Job:
    return attrs.evolve(job, meta={**job.meta, "n": int(job.meta.get("n", 0)) + 1})


def _refuse(job: Job) -> Job:
    raise ConflictError(f"refused {job.id}")


def _keep(job: Job) -> Job:
    return job


class TestBatchUpdates(KitTest):
    """``update_jobs``: per item, in order, what ``update_job`` returns or raises."""

    async def test_each_item_is_decided_on_its_own(self, service: JobService) -> None:
        """A change is stored, an unknown job is ``NotFoundError``, what ``fn`` raises is that
        item's outcome, "no change" returns the stored version twice; none affects another."""
        backend = _batches(service)
        changed, refused, kept = [(await push(service, "bu.t")).id for _ in range(3)]
        outcomes = await backend.update_jobs(
            [(changed, _count), (uuid7(), _count), (refused, _refuse), (kept, _keep)]
        )
        assert len(outcomes) == 4
        first = outcomes[0]
        assert not isinstance(first, BaseException)
        assert first[1].meta["n"] == 1
        assert isinstance(outcomes[1], NotFoundError)
        assert isinstance(outcomes[2], ConflictError)
        last = outcomes[3]
        assert not isinstance(last, BaseException)
        assert last[0] == last[1]
        assert (await service.backend.get_job(changed)) == first[1]
        refused_now = await service.backend.get_job(refused)
        assert refused_now is not None
        assert "n" not in refused_now.meta

    async def test_a_job_named_twice_gets_both_changes(self, service: JobService) -> None:
        """Two items for one job are both applied (each to the version the other left)."""
        backend = _batches(service)
        job_id = (await push(service, "bu.t")).id
        outcomes = await backend.update_jobs([(job_id, _count), (job_id, _count)])
        assert not any(isinstance(o, BaseException) for o in outcomes)
        stored = await service.backend.get_job(job_id)
        assert stored is not None
        assert stored.meta["n"] == 2

    async def test_acks_of_claimed_jobs(self, service: JobService) -> None:
        """The batch ``ack_many`` writes: claimed jobs completed with their results."""
        _batches(service)
        for i in range(5):
            await push(service, "bu.ack", [i], queue="bu")
        claimed = await service.fetch(["bu"], count=5)
        assert len(claimed) == 5
        outcomes = await service.ack_many([(j.id, j.args[0]) for j in claimed])
        for job, outcome in zip(claimed, outcomes, strict=True):
            assert isinstance(outcome, Job)
            assert outcome.state is JobState.COMPLETED
            stored = await service.get(job.id)
            assert (stored.state, stored.result) == (JobState.COMPLETED, job.args[0])
