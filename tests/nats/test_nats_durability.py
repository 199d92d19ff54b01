"""Regression tests of issue 11's findings, each on a real nats-server.

Each test names the finding it guards. Where a fault cannot be produced on loopback on demand
(an acknowledgement lost after the write landed), the test wraps this backend's own pipeline
so that the real write reaches the real server and only its acknowledgement is replaced by the
timeout a lost reply produces: the server, the store and the outcome are real.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats.errors
import pytest
from nats_support import eventually

from ojs_core.backend import EventFilter
from ojs_core.errors import BackendUnavailableError, PayloadTooLargeError, ValidationError
from ojs_core.ids import uuid7
from ojs_core.lifecycle import claim
from ojs_core.model import Job, RetryPolicy
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.testing import job_error
from ojs_core.timeutil import parse_ts
from ojs_nats import names
from ojs_nats.backend import NatsBackend
from ojs_nats.embedded import free_port
from ojs_nats.hints import hint_op
from ojs_nats.jetstream import Op, WrongSequenceError

BackendFactory = Callable[[], Awaitable[NatsBackend]]
S = JobState


async def ready_pending(backend: NatsBackend, queue: str = "default", priority: int = 0) -> int:
    """Hints of one level not yet acknowledged (waiting or delivered)."""
    info = await backend.js.consumer_info(names.READY_STREAM, names.ready_consumer(queue, priority))
    return info.num_pending + info.num_ack_pending


# -- 2: a hint whose record never landed is fenced, so a late record cannot strand a job ------


async def test_a_late_record_write_after_its_hint_was_dropped_cannot_land(
    svc: JobService,
) -> None:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    backend.claimer.fence_after_deliveries = 2
    backend.claimer.hint_backoff_s = 0.01
    await svc.enqueue({"type": "warm.up", "args": []})  # the level and its consumer exist
    assert len(await svc.fetch(["default"])) == 1
    job = Job(id=uuid7(), type="late.write", state=S.AVAILABLE, created_at=svc.now())
    # The hint is written, the record write is "in flight" (never sent yet).
    await backend.conn.commit([hint_op(job, 1)])

    async def hint_dropped() -> bool:
        assert await svc.fetch(["default"]) == []
        return await ready_pending(backend) == 0

    await eventually(hint_dropped, what="the hint without a record dropped")
    # The write lands late (nats-py replaying its buffer after a reconnect, say): it must fail,
    # or the job would be available with no hint, never fetched.
    with pytest.raises(WrongSequenceError):
        await backend.conn.commit([backend.store.job_op(job, 1, 0)])
    assert await svc.backend.get_job(job.id) is None
    # A client retrying the enqueue with the same id gets the job, and it is fetched.
    outcome = await svc.enqueue({"id": job.id, "type": "late.write", "args": []})
    assert outcome.job.id == job.id
    assert [j.id for j in await svc.fetch(["default"])] == [job.id]


async def test_a_hint_ahead_of_its_record_is_fenced_once_and_the_writer_retries(
    svc: JobService,
) -> None:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    backend.claimer.fence_after_deliveries = 2
    backend.claimer.hint_backoff_s = 0.01
    job = (await svc.enqueue({"type": "ahead.job", "args": []})).job
    assert [j.id for j in await svc.fetch(["default"], worker_id="w")] == [job.id]
    rec = await backend.store.read_job(job.id)
    assert rec is not None
    assert rec.epoch == 1
    # A hint for the job's second entry into available, whose record write never lands.
    await backend.conn.commit([hint_op(job, 2)])
    await eventually(
        lambda: _fetch_none_and_drained(svc, backend), what="the early hint fenced and dropped"
    )
    after = await backend.store.read_job(job.id)
    assert after is not None
    assert after.revision > rec.revision
    assert after.job.state is S.ACTIVE


async def _fetch_none_and_drained(svc: JobService, backend: NatsBackend) -> bool:
    assert await svc.fetch(["default"]) == []
    return await ready_pending(backend) == 0


# -- 3: internal fields cannot be set through the envelope -----------------------------------


async def test_workflow_pending_from_a_client_is_ignored_and_timers_still_arm(
    svc: JobService,
) -> None:
    job = (
        await svc.enqueue(
            {"type": "smuggle.it", "args": [], "workflow_pending": True, "visible_until": "x"}
        )
    ).job
    assert not job.workflow_pending
    assert "workflow_pending" not in job.extra
    assert "visible_until" not in job.extra
    stored = await svc.get(job.id)
    assert not stored.workflow_pending
    (active,) = await svc.fetch(["default"], worker_id="dead", visibility_ms=200)

    async def back() -> bool:
        await svc.run_timers()
        return (await svc.get(active.id)).state is not S.ACTIVE

    await eventually(back, what="the dead worker's job back from active after its visibility")


# -- 4: a heartbeat through a replica that caches an older attempt still extends --------------


async def test_heartbeat_through_a_replica_caching_the_previous_attempt_extends(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    job = (await a.enqueue({"type": "beat.me", "args": [], "retry": {"max_attempts": 5}})).job
    assert [j.id for j in await a.fetch(["default"], worker_id="w1", visibility_ms=200)] == [job.id]

    async def expired() -> bool:
        await b.run_timers()
        return (await b.get(job.id)).state is not S.ACTIVE

    await eventually(expired, what="the first attempt's visibility expired through B")

    async def refetched() -> bool:
        await b.run_timers()
        return [j.id for j in await b.fetch(["default"], worker_id="w2")] == [job.id]

    await eventually(refetched, what="the second attempt claimed by w2 through B")
    outcome = await a.heartbeat("w2", [job.id], 60_000)  # A still caches attempt 1 (w1)
    assert outcome.extended == [job.id]
    stored = await a.get(job.id)
    assert stored.worker_id == "w2"
    assert stored.state is S.ACTIVE


async def test_a_write_that_loses_leaves_the_timer_of_the_stored_version(
    replicas: tuple[JobService, JobService],
) -> None:
    """A losing write announced its deadline before its compare-and-swap failed; the job's one
    schedule must then hold the stored version's deadline, not the loser's (a later one would
    delay the retry, or the retention, until then)."""
    a, b = replicas
    retry = {"max_attempts": 5, "initial_interval": "PT30S", "jitter": False}
    job = (await a.enqueue({"type": "clobber", "args": [], "retry": retry})).job
    (active,) = await b.fetch(["default"], worker_id="w1", visibility_ms=60_000)
    assert active.id == job.id
    failed = await a.nack(job.id, job_error("boom"), "w1")  # A: retryable, next attempt +30 s
    assert failed.state is S.RETRYABLE
    assert failed.next_attempt_at is not None
    # B still caches the active version: its heartbeat announces +10 min, then loses.
    outcome = await b.heartbeat("w1", [job.id], 600_000)
    assert outcome.extended == []
    backend = b.backend
    assert isinstance(backend, NatsBackend)
    msg = await backend.js.get_msg(names.TIMER_STREAM, subject=names.timer_schedule_subject(job.id))
    assert parse_ts(msg.data.decode()) == failed.next_attempt_at


# -- 5: a claim whose acknowledgement was lost, but which landed, reaches the caller ----------


def lose_job_acks(backend: NatsBackend, *, send: bool) -> list[str]:
    """Make the pipeline report a timeout for every job-record write (sent or not)."""
    pipe = backend.conn.pipe
    original = pipe.publish_each
    lost: list[str] = []
    prefix = names.kv_subject(names.JOBS_BUCKET, names.JOB_PREFIX)

    async def publish_each(ops: Sequence[Op]) -> list[int | BaseException]:
        jobs = [i for i, op in enumerate(ops) if op[0].startswith(prefix)]
        if not jobs:
            return await original(ops)
        sent = await original(ops) if send else [0] * len(ops)
        out: list[int | BaseException] = list(sent)
        for i in jobs:
            lost.append(ops[i][0][len(prefix) :])
            out[i] = nats.errors.TimeoutError()
        pipe.publish_each = original  # type: ignore[method-assign]
        return out

    pipe.publish_each = publish_each  # type: ignore[method-assign]
    return lost


async def test_a_claim_whose_ack_was_lost_but_landed_is_delivered(svc: JobService) -> None:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    jobs = [(await svc.enqueue({"type": "lost.ack", "args": [i]})).job for i in range(3)]
    await svc.fetch(["default"])  # warm the cache path: the claims below go batched
    lost = lose_job_acks(backend, send=True)
    fetched = await svc.fetch(["default"], count=5, worker_id="w", visibility_ms=60_000)
    assert len(lost) == 2
    assert sorted(j.id for j in fetched) == sorted(j.id for j in jobs[1:])
    for job in fetched:
        assert (await svc.get(job.id)).state is S.ACTIVE


async def test_a_claim_whose_write_never_landed_is_fenced_and_claimed_again(
    svc: JobService,
) -> None:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    jobs = [(await svc.enqueue({"type": "lost.write", "args": [i]})).job for i in range(2)]
    lost = lose_job_acks(backend, send=False)
    fetched = await svc.fetch(["default"], count=5, worker_id="w")
    assert len(lost) == 2
    # Fenced (so the unsent writes could never land later), then claimed on the careful path.
    assert sorted(j.id for j in fetched) == sorted(j.id for j in jobs)
    for job in jobs:
        assert (await svc.get(job.id)).state is S.ACTIVE


async def test_an_update_whose_ack_was_lost_but_landed_succeeds(svc: JobService) -> None:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    job = (await svc.enqueue({"type": "lost.ack2", "args": []})).job
    (active,) = await svc.fetch(["default"], worker_id="w")
    conn = backend.conn
    original = conn.commit

    record = names.kv_subject(names.JOBS_BUCKET, names.job_key(job.id))

    async def commit_losing_reply(ops: Sequence[Op]) -> list[int]:
        seqs = await original(ops)
        if ops[0][0] != record:
            return seqs  # a timer or hint announced first: not the write under test
        conn.commit = original  # type: ignore[method-assign]
        raise nats.errors.TimeoutError

    conn.commit = commit_losing_reply  # type: ignore[method-assign]
    done = await svc.ack(active.id, {"ok": True}, "w")
    assert done.state is S.COMPLETED
    assert (await svc.get(job.id)).result == {"ok": True}


# -- 7: a record over max_payload is refused before writing, and the connection survives ------


async def test_a_record_over_max_payload_is_refused_and_the_connection_survives(
    svc: JobService,
) -> None:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    limit = backend.nc.max_payload
    # The envelope alone is just under the limit; the stored record (headers, system fields)
    # is over it. nats-server would close the connection on such a publish.
    big = "x" * (limit - 300)
    with pytest.raises(PayloadTooLargeError) as err:
        await svc.enqueue({"type": "big.job", "args": [big]})
    assert err.value.details["limit"] == limit
    assert backend.nc.is_connected
    job = (await svc.enqueue({"type": "small.job", "args": []})).job
    assert (await svc.get(job.id)).state is S.AVAILABLE
    # An ack whose result would outgrow the record is refused the same way; the job stays.
    (active,) = await svc.fetch(["default"], worker_id="w")
    with pytest.raises(PayloadTooLargeError):
        await svc.ack(active.id, big, "w")
    assert (await svc.get(active.id)).state is S.ACTIVE
    assert backend.nc.is_connected


# -- 8: durations are bounded; one failing timer never blocks the others -----------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"retry": {"max_interval": "P99999999D"}}, "retry.max_interval"),
        ({"options": {"rate_limit": {"limit": 1, "period": "P99999999D"}}}, "period"),
        ({"retry": {"initial_interval_ms": 10**30}}, "retry.initial_interval_ms"),
    ],
)
async def test_durations_beyond_the_bound_are_validation_errors(
    svc: JobService, body: dict[str, Any], path: str
) -> None:
    with pytest.raises(ValidationError) as err:
        await svc.enqueue({"type": "long.wait", "args": [], **body})
    assert err.value.path is not None
    assert err.value.path.endswith(path)


async def test_a_poison_timer_neither_blocks_the_others_nor_floods_the_log(
    svc: JobService, caplog: pytest.LogCaptureFixture
) -> None:
    now = svc.now()
    # Written straight to the backend (validation would refuse it): a retry interval whose
    # next attempt overflows the calendar, so its visibility expiry raises every pass.
    poison = claim(
        Job(
            id=uuid7(),
            type="poison.job",
            retry=RetryPolicy(max_attempts=5, initial_interval_ms=10**15, max_interval_ms=10**15),
            state=S.AVAILABLE,
            created_at=now,
        ),
        now,
        "w",
        1,
    )
    healthy = claim(Job(id=uuid7(), type="healthy.job", created_at=now), now, "w", 1)
    await svc.backend.insert_jobs([poison, healthy])
    caplog.set_level(logging.WARNING, logger="ojs.service")

    async def healthy_expired() -> bool:
        await svc.run_timers()
        return (await svc.get(healthy.id)).state is not S.ACTIVE

    await eventually(healthy_expired, what="the healthy job's timer applied")
    for _ in range(10):
        await svc.run_timers()
    poison_lines = [r for r in caplog.records if poison.id in r.getMessage()]
    assert len(poison_lines) == 1  # logged with its id, once per interval


# -- 9: heartbeat fields are validated; the workers list keeps working ------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("pid", "x"), ("hostname", 5), ("queues", "default"), ("concurrency", "10"), ("labels", [])],
)
async def test_heartbeat_fields_of_the_wrong_type_are_refused(
    svc: JobService, field: str, value: Any
) -> None:
    with pytest.raises(ValidationError) as err:
        await svc.heartbeat("w", [], None, {field: value})
    assert err.value.path == field
    await svc.heartbeat("w", [], None, {"pid": 12, "hostname": "h", "queues": ["default"]})
    (worker,) = await svc.backend.list_workers()
    assert worker.pid == 12


# -- 10: names NATS rejects as keys or subjects ------------------------------------------------


async def test_cron_names_that_are_no_kv_keys_still_work(svc: JobService) -> None:
    body = {"name": "nightly.", "expression": "0 3 * * *", "job_template": {"type": "c.job"}}
    _cron, created = await svc.register_cron(body)
    assert created
    assert [c.name for c in await svc.crons()] == ["nightly."]
    assert (await svc.get_cron("nightly.")).expression == "0 3 * * *"
    await svc.set_cron_enabled("nightly.", False)
    assert (await svc.delete_cron("nightly.")).name == "nightly."

    async def gone() -> bool:
        return await svc.crons() == []

    await eventually(gone, what="the cron entry gone from the listing")


@pytest.mark.parametrize("pattern", ["a*b", "job.>", "job..x", "Job.Completed", "*.x"])
async def test_event_filters_that_would_be_subject_syntax_are_refused(
    svc: JobService, pattern: str
) -> None:
    with pytest.raises(ValidationError):
        await svc.events(EventFilter(types=(pattern,)))


# -- 12: polling events creates no consumer ---------------------------------------------------


async def test_polling_events_creates_no_consumer(svc: JobService) -> None:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    job = (await svc.enqueue({"type": "poll.me", "args": []})).job

    async def stored() -> bool:  # published without waiting: stored a moment later
        return bool(await svc.events(EventFilter(job_id=job.id)))

    await eventually(stored, what="the enqueue event stored")
    api_before = (await backend.js.account_info()).api.total
    for _ in range(3):
        got = await svc.events(EventFilter(types=("job.*",), job_id=job.id))
        assert [e.type for e in got] == ["job.enqueued"]
    after = got[0].seq
    assert await svc.events(EventFilter(after=after, job_id=job.id)) == []
    # No JetStream API call at all (creating and deleting a consumer are two each).
    assert (await backend.js.account_info()).api.total == api_before + 1  # this very call


# -- 11: an unreachable NATS fails the start-up, with the reason and no secret ----------------


async def test_open_against_nothing_gives_up_with_the_reason_and_no_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    backend = NatsBackend(f"nats://user:s3cret@127.0.0.1:{port}", connect_wait_s=1.0)
    caplog.set_level(logging.DEBUG, logger="ojs.nats")
    with pytest.raises(BackendUnavailableError) as err:
        await asyncio.wait_for(backend.open(), 30)  # bounded: never hangs the caller
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message
    assert "ConnectionRefused" in message
    assert "s3cret" not in message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all("s3cret" not in r.getMessage() for r in caplog.records)


# -- 12: long-polls wake on arrivals from other processes, and idle ones barely poll ----------


async def test_a_long_poll_wakes_on_a_job_another_replica_enqueued(
    new_backend: BackendFactory,
) -> None:
    # No poll within the test: only the wake-up can end the wait early.
    waiting = JobService(await new_backend(), arrival_poll_s=120)
    producer = JobService(await new_backend())
    await producer.enqueue({"type": "warm.up", "args": [], "queue": "wake"})
    assert len(await waiting.fetch(["wake"])) == 1
    fetch = asyncio.ensure_future(waiting.fetch(["wake"], wait_ms=100_000))
    await eventually(lambda: _subscribed(waiting), what="the long-poll waiting")
    job = (await producer.enqueue({"type": "wake.up", "args": [], "queue": "wake"})).job
    got = await asyncio.wait_for(fetch, 30)
    assert [j.id for j in got] == [job.id]


async def _subscribed(svc: JobService) -> bool:
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    return backend.arrivals.waiting() > 0


async def test_an_idle_long_poll_makes_few_jetstream_requests(new_backend: BackendFactory) -> None:
    svc = JobService(await new_backend(), arrival_poll_s=0.5)
    for priority in (-5, 0, 5):
        await svc.enqueue({"type": "level.up", "args": [], "priority": priority})
    assert len(await svc.fetch(["default"], count=3)) == 3
    backend = svc.backend
    assert isinstance(backend, NatsBackend)
    before = (await backend.js.account_info()).api.total
    assert await svc.fetch(["default"], wait_ms=2000) == []
    calls = (await backend.js.account_info()).api.total - before - 1
    # A claim pass pulls each of the 3 priority levels once: one at the start and one per
    # backstop poll (4 in 2 s), not one every 50 ms (40 passes, 120 pulls).
    assert calls <= 3 * 6
