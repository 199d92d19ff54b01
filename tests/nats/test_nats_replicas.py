"""Two OJS replicas sharing one NATS: two JobServices (and two ASGI apps) over two connections.

Each replica has its own NatsBackend connection, caches and watcher, exactly as two ojs-server
processes would; jobs are enqueued on one, fetched on either and finished on the other.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any, Protocol

import httpx
import pytest
from nats_support import drain, events_of, eventually, fail, fetch_one, push, utcnow

from ojs_core.errors import ConflictError, DuplicateJobError, InvalidStateTransitionError
from ojs_core.ids import deterministic_uuid7
from ojs_core.model import Job
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.timeutil import format_ts, parse_ts
from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_nats import names
from ojs_nats.backend import NatsBackend

S = JobState
V1 = "/ojs/v1"
LOAD_JOBS = 2000
LOAD_BATCH = 100
LOAD_WORKERS = 8


class Replica(Protocol):
    """What the load test needs from a replica, over JobService or over HTTP."""

    backend: NatsBackend

    async def enqueue_batch(self, bodies: list[dict[str, Any]]) -> list[str]: ...

    async def fetch(self, queues: list[str], count: int, worker_id: str) -> list[str]: ...

    async def ack(self, job_id: str, worker_id: str) -> None: ...


class ServiceReplica:
    def __init__(self, svc: JobService) -> None:
        self.svc = svc
        backend = svc.backend
        assert isinstance(backend, NatsBackend)
        self.backend = backend

    async def enqueue_batch(self, bodies: list[dict[str, Any]]) -> list[str]:
        return [o.job.id for o in await self.svc.enqueue_batch(bodies)]

    async def fetch(self, queues: list[str], count: int, worker_id: str) -> list[str]:
        return [j.id for j in await self.svc.fetch(queues, count, worker_id)]

    async def ack(self, job_id: str, worker_id: str) -> None:
        await self.svc.ack(job_id, {"by": worker_id}, worker_id)


class HttpReplica:
    def __init__(self, client: httpx.AsyncClient, backend: NatsBackend) -> None:
        self.client = client
        self.backend = backend

    async def enqueue_batch(self, bodies: list[dict[str, Any]]) -> list[str]:
        response = await self.client.post(f"{V1}/jobs/batch", json={"jobs": bodies})
        assert response.status_code == 201, response.text
        return [j["id"] for j in response.json()["jobs"]]

    async def fetch(self, queues: list[str], count: int, worker_id: str) -> list[str]:
        response = await self.client.post(
            f"{V1}/workers/fetch", json={"queues": queues, "count": count, "worker_id": worker_id}
        )
        assert response.status_code == 200, response.text
        return [j["id"] for j in response.json()["jobs"]]

    async def ack(self, job_id: str, worker_id: str) -> None:
        response = await self.client.post(
            f"{V1}/workers/ack",
            json={"job_id": job_id, "worker_id": worker_id, "result": {"by": worker_id}},
        )
        assert response.status_code == 200, response.text


@pytest.fixture
async def http_replicas(nats_url: str) -> AsyncIterator[tuple[HttpReplica, HttpReplica]]:
    """Two ASGI apps, each over its own NatsBackend; the lifespans open and close them."""
    async with AsyncExitStack() as stack:
        out: list[HttpReplica] = []
        for n in range(2):
            backend = NatsBackend(nats_url)
            app = create_app(backend, HttpSettings(run_scheduler=False))
            await stack.enter_async_context(app.router.lifespan_context(app))
            if n == 0:
                await backend.reset()  # before the second replica opens its connection
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url=f"http://replica-{n}")
            )
            out.append(HttpReplica(client, backend))
        yield out[0], out[1]


async def run_load(replicas: Sequence[Replica]) -> None:
    """Enqueue through both replicas, fetch on one and ack on the other, from 8 workers."""
    bodies = [
        {"type": "load.job", "args": [i], "options": {"queue": "load"}} for i in range(LOAD_JOBS)
    ]
    batches = [bodies[i : i + LOAD_BATCH] for i in range(0, LOAD_JOBS, LOAD_BATCH)]
    results = await asyncio.gather(
        *(replicas[n % 2].enqueue_batch(batch) for n, batch in enumerate(batches))
    )
    enqueued = [jid for ids in results for jid in ids]
    assert len(set(enqueued)) == LOAD_JOBS

    fetched: list[str] = []
    by_worker: dict[str, str] = {}
    errors: list[BaseException] = []
    done: set[str] = set()
    rng = random.Random(2000)

    async def worker(k: int) -> None:
        wid = f"worker-{k}"
        deadline = time.monotonic() + 60
        turn = 0
        while len(done) < LOAD_JOBS and not errors:
            assert time.monotonic() < deadline, f"{wid}: load not finished within 60 s"
            fetch_on, ack_on = replicas[(k + turn) % 2], replicas[(k + turn + 1) % 2]
            turn += 1
            ids = await fetch_on.fetch(["load"], rng.randint(10, 50), wid)
            if not ids:
                await asyncio.sleep(0.02)  # others hold the rest; poll until all are done
                continue
            fetched.extend(ids)
            by_worker.update(dict.fromkeys(ids, wid))
            acks = await asyncio.gather(
                *(ack_on.ack(jid, wid) for jid in ids), return_exceptions=True
            )
            errors.extend(a for a in acks if isinstance(a, BaseException))
            done.update(ids)

    await asyncio.gather(*(worker(k) for k in range(LOAD_WORKERS)))
    assert errors == []
    duplicates = sorted(jid for jid, n in Counter(fetched).items() if n > 1)
    assert duplicates == [], f"{len(duplicates)} jobs were handed out twice"
    missing = set(enqueued) - set(fetched)
    assert not missing, f"{len(missing)} jobs were never handed out"
    assert set(fetched) == set(enqueued)
    assert len({by_worker[j] for j in enqueued}) == LOAD_WORKERS  # everybody got work

    jobs = await replicas[0].backend.get_jobs(enqueued)
    states = Counter(j.state if j else None for j in jobs)
    assert states == {S.COMPLETED: LOAD_JOBS}
    assert all(j is not None and j.result == {"by": by_worker[j.id]} for j in jobs)
    for replica in replicas:
        assert await replica.fetch(["load"], 50, "late") == []


@pytest.mark.slow
async def test_2000_jobs_through_two_service_replicas(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    await run_load([ServiceReplica(a), ServiceReplica(b)])

    async def stats_settled() -> bool:
        counts = (await b.queue_stats("load")).counts
        return counts[S.COMPLETED] == LOAD_JOBS and counts[S.ACTIVE] == counts[S.AVAILABLE] == 0

    await eventually(stats_settled)


@pytest.mark.slow
async def test_2000_jobs_through_two_http_replicas(
    http_replicas: tuple[HttpReplica, HttpReplica],
) -> None:
    await run_load(http_replicas)


# -- one job, two replicas ------------------------------------------------------------------------


async def test_fetched_on_a_heartbeated_and_nacked_on_b(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    retry = {"max_attempts": 2, "initial_interval": "PT0.2S", "jitter": False}
    job = await push(b, retry=retry)
    claimed = await fetch_one(a, worker_id="w", visibility_ms=1000)
    assert claimed.id == job.id

    beat = await b.heartbeat("w", [job.id], visibility_ms=60_000)
    assert beat.extended == [job.id]
    extended = await a.get(job.id)
    assert extended.visible_until is not None
    assert claimed.visible_until is not None
    assert extended.visible_until > claimed.visible_until + timedelta(seconds=30)
    assert (await a.backend.get_worker("w")) is not None

    failed = await b.nack(job.id, fail("from b"), worker_id="w")
    assert failed.state is S.RETRYABLE

    async def retried() -> list[Job]:
        await asyncio.gather(a.run_timers(), b.run_timers())
        return await a.fetch(["default"], worker_id="w2")

    again = await eventually(retried)
    assert [j.id for j in again] == [job.id]
    assert again[0].attempt == 2
    done = await b.ack(job.id, "ok", worker_id="w2")
    assert done.state is S.COMPLETED
    assert (await a.get(job.id)).errors[0].message == "from b"


async def test_cancel_on_b_makes_ack_on_a_a_conflict(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    job = await push(a)
    await fetch_one(a, worker_id="w")
    before, after = await b.cancel(job.id)
    assert before.state is S.ACTIVE
    assert after.state is S.CANCELLED
    with pytest.raises(InvalidStateTransitionError) as exc:
        await a.ack(job.id, worker_id="w")
    assert isinstance(exc.value, ConflictError)
    assert exc.value.status == 409
    assert exc.value.details["current_state"] == "cancelled"
    assert (await a.get(job.id)).state is S.CANCELLED


async def test_http_cancel_on_b_makes_ack_on_a_409(
    http_replicas: tuple[HttpReplica, HttpReplica],
) -> None:
    a, b = http_replicas
    [job_id] = await b.enqueue_batch([{"type": "x.y", "args": []}])
    assert await a.fetch(["default"], 1, "w") == [job_id]
    cancelled = await b.client.delete(f"{V1}/jobs/{job_id}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["job"]["state"] == "cancelled"
    late = await a.client.post(f"{V1}/workers/ack", json={"job_id": job_id, "worker_id": "w"})
    assert late.status_code == 409, late.text
    assert late.json()["error"]["code"] == "conflict"
    got = await a.client.get(f"{V1}/jobs/{job_id}")
    assert got.json()["job"]["state"] == "cancelled"


async def test_pause_on_a_reaches_b(replicas: tuple[JobService, JobService]) -> None:
    a, b = replicas
    first = await push(b, queue="shared")
    assert (await fetch_one(b, "shared")).id == first.id  # b has the queue in its cache now
    job = await push(a, queue="shared")
    await a.set_paused("shared", True)

    async def b_sees_pause() -> bool:
        return (await b.queue_stats("shared")).paused

    await eventually(b_sees_pause)
    assert await b.fetch(["shared"]) == []
    await a.set_paused("shared", False)

    async def b_fetches() -> list[Job]:
        return await b.fetch(["shared"])

    assert [j.id for j in await eventually(b_fetches)] == [job.id]


async def test_concurrent_unique_enqueues_across_replicas_store_one(
    replicas: tuple[JobService, JobService],
) -> None:
    body = {"type": "only.one", "args": [], "options": {"unique": {"keys": ["type"]}}}
    results = await asyncio.gather(
        *(replicas[n % 2].enqueue(body) for n in range(12)), return_exceptions=True
    )
    stored = [r for r in results if not isinstance(r, BaseException)]
    assert len(stored) == 1, results
    assert all(isinstance(r, DuplicateJobError) for r in results if r not in stored)
    got = await drain(replicas[1], ["default"], 1)
    assert [j.id for j in got] == [stored[0].job.id]


async def test_timers_fire_once_across_replicas(replicas: tuple[JobService, JobService]) -> None:
    a, b = replicas
    jobs = [await push(replicas[n % 2], args=[n], delay_ms=300) for n in range(20)]
    promoted = 0

    async def all_available() -> bool:
        nonlocal promoted
        promoted += sum(await asyncio.gather(a.run_timers(), b.run_timers()))
        states = {j.state for j in await a.backend.get_jobs([j.id for j in jobs]) if j}
        return states == {S.AVAILABLE}

    await eventually(all_available)
    assert promoted == len(jobs)
    got = await drain(b, ["default"], len(jobs))
    assert sorted(j.id for j in got) == sorted(j.id for j in jobs)


# -- cron -----------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_every_second_cron_on_two_replicas_fires_each_tick_once(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    cron, created = await a.register_cron(
        {
            "name": "every-second",
            "expression": "* * * * * *",
            "overlap_policy": "allow",
            "job_template": {"type": "cron.tick", "args": [], "options": {"queue": "cron"}},
        }
    )
    assert created
    assert cron.next_run_at is not None
    started = utcnow()
    fired: list[int] = []

    async def three_seconds_of_ticks() -> bool:
        fired.extend(await asyncio.gather(a.run_crons(), b.run_crons()))
        return utcnow() - started >= timedelta(seconds=3.2)

    await eventually(three_seconds_of_ticks, within=10)
    entry = await b.get_cron("every-second")
    assert entry.run_count >= 3
    jobs = await drain(a, ["cron"], entry.run_count)

    ids = [j.id for j in jobs]
    ticks = sorted(parse_ts(j.meta["cron_triggered_at"]) for j in jobs)
    assert len(set(ids)) == len(ids) == entry.run_count == sum(fired)
    assert len(set(ticks)) == len(ticks)  # exactly one job per tick
    assert ticks[0] == cron.next_run_at
    # Whole seconds apart (a tick missed while the machine stalled is skipped, never doubled).
    gaps = [(t2 - t1).total_seconds() for t1, t2 in itertools.pairwise(ticks)]
    assert all(g >= 1 and g == int(g) for g in gaps), gaps
    assert entry.last_run_at == ticks[-1]
    for job in jobs:
        tick = parse_ts(job.meta["cron_triggered_at"])
        assert job.id == deterministic_uuid7(
            int(tick.timestamp() * 1000), "every-second", format_ts(tick)
        )
        assert job.meta["cron_name"] == "every-second"
    triggered = await events_of(a, "cron.triggered")
    assert sorted(e.data["job_id"] for e in triggered) == sorted(ids)


async def test_cron_entries_reach_every_replica_and_a_bad_entry_is_skipped(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    backend_b = b.backend
    assert isinstance(backend_b, NatsBackend)
    # An entry no version of this server could read (written by hand, or by a future one).
    await backend_b.store.kv[names.CRON_BUCKET].put("broken", b"{not json")
    await a.register_cron(
        {
            "name": "nightly",
            "expression": "0 3 * * *",
            "job_template": {"type": "cron.nightly", "args": []},
        }
    )

    async def b_sees_it() -> bool:
        return [c.name for c in await backend_b.list_crons()] == ["nightly"]

    await eventually(b_sees_it, within=5)
    await a.delete_cron("nightly")

    async def b_sees_it_gone() -> bool:
        return await backend_b.list_crons() == []

    await eventually(b_sees_it_gone, within=5)
