"""The in-process Worker over a MemoryBackend.

Heartbeats, grace periods and retry back-off run on a ManualClock that the tests advance; the
handler timeout is the only real-time limit (a few tens of milliseconds). Every wait is an
eventually-loop on an observable condition.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from embed_support import Harness, eventually

from ojs_core import JobContext, Worker
from ojs_core.model import Job
from ojs_core.service import JobService
from ojs_core.states import JobState

S = JobState
NO_RETRY = {"max_attempts": 1}


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


def blocking_handler(started: list[str], release: asyncio.Event) -> Any:
    """A handler that records its job id and waits for ``release``."""

    async def handle(ctx: JobContext) -> str:
        started.append(ctx.job_id)
        await release.wait()
        return f"done {ctx.args}"

    return handle


# -- results, failures, retries -----------------------------------------------------------


async def test_result_is_stored_on_ack(harness: Harness) -> None:
    h = harness
    worker = h.worker()
    seen: list[tuple[str, int, str]] = []

    @worker.handler("math.add")
    async def add(ctx: JobContext) -> dict[str, int]:
        seen.append((ctx.type, ctx.attempt, ctx.worker_id))
        return {"sum": sum(ctx.args)}

    job = await h.client.enqueue("math.add", [2, 3])
    assert job is not None
    worker.start()
    done = await h.wait_state(job.id, S.COMPLETED)
    assert done.result == {"sum": 5}
    assert done.attempt == 1
    assert seen == [("math.add", 1, worker.worker_id)]
    await worker.stop()
    assert worker.state == "stopped"


async def test_handler_failing_twice_then_succeeding_is_retried(harness: Harness) -> None:
    h = harness
    worker = h.worker()
    attempts: list[int] = []

    @worker.handler("flaky.call")
    async def flaky(ctx: JobContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"upstream down (attempt {ctx.attempt})")
        return "finally"

    job = await h.client.enqueue(
        "flaky.call", retry={"max_attempts": 3, "initial_interval_ms": 1000, "jitter": False}
    )
    assert job is not None
    worker.start()
    done = await h.wait_state(job.id, S.COMPLETED, tick=1)
    assert attempts == [1, 2, 3]
    assert done.result == "finally"
    assert done.attempt == 3
    assert [(e.code, e.type, e.attempt) for e in done.errors] == [
        ("handler_error", "ConnectionError", 1),
        ("handler_error", "ConnectionError", 2),
    ]
    first = done.errors[0]
    assert first.message == "upstream down (attempt 1)"
    assert first.details == {"error_class": "builtins.ConnectionError"}
    assert first.backtrace is not None
    assert first.backtrace[-1] == "ConnectionError: upstream down (attempt 1)"
    assert any("in flaky" in line for line in first.backtrace)


async def test_exhausted_retries_discard_and_non_retryable_errors_stop_early(
    harness: Harness,
) -> None:
    h = harness
    worker = h.worker()

    class PaymentDeclined(Exception):
        retryable = False

    @worker.handler("pay.charge")
    async def charge(ctx: JobContext) -> None:
        raise PaymentDeclined("card declined")

    @worker.handler("pay.refund")
    async def refund(ctx: JobContext) -> None:
        raise ValueError("bad amount")

    declined = await h.client.enqueue("pay.charge", retry={"max_attempts": 5})
    invalid = await h.client.enqueue(
        "pay.refund", retry={"max_attempts": 5, "non_retryable_errors": ["ValueError"]}
    )
    assert declined is not None
    assert invalid is not None
    worker.start()
    charged = await h.wait_state(declined.id, S.DISCARDED)
    refunded = await h.wait_state(invalid.id, S.DISCARDED)
    assert (charged.attempt, charged.errors[0].type) == (1, "PaymentDeclined")
    assert (refunded.attempt, refunded.errors[0].type) == (1, "ValueError")


async def test_unknown_job_type_is_failed_without_retry(harness: Harness) -> None:
    h = harness
    worker = h.worker()

    @worker.handler("known.type")
    async def known(ctx: JobContext) -> None:
        return None

    job = await h.client.enqueue("nobody.handles", retry={"max_attempts": 5})
    assert job is not None
    worker.start()
    failed = await h.wait_state(job.id, S.DISCARDED)
    assert failed.attempt == 1
    assert failed.error is not None
    assert failed.error.code == "unknown_job_type"
    assert failed.error.retryable is False
    assert "nobody.handles" in failed.error.message


async def test_handler_timeout_fails_the_attempt_with_type_timeout(harness: Harness) -> None:
    h = harness
    worker = h.worker(handler_timeout=0.05)
    cancelled: list[str] = []

    @worker.handler("slow.job")
    async def slow(ctx: JobContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(ctx.job_id)
            raise

    job = await h.client.enqueue("slow.job", retry=NO_RETRY)
    assert job is not None
    worker.start()
    failed = await h.wait_state(job.id, S.DISCARDED)
    assert cancelled == [job.id]
    assert failed.error is not None
    assert (failed.error.code, failed.error.type) == ("timeout", "timeout")
    assert failed.error.details == {"timeout_kind": "execution", "limit_seconds": 0.05}


async def test_job_timeout_ms_caps_the_handler_too(harness: Harness) -> None:
    h = harness
    worker = h.worker(handler_timeout=60)

    @worker.handler("slow.job")
    async def slow(ctx: JobContext) -> None:
        await asyncio.Event().wait()

    @worker.handler("raises.timeout")
    async def raises(ctx: JobContext) -> None:
        raise TimeoutError("the handler's own timeout")

    capped = await h.client.enqueue("slow.job", timeout_ms=50, retry=NO_RETRY)
    own = await h.client.enqueue("raises.timeout", retry=NO_RETRY)
    assert capped is not None
    assert own is not None
    worker.start()
    timed_out = await h.wait_state(capped.id, S.DISCARDED)
    assert timed_out.error is not None
    assert timed_out.error.type == "timeout"
    # A TimeoutError the handler raises itself is an ordinary handler error.
    raised = await h.wait_state(own.id, S.DISCARDED)
    assert raised.error is not None
    assert (raised.error.code, raised.error.type) == ("handler_error", "TimeoutError")


async def test_result_that_is_not_json_fails_the_job(harness: Harness) -> None:
    h = harness
    worker = h.worker()

    @worker.handler("bad.result")
    async def bad(ctx: JobContext) -> object:
        return object()

    job = await h.client.enqueue("bad.result")
    assert job is not None
    worker.start()
    failed = await h.wait_state(job.id, S.DISCARDED)
    assert failed.error is not None
    assert failed.error.code == "invalid_result"


async def test_workflow_steps_see_parent_results(harness: Harness) -> None:
    h = harness
    worker = h.worker()

    @worker.handler("num.seed")
    async def seed(ctx: JobContext) -> int:
        return 20

    @worker.handler("num.inc")
    async def inc(ctx: JobContext) -> int:
        assert ctx.parent_results is not None
        parent: int = ctx.parent_results[0]
        return parent + 1

    from ojs_core.client import job

    wf = await h.client.chain(job("num.seed"), job("num.inc"), job("num.inc"))
    worker.start()

    async def finished() -> bool:
        state: str = (await h.client.get_workflow(wf["id"]))["state"]
        return state == "completed"

    await eventually(finished)
    steps = (await h.client.get_workflow(wf["id"]))["steps"]
    assert [s["result"] for s in steps] == [20, 21, 22]


# -- fetching -----------------------------------------------------------------------------


class CountingService(JobService):
    """Records each fetch's requested count and how many jobs it returned."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetches: list[tuple[int, int]] = []

    async def fetch(self, queues: Any, count: int = 1, *args: Any, **kwargs: Any) -> list[Job]:
        jobs = await super().fetch(queues, count, *args, **kwargs)
        self.fetches.append((count, len(jobs)))
        return jobs


