"""Names are opaque strings: queue names at the edges of their grammar, worker ids of any
characters. A store that maps names onto its own keys (subjects, paths) must not confuse or
refuse them."""

from __future__ import annotations

import pytest

from ...errors import ValidationError
from ...service import JobService
from ...states import JobState
from ..helpers import fetch_one, push
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestNames"]

S = JobState
#: The longest queue name (128 characters), made of dots and dashes.
LONG_QUEUE = ("q1." + "a-b." * 40)[:127] + "z"
WORKER_IDS = [
    "worker 1 with spaces",
    "host/pid/42\\back",
    "wörker-ünïcode-✓-日本語-😀",
    "dots.and*stars>and\ttabs\nnewline",
    "%00 $KV.OJS_JOBS.j.x",
    "é" * 128,  # 256 bytes of UTF-8
    "é" * 129,
    "😀" * 256,  # the longest id the HTTP binding takes, 1 KiB of UTF-8
]


class TestNames(KitTest):
    """Queues and workers by name."""

    async def test_queue_names_with_dots_dashes_and_128_characters(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Look-alike names are different queues: claims, pauses and stats never mix them."""
        assert len(LONG_QUEUE) == 128
        queues = ["a.b", "a-b", "a.b.c", LONG_QUEUE]
        jobs = {q: await push(service, queue=q, priority=5) for q in queues}
        low = await push(service, queue=LONG_QUEUE, priority=-5)
        for q in queues:
            got = await service.fetch([q], count=5, worker_id=q)
            assert [j.id for j in got] == [jobs[q].id] + ([low.id] if q == LONG_QUEUE else [])
            assert all(j.queue == q for j in got)

        await service.set_paused("a.b", True)
        more = {q: await push(service, queue=q) for q in queues}
        assert await service.fetch(["a.b"]) == []
        assert [j.id for j in await service.fetch(["a-b"])] == [more["a-b"].id]
        assert [j.id for j in await service.fetch([LONG_QUEUE])] == [more[LONG_QUEUE].id]
        listed = {q.name: q.paused for q in await service.queues()}
        assert {"a.b", "a-b", "a.b.c", LONG_QUEUE, "default"} <= set(listed)
        assert listed["a.b"] is True
        assert listed["a-b"] is False

        async def long_queue_counted() -> bool:
            stats = await service.queue_stats(LONG_QUEUE)
            return stats.counts[S.ACTIVE] == 3 and not stats.paused

        await ojs_time.until(long_queue_counted, what=f"stats of {LONG_QUEUE!r}")
        assert (await service.queue_stats("a.b")).paused
        with pytest.raises(ValidationError):
            await service.fetch([LONG_QUEUE + "x"])

    @pytest.mark.parametrize("worker_id", WORKER_IDS, ids=[str(i) for i in range(len(WORKER_IDS))])
    async def test_worker_ids_with_any_characters(
        self, service: JobService, worker_id: str
    ) -> None:
        """A worker id is kept as given: claims, heartbeats, records and directives."""
        job = await push(service)
        claimed = await fetch_one(service, worker_id=worker_id, visibility_ms=60_000)
        assert claimed.worker_id == worker_id
        beat = await service.heartbeat(
            worker_id, [job.id], visibility_ms=120_000, info={"queues": ["x"]}
        )
        assert beat.extended == [job.id]
        assert beat.directive == "running"
        assert beat.worker.worker_id == worker_id
        stored = await service.backend.get_worker(worker_id)
        assert stored is not None
        assert stored.worker_id == worker_id
        assert stored.active_jobs == [job.id]
        assert [w.worker_id for w in await service.backend.list_workers()] == [worker_id]
        await service.set_worker_directive(worker_id, "quiet")
        assert (await service.heartbeat(worker_id, [job.id])).directive == "quiet"
        done = await service.ack(job.id, worker_id=worker_id)
        assert done.state is S.COMPLETED
