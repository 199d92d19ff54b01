"""The event log: what transitions publish, and reading it back with filters."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ...backend import EventFeed, EventFilter
from ...events import make_event
from ...model import Event
from ...service import JobService
from ..helpers import expect_events, fetch_one, job_error, push
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestEventFeed", "TestEvents"]


class TestEvents(KitTest):
    """Events carry the job's fields, come back in order, and filter by type, queue and job."""

    async def test_job_lifecycle_events(self, service: JobService, ojs_time: TimeControl) -> None:
        """Enqueue, start and completion each publish one event with the job's fields."""
        job = await push(service, "ev.job", queue="events")
        claimed = await fetch_one(service, "events", worker_id="w")
        await ojs_time.advance(0.25)
        done = await service.ack(job.id, "ok")
        events = await expect_events(
            ojs_time,
            service,
            ["job.enqueued", "job.started", "job.completed"],
            "job.*",
            job_id=job.id,
        )
        for e in events:
            assert e.data["job_id"] == job.id
            assert e.data["job_type"] == "ev.job"
            assert e.data["queue"] == "events"
            assert e.subject == job.id
            assert e.seq > 0
        assert [e.data["attempt"] for e in events] == [0, 1, 1]
        assert events[1].data["worker_id"] == "w"
        assert events[2].data["result"] == "ok"
        assert claimed.started_at is not None
        assert done.completed_at is not None
        took = (done.completed_at - claimed.started_at) // timedelta(milliseconds=1)
        assert took >= 250
        assert events[2].data["duration_ms"] == took
        assert [e.seq for e in events] == sorted({e.seq for e in events})

    async def test_after_filters_by_sequence(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """``after`` returns only events with a greater sequence number."""
        job = await push(service)
        await fetch_one(service)
        await service.ack(job.id)
        events = await expect_events(
            ojs_time, service, ["job.enqueued", "job.started", "job.completed"], "job.*"
        )
        later = await service.events(EventFilter(after=events[0].seq))
        assert [e.type for e in later] == ["job.started", "job.completed"]
        assert await service.events(EventFilter(after=events[-1].seq)) == []

    async def test_type_queue_and_job_filters(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Type patterns, queues and job ids narrow the listing."""
        a = await push(service, queue="qa")
        b = await push(service, queue="qb")
        await service.cancel(b.id)
        await expect_events(
            ojs_time, service, ["job.enqueued", "job.enqueued", "job.cancelled"], "job.*"
        )
        qa = await service.events(EventFilter(queues=("qa",)))
        assert [(e.type, e.data["job_id"]) for e in qa] == [("job.enqueued", a.id)]
        cancelled = await service.events(EventFilter(types=("job.cancelled",)))
        assert [e.data["job_id"] for e in cancelled] == [b.id]
        assert cancelled[0].data["previous_state"] == "available"
        mine = await service.events(EventFilter(job_id=b.id))
        assert [e.type for e in mine] == ["job.enqueued", "job.cancelled"]
        assert await service.events(EventFilter(queues=("nowhere",))) == []
        both = await service.events(EventFilter(types=("job.enqueued", "job.cancelled")))
        assert len(both) == 3

    async def test_failure_events(self, service: JobService, ojs_time: TimeControl) -> None:
        """A failed attempt publishes ``job.failed`` and then ``job.retrying`` or ``discarded``."""
        job = await push(
            service, retry={"max_attempts": 2, "initial_interval": "PT1H", "max_interval": "PT1H"}
        )
        await fetch_one(service)
        await service.nack(job.id, job_error("once"))
        events = await expect_events(
            ojs_time, service, ["job.failed", "job.retrying"], "job.failed", "job.retrying"
        )
        assert events[0].data["error"]["message"] == "once"
        assert events[1].data["max_attempts"] == 2

    async def test_limit(self, service: JobService, ojs_time: TimeControl) -> None:
        """``limit`` caps the listing, oldest first."""
        ids = [(await push(service, args=[i])).id for i in range(5)]
        await expect_events(ojs_time, service, ["job.enqueued"] * 5, "job.enqueued")
        first = await service.events(EventFilter(limit=2))
        assert [e.data["job_id"] for e in first] == ids[:2]

    async def test_published_events_read_back_in_order(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """``publish_events`` then ``read_events``: same events, numbered in order."""
        now = service.now()
        sent = [
            make_event("custom.thing", now, {"n": n, "nested": {"k": [n]}}, subject=f"s{n}")
            for n in range(3)
        ]
        await service.backend.publish_events(sent)

        async def three() -> list[object] | None:
            got = await service.backend.read_events(EventFilter(types=("custom.*",)))
            return list(got) if len(got) >= 3 else None

        await ojs_time.until(three, what="three published events")
        got = await service.backend.read_events(EventFilter(types=("custom.*",)))
        assert [(e.id, e.type, e.subject, e.data) for e in got] == [
            (e.id, e.type, e.subject, e.data) for e in sent
        ]
        assert [e.time for e in got] == [e.time for e in sent]
        assert got[0].seq < got[1].seq < got[2].seq


class TestEventFeed(KitTest):
    """The optional :class:`~ojs_core.backend.EventFeed`: live events numbered as the log numbers
    them, and the log read back from any number (how streams resume)."""

    async def test_feed_delivers_events_numbered_as_the_log(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Each event of a job comes through the feed with the ``seq`` the log gives it."""
        backend = service.backend
        if not isinstance(backend, EventFeed):
            pytest.skip("the backend has no live event feed (it is polled)")
        heard: list[Event] = []
        unsubscribe = await backend.subscribe_events(heard.append)
        try:
            job = await push(service, "feed.job", queue="feed")
            await fetch_one(service, "feed")
            await service.ack(job.id)
            logged = await expect_events(
                ojs_time, service, ["job.enqueued", "job.started", "job.completed"], job_id=job.id
            )

            def mine() -> list[Event] | None:
                got = [e for e in heard if e.data.get("job_id") == job.id]
                return got if len(got) >= len(logged) else None

            live = await ojs_time.until(mine, what="the job's events through the feed")
            assert [(e.seq, e.id, e.type) for e in live] == [(e.seq, e.id, e.type) for e in logged]
            assert [e.seq for e in heard] == sorted({e.seq for e in heard})
        finally:
            await unsubscribe()
        other = await push(service, queue="feed")
        await expect_events(ojs_time, service, ["job.enqueued"], job_id=other.id)
        assert all(e.data.get("job_id") != other.id for e in heard), "heard after unsubscribe"

    async def test_read_from_any_number_resumes_without_gap_or_duplicate(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Reading the whole log in small pages, each after the last number read, yields every
        event once, in order (what a stream resuming with ``Last-Event-ID`` relies on)."""
        jobs = [await push(service, queue="resume") for _ in range(7)]
        everything = await expect_events(ojs_time, service, ["job.enqueued"] * 7, "job.*")
        paged: list[Event] = []
        after = 0
        while page := await service.events(EventFilter(after=after, limit=3)):
            paged.extend(page)
            after = page[-1].seq
        assert [e.id for e in paged] == [e.id for e in everything]
        assert [e.data["job_id"] for e in paged] == [j.id for j in jobs]
        middle = everything[3].seq
        rest = await service.events(EventFilter(after=middle, limit=100))
        assert [e.id for e in rest] == [e.id for e in everything[4:]]