async def test_fetches_as_many_jobs_as_free_slots_in_one_call(harness: Harness) -> None:
    h = harness
    service = CountingService(h.backend, clock=h.clock)
    worker = Worker(service, concurrency=5, heartbeat_interval=5)
    h.workers.append(worker)
    started: list[str] = []
    release = asyncio.Event()
    worker.register("batch.item", blocking_handler(started, release))
    await h.client.enqueue_many([{"type": "batch.item", "args": [n]} for n in range(7)])
    worker.start()
    await eventually(lambda: len(started) == 5)
    assert service.fetches[0] == (5, 5)
    assert not worker.fetching  # every slot is busy: no fetch is outstanding
    assert len(service.fetches) == 1
    release.set()
    await eventually(lambda: len(started) == 7)
    assert sum(got for _, got in service.fetches) == 7
    assert all(count <= 5 for count, _ in service.fetches)


async def test_fetch_batch_caps_each_fetch(harness: Harness) -> None:
    h = harness
    service = CountingService(h.backend, clock=h.clock)
    worker = Worker(service, concurrency=10, fetch_batch=3, heartbeat_interval=5)
    h.workers.append(worker)

    @worker.handler("batch.item")
    async def item(ctx: JobContext) -> None:
        return None

    await h.client.enqueue_many([{"type": "batch.item", "args": [n]} for n in range(7)])
    worker.start()
    await eventually(lambda: sum(got for _, got in service.fetches) == 7)
    assert {count for count, _ in service.fetches} == {3}


