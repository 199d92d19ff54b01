"""JobService over NatsBackend: behaviour of this backend's own machinery.

Everything a backend must do is checked by the contract kit (``tests/contract/test_kit_nats.py``
runs it against NATS); what stays here concerns NATS internals: the timer consumer, the reset
announcements between replicas and the ready hints of the claim path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from nats.aio.msg import Msg
from nats_support import eventually
from tcp_proxy import TcpProxy

from ojs_core.ids import uuid7
from ojs_core.model import Job
from ojs_core.retention import Retention
from ojs_core.scheduler import Scheduler
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.testing import NO_JITTER, fetch_one, job_error, push
from ojs_core.timeutil import format_ts, parse_ts
from ojs_nats import NatsBackend, names, timers
from ojs_nats.provision import READY_IDLE_S
from ojs_nats.pulls import pull_now
from ojs_nats.timers import BATCH_SCHEDULE_MAX, fired_jobs, schedule_ops

S = JobState
BackendFactory = Callable[[], Awaitable[NatsBackend]]


async def test_a_stuck_timer_pull_does_not_hold_back_local_deadlines(svc: JobService) -> None:
    """A pull on the timer consumer whose answer never comes (its consumer deleted by a reset
    while the request was in flight) must not delay a retry that this replica knows is due."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    retry = {"max_attempts": 2, "initial_interval": "PT0.2S", **NO_JITTER}
    job = await push(svc, retry=retry)
    await fetch_one(svc, worker_id="w")
    failed = await svc.nack(job.id, job_error("first"), worker_id="w")
    assert failed.state is S.RETRYABLE
    never: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    backend.timers._pull = never  # type: ignore[assignment]
    backend.timers._pull_held = False  # a pull the pass waits for (not a held one)

    async def promoted() -> bool | None:
        # Bounded: before the fix this pass waited for the stuck pull forever.
        await asyncio.wait_for(svc.run_timers(), timeout=30)
        return True if (await svc.get(job.id)).state is S.AVAILABLE else None

    assert await eventually(promoted)
    assert not never.done()
    never.cancel()


async def test_only_another_replicas_reset_announcement_clears_local_state(
    svc: JobService,
) -> None:
    """A replica's own reset announcement may come back after the next requests: it must not
    drop what they cached (a near deadline here); another replica's announcement must."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    job = await push(svc, delay_ms=30_000)

    def held() -> bool:
        return any(job_id == job.id for _, job_id in backend.timers.soon)

    async def announce(payload: bytes) -> None:
        probe = await backend.nc.subscribe("ojs.control.reset")
        await backend.nc.publish("ojs.control.reset", payload)
        await probe.next_msg(timeout=5)  # delivered to every subscription of the connection
        await probe.unsubscribe()
        for _ in range(5):  # let the backend's subscription task run its callback
            await asyncio.sleep(0)

    assert held()
    await announce(backend.mirror.instance)
    assert held()
    await announce(b"another replica")
    assert not held()


async def test_a_stale_hint_never_hides_an_available_job(svc: JobService) -> None:
    # A writer that dies between publishing a ready hint and writing the record leaves a hint
    # for a job that does not exist. The next fetch must still find the job behind it.
    await push(svc)
    await svc.ack((await fetch_one(svc)).id)  # the queue and its consumer exist now
    backend: Any = svc.backend
    for _ in range(3):
        await backend.js.publish(names.ready_subject("default", 0), f"{uuid7()} 1".encode())
    job = await push(svc)
    assert [j.id for j in await svc.fetch(["default"], count=1)] == [job.id]


async def test_a_reaped_ready_consumer_is_recreated_and_delivers_what_waited(
    svc: JobService,
) -> None:
    """The server deletes an idle ready consumer (``inactive_threshold``); the hints stay in
    the stream, and the next fetch recreates the consumer and gets every waiting job."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    jobs = [
        (await svc.enqueue({"type": "reaped", "args": [i], "queue": "idle"})).job for i in range(3)
    ]
    consumer = names.ready_consumer("idle", 0)
    info = await backend.js.consumer_info(names.READY_STREAM, consumer)
    assert info.config.inactive_threshold == READY_IDLE_S
    await backend.js.delete_consumer(names.READY_STREAM, consumer)  # as the server reaps it
    fetched = await svc.fetch(["idle"], count=5)
    assert sorted(j.id for j in fetched) == sorted(j.id for j in jobs)
    await backend.js.consumer_info(names.READY_STREAM, consumer)  # there again


