"""Acks written as a batch on NATS (``ojs_nats.batch_updates`` through ``ack_many``), on a real
nats-server: each item is decided as a write alone would decide it (refusals per item, a
stale cached version re-decided on the stored one, a job named twice acked once), the jobs
are stored with their results, and their lifecycle events are all published."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ojs_core import JobService
from ojs_core.backend import EventFilter
from ojs_core.errors import InvalidStateTransitionError, NotFoundError, OJSError
from ojs_core.model import Job
from ojs_core.states import JobState
from ojs_nats.backend import NatsBackend

BackendFactory = Callable[[], Awaitable[NatsBackend]]
UNKNOWN = "01900000-0000-7000-8000-000000000000"


async def active(svc: JobService, n: int, queue: str) -> list[str]:
    for i in range(n):
        await svc.enqueue({"type": "batch.t", "args": [i], "options": {"queue": queue}})
    jobs = await svc.fetch([queue], n, "w")
    assert len(jobs) == n
    return [j.id for j in jobs]


async def test_acks_of_a_batch_are_stored_with_their_results_and_events(
    new_backend: BackendFactory,
) -> None:
    backend = await new_backend()
    svc = JobService(backend)
    ids = await active(svc, 20, "bu1")
    alone: list[str] = []
    update = backend.writer.update

    async def counted(job_id: str, fn: Callable[[Job], Job]) -> tuple[Job, Job]:
        alone.append(job_id)
        return await update(job_id, fn)

    backend.writer.update = counted  # type: ignore[method-assign]
    outcomes = await svc.ack_many([(job_id, {"n": i}) for i, job_id in enumerate(ids)], "w")
    assert alone == []  # every ack went in the batch: claimed here, so known to this process
    assert all(isinstance(o, Job) and o.state is JobState.COMPLETED for o in outcomes)
    for i, job_id in enumerate(ids):
        stored = await svc.get(job_id)
        assert stored.state is JobState.COMPLETED
        assert stored.result == {"n": i}
    events = await svc.events(EventFilter(types=("job.completed",), limit=100))
    assert {e.subject for e in events} >= set(ids)


async def test_each_item_is_decided_as_a_write_alone(new_backend: BackendFactory) -> None:
    svc = JobService(await new_backend())
    first, second = await active(svc, 2, "bu2")
    waiting = (await svc.enqueue({"type": "batch.t", "args": [], "options": {"queue": "bu2"}})).job
    outcomes = await svc.ack_many(
        [(first, 1), (UNKNOWN, None), (waiting.id, None), (first, 2), (second, None)], "w"
    )
    assert isinstance(outcomes[0], Job)
    assert outcomes[0].result == 1
    assert isinstance(outcomes[1], NotFoundError)
    assert isinstance(outcomes[2], OJSError)
    assert isinstance(outcomes[3], InvalidStateTransitionError)  # acked once, by its first item
    assert isinstance(outcomes[4], Job)
    assert (await svc.get(waiting.id)).state is JobState.AVAILABLE
    assert (await svc.get(first)).result == 1


async def test_a_version_changed_by_another_replica_is_decided_on_the_stored_one(
    new_backend: BackendFactory,
) -> None:
    mine = JobService(await new_backend())
    other = JobService(await new_backend())
    ids = await active(mine, 3, "bu3")
    # Another replica writes the second job (a heartbeat extends its visibility): this
    # process's cached version of it is stale now, its compare-and-swap fails.
    beat = await other.heartbeat("w", [ids[1]], visibility_ms=600_000)
    assert beat.extended == [ids[1]]
    outcomes = await mine.ack_many([(job_id, "done") for job_id in ids], "w")
    assert all(isinstance(o, Job) for o in outcomes)
    for job_id in ids:
        stored = await other.get(job_id)
        assert stored.state is JobState.COMPLETED
        assert stored.result == "done"
