"""A job's concurrency slots are freed by the attempt that held them only: a release that
comes late (the replica that stored attempt 1 leaving ``active`` released its slot after
another replica had claimed attempt 2) leaves attempt 2's slot taken, for the job's own key and
its pool's key alike (the queue-level key: tests/nats/test_nats_rate_limits.py)."""

from __future__ import annotations

import attrs

from ojs_core.clock import ManualClock
from ojs_core.model import Job
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_memory import MemoryBackend

RETRY = {"max_attempts": 5, "initial_interval": "PT1S", "jitter": False}


async def _second_attempt(svc: JobService, clock: ManualClock, fetch: dict) -> tuple[Job, Job]:
    """Attempt 1 of the first job times out (its visibility timeout: its slot is freed at
    once here); after the retry delay, attempt 2 is claimed. Attempt 1 as it was active, and
    attempt 1 as it left."""
    (one,) = await svc.fetch(["rl"], 1, "w1", visibility_ms=1000, **fetch)
    assert one.attempt == 1
    clock.advance(2)
    await svc.run_timers()
    left = await svc.get(one.id)
    assert left.state is not JobState.ACTIVE
    clock.advance(5)
    await svc.run_timers()
    (two,) = await svc.fetch(["rl"], 1, "w2", **fetch)
    assert (two.id, two.attempt) == (one.id, 2)
    return one, left


async def _service() -> tuple[JobService, ManualClock]:
    clock = ManualClock()
    return JobService(MemoryBackend(), clock=clock), clock


async def test_a_late_release_of_attempt_one_keeps_attempt_twos_job_slot() -> None:
    svc, clock = await _service()
    rl = {"key": "late-key", "concurrency": 1}
    job = {"type": "t.job", "args": [], "queue": "rl", "rate_limit": rl, "retry": RETRY}
    await svc.enqueue_batch([job])
    one, left = await _second_attempt(svc, clock, {})
    await svc.enqueue_batch([job])
    # The release of attempt 1 again: what the other replica's late release does.
    await svc.rate_limits.left_active(one, left)
    assert await svc.fetch(["rl"], 1, "w3") == []  # the key is full: attempt 2 holds it


async def test_a_late_release_of_attempt_one_keeps_attempt_twos_pool_slot() -> None:
    svc, clock = await _service()
    await svc.pools.put("late", {"queues": ["rl"], "concurrency": 1})
    job = {"type": "t.job", "args": [], "queue": "rl", "retry": RETRY}
    await svc.enqueue_batch([job])
    one, left = await _second_attempt(svc, clock, {"pool": "late"})
    await svc.enqueue_batch([job])
    assert one.pool == "late"
    await svc.rate_limits.left_active(one, attrs.evolve(left, pool=None))
    assert await svc.fetch([], 1, "w3", pool="late") == []