async def test_an_idle_worker_long_polls_instead_of_spinning(harness: Harness) -> None:
    h = harness
    service = CountingService(h.backend, clock=h.clock)
    worker = Worker(service, concurrency=2, heartbeat_interval=5, poll_wait=30)
    h.workers.append(worker)
    done: list[str] = []

    @worker.handler("late.job")
    async def late(ctx: JobContext) -> None:
        done.append(ctx.job_id)

    worker.start()
    await eventually(lambda: worker.fetching)
    for _ in range(20):
        await asyncio.sleep(0)
    assert service.fetches == []  # one long-poll is still outstanding
    job = await h.client.enqueue("late.job")
    assert job is not None
    await eventually(lambda: done == [job.id])  # the long-poll woke for it
    assert service.fetches[0] == (2, 1)


# -- heartbeats and directives ------------------------------------------------------------


async def test_heartbeats_keep_a_long_job_beyond_its_visibility_timeout(
    harness: Harness,
) -> None:
    h = harness
    worker = h.worker(heartbeat_interval=3, visibility_timeout_ms=10_000)
    started: list[str] = []
    release = asyncio.Event()
    worker.register("long.job", blocking_handler(started, release))
    job = await h.client.enqueue("long.job", [1])
    assert job is not None
    worker.start()
    active = await h.wait_state(job.id, S.ACTIVE)
    assert active.visible_until == h.clock.now() + timedelta(seconds=10)
    for _ in range(6):  # 18 s in all, well past the 10 s visibility timeout
        before = (await h.job(job.id)).visible_until
        assert before is not None
        h.clock.advance(3)

        async def extended(before: Any = before) -> bool:
            current = (await h.job(job.id)).visible_until
            return current is not None and current > before

        await eventually(extended)
        await h.service.run_timers()
        current = await h.job(job.id)
        assert current.state is S.ACTIVE
        assert current.visible_until == h.clock.now() + timedelta(seconds=10)
    release.set()
    done = await h.wait_state(job.id, S.COMPLETED)
    assert done.attempt == 1
    assert done.errors == []
    info = await h.backend.get_worker(worker.worker_id)
    assert info is not None
    assert info.queues == ["default"]
    assert info.concurrency == worker.concurrency


async def test_context_heartbeat_extends_visibility_at_once(harness: Harness) -> None:
    h = harness
    worker = h.worker(heartbeat_interval=1000, visibility_timeout_ms=10_000)
    directives: list[str] = []
    proceed = asyncio.Event()

    @worker.handler("chunked.job")
    async def chunked(ctx: JobContext) -> None:
        await proceed.wait()
        directives.append(await ctx.heartbeat())

    job = await h.client.enqueue("chunked.job")
    assert job is not None
    worker.start()
    await h.wait_state(job.id, S.ACTIVE)
    h.clock.advance(8)
    proceed.set()
    done = await h.wait_state(job.id, S.COMPLETED)
    assert directives == ["running"]
    info = await h.backend.get_worker(worker.worker_id)
    assert info is not None
    assert info.last_seen >= h.clock.now() - timedelta(seconds=1)
    assert done.attempt == 1


