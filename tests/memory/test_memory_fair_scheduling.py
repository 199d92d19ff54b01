"""Fair scheduling through the service on the memory backend: strategies across the queues of
a fetch, starvation prevention on a manual clock."""

from __future__ import annotations

from collections import Counter

import pytest

from ojs_core.backend import EventFilter
from ojs_core.clock import ManualClock
from ojs_core.errors import ValidationError
from ojs_core.queue_strategy import QueuePlan, Starvation
from ojs_core.service import JobService
from ojs_memory import MemoryBackend

Q = ["critical", "default", "low"]


async def _fill(svc: JobService, per_queue: int, queues: list[str] = Q) -> None:
    for q in queues:
        await svc.enqueue_batch([{"type": "t.job", "args": [], "queue": q}] * per_queue)


async def _fetch_queues(
    svc: JobService, plan: QueuePlan | None, n: int, count: int = 1
) -> list[str]:
    out: list[str] = []
    for _ in range(n):
        out.extend(j.queue for j in await svc.fetch(Q, count, "w1", plan=plan))
    return out


async def test_default_is_list_order() -> None:
    svc = JobService(MemoryBackend(), clock=ManualClock())
    await _fill(svc, 3)
    assert await _fetch_queues(svc, None, 4) == ["critical"] * 3 + ["default"]


async def test_round_robin_across_queues() -> None:
    svc = JobService(MemoryBackend(), clock=ManualClock())
    await _fill(svc, 3)
    got = await _fetch_queues(svc, QueuePlan("round-robin"), 6)
    assert got == Q * 2


async def test_round_robin_within_one_fetch_of_several_jobs() -> None:
    svc = JobService(MemoryBackend(), clock=ManualClock())
    await _fill(svc, 4)
    got = await _fetch_queues(svc, QueuePlan("round-robin"), 1, count=6)
    assert Counter(got) == {"critical": 2, "default": 2, "low": 2}


async def test_a_fetch_goes_on_to_other_queues_when_its_turns_are_empty() -> None:
    svc = JobService(MemoryBackend(), clock=ManualClock())
    await _fill(svc, 5, ["low"])
    got = await _fetch_queues(svc, QueuePlan("weighted", (("critical", 5),)), 1, count=4)
    assert got == ["low"] * 4


async def test_weighted_across_queues() -> None:
    svc = JobService(MemoryBackend(), clock=ManualClock())
    await _fill(svc, 20)
    plan = QueuePlan("weighted", (("critical", 5), ("default", 3), ("low", 1)))
    got = Counter(await _fetch_queues(svc, plan, 18))
    assert got == {"critical": 10, "default": 6, "low": 2}


async def test_least_loaded_takes_the_deepest_backlog() -> None:
    svc = JobService(MemoryBackend(), clock=ManualClock())
    await _fill(svc, 1, ["critical"])
    await _fill(svc, 5, ["low"])
    got = await _fetch_queues(svc, QueuePlan("least-loaded"), 1)
    assert got == ["low"]


async def test_starvation_prevention_serves_a_starved_queue_and_says_so() -> None:
    clock = ManualClock()
    svc = JobService(MemoryBackend(), clock=clock)
    await _fill(svc, 10)
    sp = Starvation(enabled=True, rotation_ms=30_000, min_ratio=0.0)
    plan = QueuePlan("strict", starvation=sp)
    assert await _fetch_queues(svc, plan, 2) == ["critical"] * 2
    clock.advance(20)
    assert await _fetch_queues(svc, plan, 1) == ["critical"]
    clock.advance(11)
    got = await _fetch_queues(svc, plan, 3)
    assert got == ["default", "low", "critical"]
    events = await svc.events(EventFilter(types=("scheduling.queue_starved",)))
    assert [e.data["queue"] for e in events] == ["default", "low"]
    assert events[0].data["duration"] == "PT31S"
    assert events[0].data["available_count"] == 9


async def test_one_queue_fetch_bypasses_the_scheduler() -> None:
    svc = JobService(MemoryBackend(), clock=ManualClock())
    await _fill(svc, 2, ["low"])
    (job,) = await svc.fetch(["low"], 1, "w", plan=QueuePlan("round-robin"))
    assert job.queue == "low"
    assert not svc.scheduler._rotations


async def test_scheduling_stats_cover_the_last_minute() -> None:
    clock = ManualClock()
    svc = JobService(MemoryBackend(), clock=clock)
    await _fill(svc, 2)
    clock.advance(2)
    await _fetch_queues(svc, QueuePlan("round-robin"), 3)
    view = await svc.scheduling_stats.view()
    by_name = {q["name"]: q for q in view["queues"]}
    assert by_name["low"]["dispatch_count_1m"] == 1
    assert by_name["low"]["avg_wait_ms"] == 2000
    assert by_name["low"]["dispatch_ratio_1m"] == round(1 / 3, 4)
    clock.advance(59)
    await _fetch_queues(svc, QueuePlan("strict"), 1)
    clock.advance(2)
    view = await svc.scheduling_stats.view()
    by_name = {q["name"]: q for q in view["queues"]}
    assert by_name["critical"]["dispatch_count_1m"] == 1
    assert by_name["critical"]["dispatch_ratio_1m"] == 1.0
    assert by_name["low"]["dispatch_count_1m"] == 0
    assert by_name["critical"]["active_jobs"] == 2


async def test_least_loaded_gives_a_full_worker_nothing() -> None:
    svc = JobService(MemoryBackend(), clock=ManualClock())
    await _fill(svc, 3)
    (job,) = await svc.fetch(Q, 1, "busy", plan=QueuePlan("least-loaded"))
    await svc.heartbeat("busy", [job.id], info={"concurrency": 1})
    assert await svc.fetch(Q, 1, "busy", plan=QueuePlan("least-loaded")) == []
    # Other strategies do not look at it, and a worker with room is served.
    assert len(await svc.fetch(Q, 1, "busy", plan=QueuePlan("round-robin"))) == 1
    await svc.heartbeat("busy", [], info={"concurrency": 1})
    assert len(await svc.fetch(Q, 1, "busy", plan=QueuePlan("least-loaded"))) == 1


async def test_a_fetch_plan_weighing_other_queues_is_refused() -> None:
    """``JobService.fetch`` (any binding, or a ``Worker``'s plan) refuses weights of queues
    the fetch does not name: they would otherwise be kept in the rotation key."""
    svc = JobService(MemoryBackend(), clock=ManualClock())
    await _fill(svc, 1)
    plan = QueuePlan("weighted", (("critical", 2), ("nowhere", 5)))
    with pytest.raises(ValidationError) as e:
        await svc.fetch(Q, 1, "w", plan=plan)
    assert e.value.path == "weights.nowhere"
    assert not svc.scheduler._rotations
