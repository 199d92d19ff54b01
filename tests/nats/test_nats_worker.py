"""The in-process Worker on NATS: 10,000 jobs with retries and a graceful stop midway."""

from __future__ import annotations

from typing import Any

import pytest
from nats_support import eventually

from ojs_core.scheduler import Scheduler
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.worker import JobContext, Worker

pytestmark = pytest.mark.slow

TOTAL = 10_000


async def test_ten_thousand_jobs_with_retries_and_a_graceful_stop(
    replicas: tuple[JobService, JobService],
) -> None:
    first, second = replicas
    retry = {"max_attempts": 3, "initial_interval": "PT0.1S", "jitter": False}
    ids: list[str] = []
    for start in range(0, TOTAL, 500):
        batch = [
            {"type": "bench.work", "args": [i], "options": {"queue": "w10k", "retry": retry}}
            for i in range(start, start + 500)
        ]
        ids.extend(o.job.id for o in await first.enqueue_batch(batch))
    assert len(set(ids)) == TOTAL

    handled: set[int] = set()

    async def work(ctx: JobContext) -> Any:
        n = ctx.job.args[0]
        if n % 10 == 0 and ctx.attempt == 1:
            raise RuntimeError(f"transient failure of job {n}")  # every 10th job retries once
        handled.add(n)
        return {"n": n}

    def make(service: JobService, name: str) -> Worker:
        worker = Worker(
            service,
            "w10k",
            concurrency=64,
            fetch_batch=64,
            heartbeat_interval=2.0,
            grace_period=5.0,
            poll_wait=0.2,
            worker_id=name,
        )
        worker.register("bench.work", work)
        return worker

    # Retries are timers: each replica runs the timer loop, as ojs-server's lifespan does.
    timers = [Scheduler(first, interval=0.02), Scheduler(second, interval=0.02)]
    for t in timers:
        t.start()
    a = make(first, "worker-a")
    a.start()
    await eventually(lambda: len(handled) >= TOTAL // 3, within=60, what="a third handled")
    await a.stop(grace=5.0)  # graceful: finish or hand back in-flight jobs, lose none
    stopped_at = len(handled)
    assert stopped_at < TOTAL

    b = make(second, "worker-b")
    b.start()
    try:
        await eventually(lambda: len(handled) == TOTAL, within=90, what="every job handled")
    finally:
        await b.stop(grace=5.0)
        for t in timers:
            await t.stop()

    jobs = []
    for start in range(0, TOTAL, 1000):
        jobs.extend(await second.backend.get_jobs(ids[start : start + 1000]))
    states = {j.state for j in jobs if j is not None}
    assert states == {JobState.COMPLETED}, states
    assert all(j is not None for j in jobs)
    retried = [j for j in jobs if j is not None and j.args[0] % 10 == 0]
    assert len(retried) == TOTAL // 10
    assert all(j.attempt >= 2 and len(j.errors) >= 1 for j in retried)
    assert all(j.result == {"n": j.args[0]} for j in jobs if j is not None)
