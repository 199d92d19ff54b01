"""``list_jobs`` by state, queue and type: filters and their combinations, newest-first
order, pagination with ``limit``/``offset`` and ``total``, and listings that follow each
job's state changes and deletion."""

from __future__ import annotations

from ...backend import JobFilter, Page
from ...model import Job
from ...service import JobService
from ..helpers import fetch_one, push
from ._base import KitTest
from .transitions import job_in_state

__all__ = ["TestListJobs"]


async def _ids(service: JobService, **flt: object) -> list[str]:
    return [j.id for j in (await _page(service, **flt)).items]


async def _page(service: JobService, **flt: object) -> Page:
    return await service.backend.list_jobs(JobFilter(**flt))  # type: ignore[arg-type]


def _newest_first(jobs: list[Job]) -> list[str]:
    return [j.id for j in reversed(jobs)]


class TestListJobs(KitTest):
    """``list_jobs`` with ``state``, ``queue`` and ``type`` filters."""

    async def test_filters_and_their_combinations(self, service: JobService) -> None:
        """Each filter, each pair and all three select exactly the matching jobs, newest
        first, and ``total`` counts them all."""
        a1 = await push(service, "t.alpha", queue="qa")
        b1 = await push(service, "t.beta", queue="qa")
        a2 = await push(service, "t.alpha", queue="qb")
        b2 = await push(service, "t.beta", queue="qb")
        a3 = await push(service, "t.alpha", queue="qa")
        active = await fetch_one(service, "qa", worker_id="w")  # the oldest of qa: a1
        assert active.id == a1.id
        every = [a1, b1, a2, b2, a3]
        cases: list[tuple[dict[str, object], list[Job]]] = [
            ({}, every),
            ({"state": "available"}, [b1, a2, b2, a3]),
            ({"state": "active"}, [a1]),
            ({"state": "completed"}, []),
            ({"queue": "qa"}, [a1, b1, a3]),
            ({"queue": "qb"}, [a2, b2]),
            ({"queue": "nowhere"}, []),
            ({"type": "t.alpha"}, [a1, a2, a3]),
            ({"type": "t.beta"}, [b1, b2]),
            ({"type": "t.gamma"}, []),
            ({"state": "available", "queue": "qa"}, [b1, a3]),
            ({"state": "available", "type": "t.alpha"}, [a2, a3]),
            ({"queue": "qa", "type": "t.alpha"}, [a1, a3]),
            ({"state": "available", "queue": "qa", "type": "t.alpha"}, [a3]),
            ({"state": "active", "queue": "qb", "type": "t.alpha"}, []),
        ]
        for flt, expected in cases:
            page = await _page(service, **flt)
            assert [j.id for j in page.items] == _newest_first(expected), flt
            assert page.total == len(expected), flt
        listed = (await _page(service, state="active")).items
        assert listed[0] == await service.get(a1.id)  # the stored version

    async def test_newest_first_by_enqueue_order(self, service: JobService) -> None:
        """Jobs are listed newest enqueued first, also after they changed state: a job that
        became active after a newer one keeps its place behind it."""
        jobs = [await push(service, args=[i]) for i in range(4)]
        batch = await service.enqueue_batch([{"type": "test.job", "args": [i]} for i in (4, 5)])
        jobs += [o.job for o in batch]
        assert await _ids(service) == _newest_first(jobs)
        assert await _ids(service, state="available") == _newest_first(jobs)
        first = await fetch_one(service, worker_id="w")
        second = await fetch_one(service, worker_id="w")
        assert [first.id, second.id] == [jobs[0].id, jobs[1].id]
        await service.ack(first.id, None, worker_id="w")  # completed after...
        await service.ack(second.id, None, worker_id="w")  # ...the older job, before this one
        assert await _ids(service, state="completed") == [second.id, first.id]
        assert await _ids(service) == _newest_first(jobs)

    async def test_pages(self, service: JobService) -> None:
        """``limit`` and ``offset`` page through the listing; ``total`` counts every match."""
        jobs = [await push(service, "t.paged", args=[i], queue="pages") for i in range(7)]
        await push(service, "t.other", queue="pages")
        expected = _newest_first(jobs)
        for flt in ({"type": "t.paged"}, {"type": "t.paged", "state": "available"}):
            seen: list[str] = []
            for offset in range(0, 9, 3):
                page = await _page(service, limit=3, offset=offset, **flt)
                assert page.total == 7
                seen += [j.id for j in page.items]
            assert seen == expected
        assert await _ids(service, queue="pages", limit=2, offset=1) == [jobs[6].id, jobs[5].id]
        beyond = await _page(service, queue="pages", limit=5, offset=50)
        assert beyond.items == []
        assert beyond.total == 8
        assert await _ids(service, queue="pages", limit=0) == []

    async def test_a_job_changes_listing_with_its_state(self, service: JobService) -> None:
        """A job leaves the listing of the state it left and enters that of its new state."""
        job = await push(service, queue="moves")
        other = await push(service, queue="moves")
        claimed = await fetch_one(service, "moves", worker_id="w")
        assert claimed.id == job.id
        assert await _ids(service, state="available", queue="moves") == [other.id]
        assert await _ids(service, state="active", queue="moves") == [job.id]
        await service.ack(job.id, None, worker_id="w")
        assert await _ids(service, state="active", queue="moves") == []
        assert (await _page(service, state="active", queue="moves")).total == 0
        done = await _page(service, state="completed", queue="moves")
        assert [j.id for j in done.items] == [job.id]
        assert done.total == 1
        assert done.items[0].state.value == "completed"
        await service.cancel(other.id)
        assert await _ids(service, state="available", queue="moves") == []
        assert await _ids(service, state="cancelled", queue="moves") == [other.id]
        assert await _ids(service, queue="moves") == [other.id, job.id]

    async def test_each_state_is_listed(self, service: JobService) -> None:
        """Jobs of every state are found by their state and queue."""
        states = ["scheduled", "pending", "cancelled", "available", "active"]
        states += ["completed", "retryable", "discarded"]
        for state in states:
            job = await job_in_state(service, state, queue=f"in-{state}")
            page = await _page(service, state=state, queue=f"in-{state}")
            assert [j.id for j in page.items] == [job.id], state
            assert page.total == 1, state
            assert (await _page(service, state=state)).total == 1, state

    async def test_deleted_jobs_are_not_listed(self, service: JobService) -> None:
        """A deleted job is in no listing and no total."""
        gone = await push(service, "t.del", queue="del")
        kept = await push(service, "t.del", queue="del")
        done = await job_in_state(service, "completed", queue="del2")
        assert await service.backend.delete_job(gone.id) is True
        assert await service.backend.delete_job(done.id) is True
        for flt in ({}, {"queue": "del"}, {"type": "t.del"}, {"state": "available"}):
            page = await _page(service, **flt)
            assert [j.id for j in page.items] == [kept.id], flt
            assert page.total == 1, flt
        assert (await _page(service, state="completed")).total == 0
        assert await _ids(service, state="completed") == []

    async def test_names_no_job_can_have(self, service: JobService) -> None:
        """A filter value no stored job can have (from a URL, say) lists nothing."""
        await push(service)
        for flt in ({"state": "nonsense"}, {"queue": "a b"}, {"queue": "*"}, {"type": ">"}):
            page = await _page(service, **flt)
            assert page.items == [], flt
            assert page.total == 0, flt
