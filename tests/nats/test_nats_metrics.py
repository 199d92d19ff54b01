"""Prometheus metrics and queue-stats activity of a JobService on NATS, jobs run by the Worker.

The counters come from the service's events, the queue-depth gauge from the NATS backend's
per-queue counters: both are read back from the exposition (prometheus-client's parser).
"""

from __future__ import annotations

from nats_support import eventually
from prometheus_client.parser import text_string_to_metric_families

from ojs_core import Client
from ojs_core.prometheus import JobMetrics
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.worker import JobContext, Worker


def value(text: bytes, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


async def test_metrics_after_jobs_run_on_nats(svc: JobService) -> None:
    metrics = JobMetrics()
    metrics.attach(svc)
    worker = Worker(svc, "metrics-q", concurrency=4, heartbeat_interval=0.5)

    @worker.handler("nats.work")
    async def work(ctx: JobContext) -> int:
        if ctx.args[0] == "fail":
            raise RuntimeError("permanent")
        return 1

    client = Client(svc)
    jobs = [
        await client.enqueue("nats.work", [arg], queue="metrics-q", retry={"max_attempts": 1})
        for arg in ("ok", "ok", "ok", "fail")
    ]
    worker.start()
    try:

        async def settled() -> bool:
            states = [(await svc.get(j.id)).state for j in jobs if j is not None]
            return states.count(JobState.COMPLETED) == 3 and JobState.DISCARDED in states

        await eventually(settled, what="three completed, one discarded")

        async def heartbeat_seen() -> bool:
            await metrics.refresh(force=True)
            return value(metrics.exposition(), "ojs_workers_active") == 1

        await eventually(heartbeat_seen, what="the worker's heartbeat")
    finally:
        await worker.stop()
    text = metrics.exposition()
    labels = {"queue": "metrics-q", "type": "nats.work"}
    assert value(text, "ojs_job_enqueued_total", **labels) == 4
    assert value(text, "ojs_job_completed_total", **labels) == 3
    assert value(text, "ojs_job_failed_total", **labels) == 1
    assert value(text, "ojs_job_duration_seconds_count", state="completed", **labels) == 3
    assert value(text, "ojs_job_queue_time_seconds_count", **labels) == 4
    assert value(text, "ojs_queue_depth", queue="metrics-q", state="completed") == 3
    assert value(text, "ojs_queue_depth", queue="metrics-q", state="discarded") == 1
    assert value(text, "ojs_queue_depth", queue="metrics-q", state="available") == 0

    stats = await svc.queue_stats("metrics-q")
    assert stats.completed_last_hour == 3
    assert stats.failed_last_hour == 1
    assert stats.throughput_per_second > 0