async def test_a_later_deadline_rides_on_the_armed_schedule_and_still_fires(
    svc: JobService,
) -> None:
    """A heartbeat that pushes the visibility deadline on writes no schedule: the armed one
    fires first and arms the later one, where the job then times out."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    scheduler = Scheduler(svc)
    scheduler.start()
    try:
        job = (await svc.enqueue({"type": "ride", "args": []})).job
        (active,) = await svc.fetch(["default"], worker_id="w", visibility_ms=2_000)
        await svc.heartbeat("w", [active.id], visibility_ms=4_000)
        pushed = await svc.get(job.id)
        assert active.visible_until is not None
        assert pushed.visible_until is not None
        assert pushed.visible_until > active.visible_until
        subject = names.timer_schedule_subject(job.id)
        armed = await backend.js.get_msg(names.TIMER_STREAM, subject=subject)
        assert parse_ts(armed.data.decode()) == active.visible_until  # no write at the beat

        async def timed_out() -> bool:
            return (await svc.get(job.id)).state is not S.ACTIVE

        await eventually(timed_out, within=15, what="the job timed out at the later deadline")
        assert datetime.now(UTC) >= pushed.visible_until
    finally:
        await scheduler.stop()


async def test_an_ack_replaces_the_jobs_own_visibility_schedule_with_its_retention(
    svc: JobService,
) -> None:
    """A job claimed alone has a visibility schedule of its own: its ack arms the retention
    on it at once, so the visibility schedule never fires (a fired timer would cost a
    delivery, a record read and a re-arm of the same deadline). The job is still removed
    when its retention ends."""
    svc.retention = Retention(completed=timedelta(seconds=3))
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    scheduler = Scheduler(svc)
    scheduler.start()
    try:
        job = (await svc.enqueue({"type": "own.ret", "args": []})).job
        (active,) = await svc.fetch(["default"], worker_id="w", visibility_ms=2_000)
        done = await svc.ack(active.id, None, "w")
        assert done.retain_until is not None
        await eventually(
            lambda: _armed_at(backend, job.id, done.retain_until), what="the retention armed"
        )

        async def removed() -> bool:
            return await backend.get_job(job.id) is None

        await eventually(removed, within=10, what="the job removed after its retention")
    finally:
        await scheduler.stop()


async def _armed_at(backend: NatsBackend, job_id: str, at: datetime | None) -> bool:
    """Whether the job's own schedule is armed for ``at`` (it is armed after the record, and
    its answer is not waited for)."""
    subject = names.timer_schedule_subject(job_id)
    armed = await backend.js.get_msg(names.TIMER_STREAM, subject=subject)
    return armed.data is not None and parse_ts(armed.data.decode()) == at


async def test_acks_in_a_batch_replace_their_own_visibility_schedules(svc: JobService) -> None:
    """The same through a batch of acks (``ack_many``, a worker's batched acknowledgements):
    the retention schedules go out with the batch's index entries."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    jobs = []
    for i in range(3):  # claimed one by one: each with its own visibility schedule
        await svc.enqueue({"type": "own.batch", "args": [i], "options": {"queue": "ownb"}})
        (active,) = await svc.fetch(["ownb"], worker_id="w", visibility_ms=60_000)
        jobs.append(active)
    done = await svc.ack_many([(j.id, None) for j in jobs], worker_id="w")
    for job in done:
        assert isinstance(job, Job)
        await eventually(
            lambda job=job: _armed_at(backend, job.id, job.retain_until),  # type: ignore[misc]
            what="the retention armed",
        )


async def _count_timer_pulls(backend: NatsBackend) -> tuple[list[bytes], Any]:
    """The pull requests sent to the timer consumer from now on (a core subscription on the
    same connection gets a copy of each: once a flush returns, its ``delivered`` counts all
    sent before), and the subscription to drop afterwards."""
    seen: list[bytes] = []

    async def heard(msg: Any) -> None:
        seen.append(msg.data)

    subject = names.consumer_next_subject(names.TIMER_STREAM, names.TIMER_CONSUMER)
    sub = await backend.nc.subscribe(subject, cb=heard)
    await backend.nc.flush()
    return seen, sub


async def test_an_idle_replica_holds_its_timer_pull_instead_of_polling(svc: JobService) -> None:
    """Once a pull found no fired timer, the next one is held by the server: many timer
    passes of an idle replica send one request, not one each."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    await svc.run_timers()  # the first pull (nothing has fired): the next one is held
    seen, sub = await _count_timer_pulls(backend)
    try:
        for _ in range(50):
            assert await svc.run_timers() == 0
            await asyncio.sleep(0)
        await backend.nc.flush()
        assert sub.delivered == 1  # before: one no_wait pull per pass
        await eventually(lambda: seen, what="the held pull")
        assert b'"expires"' in seen[0]
        assert b'"no_wait"' not in seen[0]
    finally:
        await sub.unsubscribe()


async def test_a_timer_another_replica_armed_fires_through_a_held_pull(
    replicas: tuple[JobService, JobService],
) -> None:
    """A job scheduled by one replica (whose own passes never run) becomes available through
    the other's passes, which were holding their pull when the server fired the timer; then
    that replica pulls in batches again."""
    writer, runner = replicas
    backend = runner.backend
    assert isinstance(backend, NatsBackend)
    await runner.run_timers()
    await runner.run_timers()
    assert backend.timers._pull_held
    job = await push(writer, delay_ms=500)

    async def available() -> bool | None:
        await runner.run_timers()
        return True if (await runner.get(job.id)).state is S.AVAILABLE else None

    assert await eventually(available, within=20, what="the scheduled job promoted")
    seen, sub = await _count_timer_pulls(backend)
    try:
        await runner.run_timers()
        await backend.nc.flush()
        await eventually(lambda: len(seen) >= 1, what="the next pull")
        assert b'"no_wait"' in seen[0]  # a timer fired: the next pull asks for a batch
    finally:
        await sub.unsubscribe()


async def test_a_claim_batch_shares_one_visibility_schedule_that_times_out_each_job(
    replicas: tuple[JobService, JobService],
) -> None:
    """A fetch of three jobs arms one schedule for their common visibility deadline (none of
    their own). The replica that claimed them never runs its timers (it died, say): the other
    replica's passes get the fired schedule and time out every job it names; the one job
    acked in time gets its own schedule for its retention instead."""
    worker, other = replicas
    backend = worker.backend
    assert isinstance(backend, NatsBackend)
    jobs = [
        (await worker.enqueue({"type": "shared.vt", "args": [i], "queue": "svt"})).job
        for i in range(3)
    ]
    scheduled = await _schedules(backend)
    claimed = await worker.fetch(["svt"], count=3, worker_id="w", visibility_ms=1_000)
    assert sorted(j.id for j in claimed) == sorted(j.id for j in jobs)
    added = await _schedules(backend) - scheduled
    assert len(added) == 1
    (shared,) = added
    assert shared.startswith(names.timer_schedule_subject("b-"))
    for job in jobs:
        assert names.timer_schedule_subject(job.id) not in added
    finished = await worker.ack(claimed[0].id, None, "w")
    assert finished.retain_until is not None

    async def timed_out() -> bool | None:
        await other.run_timers()
        states = [(await other.get(j.id)).state for j in claimed[1:]]
        return True if all(s is not S.ACTIVE for s in states) else None

    await eventually(timed_out, within=20, what="both unfinished jobs timed out")
    retention = names.timer_schedule_subject(claimed[0].id)
    assert retention in await _schedules(backend)

    async def acked() -> bool:
        info = await backend.js.consumer_info(names.TIMER_STREAM, names.TIMER_CONSUMER)
        return info.num_ack_pending == 0

    # The fired schedule is acked once all it named were settled.
    await eventually(acked, what="the shared schedule acknowledged")


def _shared(subjects: set[str]) -> set[str]:
    """The schedules among ``subjects`` that jobs share."""
    return {s for s in subjects if s.startswith(names.timer_schedule_subject("b-"))}


async def _schedules(backend: NatsBackend) -> set[str]:
    """The subjects of the schedules stored now."""
    info = await backend.js.stream_info(names.TIMER_STREAM, subjects_filter="ojs.tsched.>")
    return set((info.state.subjects or {}).keys())


def test_deadlines_share_a_schedule_per_deadline_and_a_lone_job_keeps_its_own() -> None:
    now = datetime.now(UTC)
    later = now + timedelta(seconds=5)
    many = [(f"j{i}", now) for i in range(BATCH_SCHEDULE_MAX + 2)]
    ops = schedule_ops([*many, ("alone", later)])
    shared = [op for op in ops if op[0].startswith(names.timer_schedule_subject("b-"))]
    assert len(shared) == 2  # the batch split at the bound
    assert [op[0] for op in ops if op not in shared] == [names.timer_schedule_subject("alone")]
    named: list[str] = []
    for subject, data, headers in shared:
        fire = names.timer_fire_subject(subject.rsplit(".", 1)[1])
        assert headers[names.SCHEDULE_TARGET] == fire
        named += fired_jobs(Msg(None, subject=fire, data=data))  # type: ignore[arg-type]
    assert named == [job_id for job_id, _ in many]
    own = Msg(None, subject=names.timer_fire_subject("alone"), data=b"2026-01-01T00:00:00Z")  # type: ignore[arg-type]
    assert fired_jobs(own) == ["alone"]


async def test_retention_deadlines_a_fired_batch_arms_share_a_schedule(
    replicas: tuple[JobService, JobService],
) -> None:
    """Jobs of one claim batch acked before their shared visibility deadline: when it fires,
    their retention deadlines (an hour away, milliseconds apart) get one schedule between
    them, not one each."""
    worker, other = replicas
    worker.retention = Retention(completed=timedelta(hours=1))
    backend = worker.backend
    assert isinstance(backend, NatsBackend)
    for i in range(3):
        await worker.enqueue({"type": "shared.ret", "args": [i], "queue": "sret"})
    # Far enough for the acks to ride on it (a deadline under a second away is not trusted
    # to fire first: the ack would arm each job's retention itself).
    claimed = await worker.fetch(["sret"], count=3, worker_id="w", visibility_ms=5_000)
    assert len(claimed) == 3
    (visibility,) = _shared(await _schedules(backend))
    for job in claimed:
        await worker.ack(job.id, None, "w")

    async def rearmed() -> set[str] | None:
        await other.run_timers()
        shared = _shared(await _schedules(backend)) - {visibility}
        return shared or None

    shared = await eventually(rearmed, within=30, what="the retention deadlines re-armed")
    assert len(shared) == 1
    own = {names.timer_schedule_subject(j.id) for j in claimed}
    assert not own & await _schedules(backend)
    for job in claimed:
        assert (await other.get(job.id)).state is S.COMPLETED


async def test_a_claimed_job_that_may_have_a_pending_schedule_keeps_its_own(
    svc: JobService,
) -> None:
    """Scheduled jobs promoted by this replica's heap, before the server fired their
    schedules: claimed together, each gets its own visibility schedule, which overwrites the
    pending one (a shared one would leave it to fire and arm the deadline again)."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    at = format_ts(datetime.now(UTC) + timedelta(milliseconds=300))
    jobs = [
        (
            await svc.enqueue(
                {"type": "own.vt", "args": [i], "options": {"queue": "ownvt", "scheduled_at": at}}
            )
        ).job
        for i in range(3)
    ]

    async def promoted() -> bool | None:
        await svc.run_timers()
        states = [(await svc.get(j.id)).state for j in jobs]
        return True if all(s is S.AVAILABLE for s in states) else None

    await eventually(promoted, what="the scheduled jobs promoted")
    before = await _schedules(backend)
    claimed = await svc.fetch(["ownvt"], count=3, worker_id="w", visibility_ms=60_000)
    assert len(claimed) == 3
    assert not _shared(await _schedules(backend) - before)
    for job in claimed:
        armed = await backend.js.get_msg(
            names.TIMER_STREAM, subject=names.timer_schedule_subject(job.id)
        )
        assert job.visible_until is not None
        assert parse_ts(armed.data.decode()) == job.visible_until


async def test_a_held_timer_pull_is_asked_again_after_a_reconnect(
    new_backend: BackendFactory, nats_url: str
) -> None:
    """The server forgets a held pull whose connection dropped: after reconnecting, the
    replica asks again at once instead of waiting out the old pull (35 s), so a timer another
    replica armed still fires through it."""
    writer = JobService(await new_backend())  # first: it resets the server
    port = int(nats_url.rsplit(":", 1)[1])
    async with TcpProxy("127.0.0.1", port) as proxy:
        backend = NatsBackend(proxy.url)
        await backend.open()
        try:
            svc = JobService(backend)
            await svc.run_timers()
            await svc.run_timers()
            assert backend.timers._pull_held
            reconnects = backend.nc.stats["reconnects"]
            assert proxy.cut() >= 1

            def reconnected() -> bool:
                return backend.nc.is_connected and backend.nc.stats["reconnects"] > reconnects

            await eventually(reconnected, what="the replica reconnected")
            job = await push(writer, delay_ms=300)  # the writer's own passes never run

            async def available() -> bool | None:
                await svc.run_timers()
                return True if (await svc.get(job.id)).state is S.AVAILABLE else None

            await eventually(available, within=10, what="the timer fired through the replica")
        finally:
            await backend.close()


async def test_a_requeued_job_claimed_in_a_batch_keeps_its_own_schedule(svc: JobService) -> None:
    """A requeued job's attempt count is back where it was, but the visibility schedule of its
    earlier claim may still be pending: claimed again beside fresh jobs, it gets its own."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    first = (await svc.enqueue({"type": "rq.vt", "args": [0], "queue": "rqvt"})).job
    (claimed,) = await svc.fetch(["rqvt"], count=1, worker_id="w", visibility_ms=60_000)
    requeued = await svc.nack(claimed.id, job_error("back"), "w", requeue=True)
    assert requeued.attempt == 0
    fresh = [
        (await svc.enqueue({"type": "rq.vt", "args": [i], "queue": "rqvt"})).job for i in (1, 2)
    ]
    before = await _schedules(backend)
    again = await svc.fetch(["rqvt"], count=3, worker_id="w", visibility_ms=60_000)
    assert sorted(j.id for j in again) == sorted([first.id, *(j.id for j in fresh)])
    added = await _schedules(backend) - before
    assert len(_shared(added)) == 1  # the fresh two
    armed = await backend.js.get_msg(
        names.TIMER_STREAM, subject=names.timer_schedule_subject(first.id)
    )
    (mine,) = [j for j in again if j.id == first.id]
    assert mine.visible_until is not None
    assert parse_ts(armed.data.decode()) == mine.visible_until


async def test_a_held_pull_that_expires_is_held_again(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends a held pull with 408 when it expires; the next pass holds a new one
    (over the same reply subscription)."""
    monkeypatch.setattr(timers, "TIMER_HOLD_S", 0.3)
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    await svc.run_timers()
    await svc.run_timers()
    held = backend.timers._pull
    assert held is not None
    assert backend.timers._pull_held
    await eventually(held.done, what="the held pull expired")
    assert held.result() == []
    assert await svc.run_timers() == 0  # takes the empty answer
    assert await svc.run_timers() == 0  # asks again, held
    again = backend.timers._pull
    assert again is not None
    assert again is not held
    assert backend.timers._pull_held


async def _scheduled_jobs(svc: JobService, queue: str, n: int, at: datetime) -> list[str]:
    """``n`` jobs scheduled ``at`` (and 100 ms apart after it): each with its own schedule."""
    return [
        (
            await svc.enqueue(
                {
                    "type": "fired.by.hand",
                    "args": [i],
                    "options": {
                        "queue": queue,
                        "scheduled_at": format_ts(at + timedelta(milliseconds=100 * i)),
                    },
                }
            )
        ).job.id
        for i in range(n)
    ]


async def _fire(backend: NatsBackend, name: str, job_ids: list[str]) -> None:
    """A shared schedule naming ``job_ids`` fires (as the server's scheduler fires one)."""
    payload = f"{format_ts(datetime.now(UTC))}\n{' '.join(job_ids)}".encode()
    await backend.js.publish(names.timer_fire_subject(name), payload)


async def _last_seq(backend: NatsBackend, subject: str) -> int:
    return (await backend.js.get_last_msg(names.TIMER_STREAM, subject)).seq or 0


async def test_a_redelivered_shared_timer_rearms_each_jobs_own_schedule(svc: JobService) -> None:
    """A shared timer comes back (an update of one of its jobs failed): the far deadlines of
    its jobs are armed each on the job's own schedule, which replaces the one before, not on
    another shared one (they would pile up at every redelivery)."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    jobs = await _scheduled_jobs(svc, "redeliv", 2, datetime.now(UTC) + timedelta(hours=2))
    own = [names.timer_schedule_subject(j) for j in jobs]
    seqs = [await _last_seq(backend, s) for s in own]
    shared_before = _shared(await _schedules(backend))
    await _fire(backend, "b-by-hand", jobs)
    delivered = await pull_now(backend.conn.nc, names.TIMER_STREAM, names.TIMER_CONSUMER, 10)
    assert [fired_jobs(m) for m in delivered] == [jobs]
    await delivered[0].nak()  # handed back: delivered a second time next

    async def rearmed() -> bool:
        await svc.run_timers()
        return all([await _last_seq(backend, s) > seq for s, seq in zip(own, seqs, strict=True)])

    await eventually(rearmed, what="each job's own schedule armed again")
    assert _shared(await _schedules(backend)) == shared_before


async def test_a_timer_pass_hands_back_shared_timers_beyond_its_limit(svc: JobService) -> None:
    """A pass takes at most ``limit`` due jobs: a shared timer it has no room for goes back
    at once (not after the ack wait) and comes with the next pass."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    at = datetime.now(UTC) + timedelta(hours=2)
    a, b, c = await _scheduled_jobs(svc, "limit", 3, at)
    await _fire(backend, "b-first", [a, b])
    await _fire(backend, "b-second", [c])
    later = at + timedelta(minutes=1)  # every deadline due
    assert await backend.timers.due_jobs(later, 2) == [a, b]

    async def handed_back() -> bool:
        return c in await backend.timers.due_jobs(later, 10)

    await eventually(handed_back, within=5, what="the second shared timer in the next pass")


async def test_a_job_acked_in_time_costs_no_timer_pass_when_its_visibility_ends(
    svc: JobService,
) -> None:
    """The local deadline of a claim is stale once the job is acked: the timer pass at that
    moment drops it without handing the job to the service (which read its record to find
    nothing due); one still active is handed over."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    for i in range(2):
        await svc.enqueue({"type": "vt.local", "args": [i], "options": {"queue": "vtl"}})
    acked, kept = await svc.fetch(["vtl"], count=2, worker_id="w", visibility_ms=30_000)
    await svc.ack(acked.id, None, "w")
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert await backend.timers.due_jobs(later, 10) == [kept.id]


async def test_a_refused_ack_in_a_batch_rearms_the_stored_versions_schedule(
    replicas: tuple[JobService, JobService],
) -> None:
    """A batch of acks publishes a job's retention schedule before its record; when the
    record write is refused (another worker holds the job now, with its own deadline), the
    job's schedule is armed again for the stored version: left as the batch wrote it, the
    new attempt's visibility timeout would never fire."""
    first, second = replicas
    claimed = []
    for i in range(2):  # claimed one by one: each with its own visibility schedule
        await first.enqueue({"type": "refused.ack", "args": [i], "queue": "rack"})
        claimed += await first.fetch(["rack"], worker_id="w1", visibility_ms=60_000)
    active, fine = claimed
    job = active
    later = datetime.now(UTC) + timedelta(seconds=30)  # earlier than the first claim's: armed

    def taken_over(j: Job) -> Job:
        return attrs.evolve(j, worker_id="w2", visible_until=later)

    other = second.backend
    assert isinstance(other, NatsBackend)
    await other.update_job(job.id, taken_over)
    refused, acked = await first.ack_many([(active.id, None), (fine.id, None)], worker_id="w1")
    assert not isinstance(refused, Job)
    assert isinstance(acked, Job)
    backend = first.backend
    assert isinstance(backend, NatsBackend)
    subject = names.timer_schedule_subject(job.id)
    armed = await backend.js.get_msg(names.TIMER_STREAM, subject=subject)
    assert parse_ts(armed.data.decode()) == later
    stored = await first.get(job.id)
    assert (stored.state, stored.worker_id) == (S.ACTIVE, "w2")


async def test_an_ack_whose_record_write_fails_leaves_the_visibility_schedule(
    svc: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retention replaces the job's own visibility schedule only once the ack's record
    landed: a record write that fails (a crash at that point) leaves the job active with its
    visibility schedule, which then times it out."""
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    await svc.enqueue({"type": "crash.ack", "args": [], "options": {"queue": "cack"}})
    (active,) = await svc.fetch(["cack"], worker_id="w", visibility_ms=60_000)
    commit = backend.conn.commit
    records = names.kv_subject(names.JOBS_BUCKET, "")

    async def failing(ops: Any) -> Any:
        if any(op[0].startswith(records) for op in ops):
            raise RuntimeError("the process died here")
        return await commit(ops)

    monkeypatch.setattr(backend.conn, "commit", failing)
    with pytest.raises(RuntimeError):
        await svc.ack(active.id, None, "w")
    subject = names.timer_schedule_subject(active.id)
    armed = await backend.js.get_msg(names.TIMER_STREAM, subject=subject)
    assert parse_ts(armed.data.decode()) == active.visible_until
