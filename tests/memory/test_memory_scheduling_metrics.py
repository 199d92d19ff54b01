"""The fair-scheduling metrics (§11.2) in JobMetrics' exposition: dispatches by queue and
pool, starvation events, the dispatch ratio and pool utilization gauges."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ojs_core.clock import ManualClock
from ojs_core.prometheus import JobMetrics
from ojs_core.queue_strategy import QueuePlan, Starvation
from ojs_core.service import JobService
from ojs_memory import MemoryBackend


def _line(text: str, prefix: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(prefix))


async def test_scheduling_metrics() -> None:
    clock = ManualClock()
    svc = JobService(MemoryBackend(), clock=clock)
    metrics = JobMetrics(CollectorRegistry())
    metrics.attach(svc)
    await svc.pools.put("p", {"queues": ["q"], "concurrency": 4})
    await svc.enqueue_batch([{"type": "t.job", "args": [], "queue": "q"}] * 2)
    await svc.enqueue_batch([{"type": "t.job", "args": [], "queue": q} for q in ("a", "b")] * 2)
    assert len(await svc.fetch([], 2, "w1", pool="p")) == 2
    sp = Starvation(enabled=True, rotation_ms=10_000, min_ratio=0.0)
    plan = QueuePlan("strict", starvation=sp)
    assert [j.queue for j in await svc.fetch(["a", "b"], 1, "w2", plan=plan)] == ["a"]
    clock.advance(5)
    assert [j.queue for j in await svc.fetch(["a", "b"], 1, "w2", plan=plan)] == ["a"]
    clock.advance(6)
    assert [j.queue for j in await svc.fetch(["a", "b"], 1, "w2", plan=plan)] == ["b"]
    await metrics.refresh(force=True)
    text = metrics.exposition().decode()
    assert _line(text, 'ojs_scheduling_dispatch_total{pool="p",queue="q"}').endswith(" 2.0")
    assert _line(text, 'ojs_scheduling_dispatch_total{pool="",queue="a"}').endswith(" 2.0")
    assert _line(text, 'ojs_scheduling_starvation_events_total{queue="b"}').endswith(" 1.0")
    assert _line(text, 'ojs_scheduling_pool_utilization{pool="p"}').endswith(" 0.5")
    # The last minute: 2 of q, 2 of a, 1 of b.
    assert _line(text, 'ojs_scheduling_dispatch_ratio{queue="q"}').endswith(" 0.4")