async def test_a_job_cancelled_while_running_is_abandoned_at_the_next_heartbeat(
    harness: Harness,
) -> None:
    h = harness
    worker = h.worker(heartbeat_interval=2)
    outcome: list[str] = []

    @worker.handler("cancel.me")
    async def handler(ctx: JobContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    job = await h.client.enqueue("cancel.me")
    assert job is not None
    worker.start()
    await h.wait_state(job.id, S.ACTIVE)
    await h.client.cancel(job.id)
    h.clock.advance(2)
    await eventually(lambda: outcome == ["cancelled"])
    await eventually(lambda: worker.active_jobs == [])
    final = await h.job(job.id)
    assert final.state is S.CANCELLED
    assert final.errors == []  # neither acked nor failed by the worker


async def test_quiet_stops_fetching_and_running_resumes(harness: Harness) -> None:
    h = harness
    worker = h.worker(heartbeat_interval=1)
    done: list[str] = []

    @worker.handler("q.job")
    async def handle(ctx: JobContext) -> None:
        done.append(ctx.job_id)

    worker.start()
    await eventually(lambda: worker.fetching)
    await h.service.set_worker_directive(worker.worker_id, "quiet")
    h.clock.advance(1)
    await eventually(lambda: worker.state == "quiet" and not worker.fetching)
    job = await h.client.enqueue("q.job")
    assert job is not None
    for _ in range(20):
        await asyncio.sleep(0)
    assert not worker.fetching
    assert await h.state(job.id) is S.AVAILABLE
    await h.service.set_worker_directive(worker.worker_id, "running")
    h.clock.advance(1)
    await eventually(lambda: done == [job.id])
    assert worker.state == "running"


async def test_quiet_lets_jobs_in_flight_finish(harness: Harness) -> None:
    h = harness
    worker = h.worker(heartbeat_interval=1)
    started: list[str] = []
    release = asyncio.Event()
    worker.register("q.job", blocking_handler(started, release))
    job = await h.client.enqueue("q.job", [1], meta={})
    assert job is not None
    worker.start()
    await h.wait_state(job.id, S.ACTIVE)
    await h.service.set_worker_directive(worker.worker_id, "quiet")
    h.clock.advance(1)
    await eventually(lambda: worker.state == "quiet")
    release.set()
    await h.wait_state(job.id, S.COMPLETED)


async def test_terminate_directive_stops_the_worker_after_its_jobs(harness: Harness) -> None:
    h = harness
    worker = h.worker(heartbeat_interval=1, grace_period=60)
    started: list[str] = []
    release = asyncio.Event()
    worker.register("t.job", blocking_handler(started, release))
    job = await h.client.enqueue("t.job", [1])
    assert job is not None
    task = worker.start()
    await h.wait_state(job.id, S.ACTIVE)
    await h.service.set_worker_directive(worker.worker_id, "terminate")
    h.clock.advance(1)
    await eventually(lambda: worker.state == "stopping")
    assert not task.done()  # waiting for the job in flight (grace period not over)
    release.set()
    await eventually(task.done)
    assert worker.state == "stopped"
    assert (await h.job(job.id)).state is S.COMPLETED


async def test_test_directive_hint_in_job_meta_is_honoured(harness: Harness) -> None:
    # The conformance hook: a job whose meta.test_directive is "terminate" makes the server
    # answer the worker's heartbeat with that directive, on a service in test mode.
    h = harness
    h.service.test_directives = True
    worker = h.worker(heartbeat_interval=1, grace_period=0)
    started: list[str] = []
    release = asyncio.Event()
    worker.register("t.job", blocking_handler(started, release))
    job = await h.client.enqueue("t.job", meta={"test_directive": "terminate"})
    assert job is not None
    task = worker.start()
    await h.wait_state(job.id, S.ACTIVE)
    h.clock.advance(1)
    await eventually(task.done)
    assert worker.directive == "terminate"
    requeued = await h.job(job.id)
    assert requeued.state is S.AVAILABLE  # grace 0: handed back, not lost
    assert requeued.attempt == 0


async def test_test_directive_is_ignored_outside_test_mode(harness: Harness) -> None:
    # Off by default: a producer must not be able to stop the worker that runs its job.
    h = harness
    worker = h.worker(heartbeat_interval=1, grace_period=0)
    started: list[str] = []
    release = asyncio.Event()
    worker.register("t.job", blocking_handler(started, release))
    job = await h.client.enqueue("t.job", meta={"test_directive": "terminate"})
    assert job is not None
    task = worker.start()
    await h.wait_state(job.id, S.ACTIVE)
    assert await worker.heartbeat() == "running"
    release.set()
    await h.wait_state(job.id, S.COMPLETED)
    assert not task.done()
    assert worker.directive == "running"
    await worker.stop()


# -- graceful shutdown --------------------------------------------------------------------


async def test_stop_mid_run_loses_nothing(harness: Harness) -> None:
    h = harness
    first = h.worker(concurrency=4, worker_id="first")
    started: list[str] = []
    never = asyncio.Event()
    first.register("work.item", blocking_handler(started, never))
    jobs = await h.client.enqueue_many([{"type": "work.item", "args": [n]} for n in range(10)])
    ids = [j.id for j in jobs if j is not None]
    first.start()
    await eventually(lambda: len(started) == 4)
    await first.stop(grace=0)
    assert first.state == "stopped"
    assert first.active_jobs == []
    for job_id in started:  # interrupted: back to available, the attempt not consumed
        requeued = await h.job(job_id)
        assert requeued.state is S.AVAILABLE
        assert requeued.attempt == 0
        assert requeued.worker_id is None
        assert [e.type for e in requeued.errors] == ["shutdown"]
    second = h.worker(concurrency=3, worker_id="second")

    @second.handler("work.item")
    async def finish(ctx: JobContext) -> int:
        return int(ctx.args[0])

    second.start()
    for job_id in ids:
        done = await h.wait_state(job_id, S.COMPLETED)
        assert done.attempt == 1
        assert done.worker_id == "second"
    await second.stop()
    counts = (await h.client.queue_stats("default")).counts
    assert counts[S.COMPLETED] == 10
    assert sum(counts.values()) == 10


async def test_stop_waits_for_jobs_within_the_grace_period(harness: Harness) -> None:
    h = harness
    worker = h.worker(concurrency=2)
    started: list[str] = []
    release = asyncio.Event()
    worker.register("work.item", blocking_handler(started, release))
    await h.client.enqueue_many([{"type": "work.item", "args": [n]} for n in range(2)])
    worker.start()
    await eventually(lambda: len(started) == 2)
    stopping = asyncio.ensure_future(worker.stop(grace=30))
    await eventually(lambda: worker.state == "stopping")
    assert not worker.fetching
    assert not stopping.done()
    release.set()
    await stopping
    for job_id in started:
        assert (await h.job(job_id)).state is S.COMPLETED


async def test_handlers_still_running_after_the_grace_period_are_requeued(
    harness: Harness,
) -> None:
    h = harness
    worker = h.worker(concurrency=1, grace_period=10)
    started: list[str] = []
    worker.register("work.item", blocking_handler(started, asyncio.Event()))
    job = await h.client.enqueue("work.item")
    assert job is not None
    worker.start()
    await eventually(lambda: started == [job.id])
    stopping = asyncio.ensure_future(worker.stop())
    await eventually(lambda: worker.state == "stopping")
    h.clock.advance(9)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done()  # still inside the grace period
    assert await h.state(job.id) is S.ACTIVE
    h.clock.advance(1)
    await stopping
    requeued = await h.job(job.id)
    assert requeued.state is S.AVAILABLE
    assert requeued.attempt == 0


async def test_a_shorter_grace_given_during_the_drain_takes_effect(harness: Harness) -> None:
    h = harness
    worker = h.worker(concurrency=1, grace_period=3600)
    started: list[str] = []
    worker.register("work.item", blocking_handler(started, asyncio.Event()))
    job = await h.client.enqueue("work.item")
    assert job is not None
    task = worker.start()
    await eventually(lambda: started == [job.id])
    worker.request_stop()  # a drain with an hour of grace
    await eventually(lambda: worker.state == "stopping")
    h.clock.advance(10)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done()
    await worker.stop(grace=5)  # 10 s of the drain have passed: stop now
    requeued = await h.job(job.id)
    assert requeued.state is S.AVAILABLE
    assert requeued.attempt == 0


async def test_sigterm_stops_gracefully_and_a_second_signal_forces(harness: Harness) -> None:
    h = harness
    worker = h.worker(concurrency=1, grace_period=3600)
    started: list[str] = []
    worker.register("work.item", blocking_handler(started, asyncio.Event()))
    job = await h.client.enqueue("work.item")
    assert job is not None
    task = worker.start()
    worker.install_signal_handlers()
    await eventually(lambda: started == [job.id])
    os.kill(os.getpid(), signal.SIGTERM)
    await eventually(lambda: worker.state == "stopping")
    assert not task.done()  # the grace period is running
    os.kill(os.getpid(), signal.SIGTERM)
    await eventually(task.done)
    assert worker.state == "stopped"
    requeued = await h.job(job.id)
    assert requeued.state is S.AVAILABLE
    assert requeued.attempt == 0
    loop = asyncio.get_running_loop()
    assert loop.remove_signal_handler(signal.SIGTERM) is False  # the worker removed its own


async def test_run_can_be_awaited_directly_and_stopped_from_elsewhere(harness: Harness) -> None:
    h = harness
    worker = h.worker()
    runner = asyncio.ensure_future(worker.run())
    await eventually(lambda: worker.fetching)
    await worker.stop()
    assert runner.done()
    assert worker.state == "stopped"
    with pytest.raises(RuntimeError):
        await worker.run()


async def test_registration_rules(harness: Harness) -> None:
    worker = harness.worker()

    @worker.handler("a.job")
    async def handler(ctx: JobContext) -> None:
        return None

    assert worker.handlers == {"a.job": handler}
    with pytest.raises(ValueError, match="already registered"):
        worker.register("a.job", handler)
    with pytest.raises(ValueError, match="invalid job type"):
        worker.register("Not.Valid", handler)
    with pytest.raises(ValueError, match="concurrency"):
        Worker(harness.service, concurrency=0)
    with pytest.raises(Exception, match="queues"):
        Worker(harness.service, ["Bad Queue"])
    stopped = Worker(harness.service)
    await stopped.stop()  # stopping a worker that never ran is fine
    assert stopped.state == "stopped"


async def test_long_handlers_never_keep_free_slots_idle(harness: Harness) -> None:
    # The worker refills in batches (half a batch of free slots), but only for a moment: with
    # three of four slots held by long handlers, the fourth still takes a waiting job.
    h = harness
    worker = h.worker(concurrency=4, fetch_batch=4)
    started: list[str] = []
    release = asyncio.Event()
    worker.register("slow.job", blocking_handler(started, release))

    @worker.handler("quick.job")
    async def quick(ctx: JobContext) -> str:
        return "quick"

    slow = await h.client.enqueue_many([{"type": "slow.job", "args": [n]} for n in range(3)])
    worker.start()
    await eventually(lambda: len(started) == 3)
    job = await h.client.enqueue("quick.job", [])
    assert job is not None
    done = await h.wait_state(job.id, S.COMPLETED, within=5)
    assert done.result == "quick"
    assert all([await h.state(j.id) is S.ACTIVE for j in slow if j is not None])
    release.set()


async def test_a_stopping_worker_reports_quiet_then_terminate(harness: Harness) -> None:
    """Graceful-shutdown extension: the drain is announced at once (``state: quiet``), so the
    server hands the worker nothing more; the last heartbeat says ``terminate``."""
    h = harness
    worker = h.worker(concurrency=1, grace_period=30)
    started: list[str] = []
    release = asyncio.Event()
    worker.register("work.item", blocking_handler(started, release))
    job = await h.client.enqueue("work.item")
    assert job is not None
    worker.start()
    await eventually(lambda: started == [job.id])

    async def reported() -> str | None:
        record = await h.backend.get_worker(worker.worker_id)
        return record.state if record else None

    assert await reported() == "running"
    assert worker.reported_state == "running"
    stopping = asyncio.ensure_future(worker.stop())
    await eventually(lambda: worker.state == "stopping")
    assert worker.reported_state == "quiet"
    for _ in range(50):
        if await reported() == "quiet":
            break
        await asyncio.sleep(0.01)
    assert await reported() == "quiet"
    other = await h.client.enqueue("work.item")
    assert other is not None
    assert await h.service.fetch(["default"], worker_id=worker.worker_id) == []
    release.set()
    await stopping
    assert await reported() == "terminate"
    assert await h.state(other.id) is S.AVAILABLE
