"""Rate limits across replicas: two JobServices on one NATS admit against one record per key,
so the limits hold for the deployment, not per process (rate-limiting extension §4.1)."""

from __future__ import annotations

import asyncio
import time

from nats_support import push

from ojs_core.model import Job, JobError
from ojs_core.queue_limits import queue_limit_key
from ojs_core.service import JobService
from ojs_core.states import JobState

S = JobState


async def test_concurrency_holds_across_replicas(replicas: tuple[JobService, JobService]) -> None:
    """Six workers, three on each replica, never run more than three jobs of a key at once,
    and every job runs."""
    a, b = replicas
    policy = {"key": "shared-db", "concurrency": 3}
    ids = {(await push(a, queue="rlx", rate_limit=policy)).id for _ in range(30)}
    running: set[str] = set()
    peak = 0
    done: set[str] = set()
    deadline = time.monotonic() + 60

    async def worker(svc: JobService, n: int) -> None:
        nonlocal peak
        while len(done) < len(ids) and time.monotonic() < deadline:
            jobs = await svc.fetch(["rlx"], count=1, worker_id=f"w{n}")
            if not jobs:
                await asyncio.sleep(0.01)
                continue
            job = jobs[0]
            running.add(job.id)
            peak = max(peak, len(running))
            await asyncio.sleep(0.02)
            running.discard(job.id)  # before the ack: the slot is freed by the ack
            await svc.ack(job.id, worker_id=f"w{n}")
            done.add(job.id)

    await asyncio.gather(*(worker(svc, n) for n, svc in enumerate([a, b] * 3)))
    assert done == ids
    assert peak <= 3
    assert peak == 3  # the limit is reached, not just respected
    view = await b.rate_limits.get("shared-db")
    assert view["concurrency"] == {"limit": 3, "active": 0, "available": 3}


async def test_a_rate_window_holds_across_replicas(
    replicas: tuple[JobService, JobService],
) -> None:
    """``rate: {limit: 4, period: PT30S}``: both replicas together start four jobs."""
    a, b = replicas
    policy = {"key": "partner-api", "rate": {"limit": 4, "period": "PT30S"}}
    for _ in range(10):
        await push(a, queue="rlw", rate_limit=policy)
    claimed: list[str] = []
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        for svc in (a, b):
            claimed.extend(j.id for j in await svc.fetch(["rlw"], count=10))
        await asyncio.sleep(0.02)
    assert len(claimed) == 4
    assert len(set(claimed)) == 4
    view = await a.rate_limits.get("partner-api")
    assert view["rate"]["current_count"] == 4


async def test_an_override_on_one_replica_binds_the_other(
    replicas: tuple[JobService, JobService],
) -> None:
    """An operator's override stored through one replica stops starts on the other."""
    a, b = replicas
    job = await push(a, queue="rlo", rate_limit={"key": "mail", "concurrency": 10})
    await a.rate_limits.override("mail", {"concurrency": 0})
    assert await b.fetch(["rlo"], count=1) == []
    assert (await b.get(job.id)).state is S.AVAILABLE
    await a.rate_limits.override("mail", {})
    got: list[str] = []
    end = time.monotonic() + 10
    while not got and time.monotonic() < end:
        got = [j.id for j in await b.fetch(["rlo"], count=1)]
        await asyncio.sleep(0.02)
    assert got == [job.id]


async def test_a_queue_level_limit_holds_across_replicas(
    replicas: tuple[JobService, JobService],
) -> None:
    """A limit set on one replica binds fetches on both, for jobs without a limit of their
    own, and an ack on the other replica frees the slot (rate-limiting §7.2)."""
    a, b = replicas
    await a.queue_limits.put("qlim", {"concurrency": 2})
    await b.queue_limits.refresh()  # what a fetch there does within a second
    ids = [(await push(a, queue="qlim")).id for _ in range(4)]
    first = await a.fetch(["qlim"], count=1, worker_id="wa")
    second = await b.fetch(["qlim"], count=4, worker_id="wb")
    assert [j.id for j in first + second] == ids[:2]
    assert await a.fetch(["qlim"], count=4, worker_id="wa") == []
    await b.ack(first[0].id, worker_id="wa")  # acked through the replica that did not claim it
    third = await _fetch_soon(a, "qlim")
    assert [j.id for j in third] == [ids[2]]
    view = await b.queue_limits.get("qlim")
    assert view["concurrency"] == {"limit": 2, "active": 2, "available": 0}
    await b.queue_limits.delete("qlim")
    await a.queue_limits.refresh()
    assert [j.id for j in await _fetch_soon(a, "qlim")] == [ids[3]]


async def _fetch_soon(svc: JobService, queue: str) -> list[Job]:
    """A fetch that finds jobs within 10 s: a hint a limit refused is set aside briefly."""
    deadline = time.monotonic() + 10
    while True:
        jobs = await svc.fetch([queue], count=4, worker_id="wa")
        if jobs or time.monotonic() > deadline:
            return jobs
        await asyncio.sleep(0.02)


async def test_a_late_release_of_an_attempt_spares_the_next_attempts_slots(
    replicas: tuple[JobService, JobService],
) -> None:
    """Attempt 1 of a job leaves ``active`` on ``a``; ``b`` claims attempt 2; ``a``'s release
    of attempt 1 then comes (late: it is repeated here). The slots attempt 2 holds, of the
    job's own key and of its queue's limit, stay taken, so neither key admits one too many."""
    a, b = replicas
    await a.queue_limits.put("qlate", {"concurrency": 1})
    await b.queue_limits.refresh()
    retry = {"max_attempts": 5, "initial_interval": "PT0.05S", "jitter": False}
    await push(a, queue="qlate", rate_limit={"key": "late-nats", "concurrency": 1}, retry=retry)
    (one,) = await a.fetch(["qlate"], count=1, worker_id="wa")
    left = await a.nack(one.id, JobError(code="boom", message="boom"), "wa")
    deadline = time.monotonic() + 10
    two: list[Job] = []
    while not two and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        await b.run_timers()
        two = await b.fetch(["qlate"], count=1, worker_id="wb")
    assert [(j.id, j.attempt) for j in two] == [(one.id, 2)]
    await a.rate_limits.left_active(one, left)  # attempt 1's release, after attempt 2's claim
    for key in ("late-nats", queue_limit_key("qlate")):
        state = await b.rate_limits.store.get_rate_limit(key)
        assert state is not None
        assert {k: v[0] for k, v in state.holders.items()} == {one.id: 2}, key
    await push(a, queue="qlate", rate_limit={"key": "late-nats", "concurrency": 1})
    assert await b.fetch(["qlate"], count=1, worker_id="wb2") == []
