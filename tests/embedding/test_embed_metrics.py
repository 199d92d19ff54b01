"""Prometheus metrics of an embedded JobService: jobs run by the in-process Worker.

No HTTP: ``JobMetrics`` attached to the service, as an embedder would. The clock is a
ManualClock, moved inside handlers and between steps so that durations and queue times are
exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from embed_support import Harness, eventually
from metrics_support import value

from ojs_core import JobContext
from ojs_core.prometheus import OTHER, JobMetrics
from ojs_core.states import JobState

S = JobState


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


async def test_lifecycle_counters_histograms_and_gauges(harness: Harness) -> None:
    h = harness
    metrics = JobMetrics()
    metrics.attach(h.service)
    worker = h.worker(concurrency=1)  # one at a time: each handler moves the shared clock

    @worker.handler("mail.send")
    async def send(ctx: JobContext) -> str:
        h.clock.advance(0.2)  # the attempt "runs" 200 ms of service time
        return "sent"

    @worker.handler("mail.bounce")
    async def bounce(ctx: JobContext) -> None:
        h.clock.advance(3)
        raise RuntimeError("mailbox full")

    ok = await h.client.enqueue("mail.send", ["a@example.com"])
    retried = await h.client.enqueue(
        "mail.bounce", [], retry={"max_attempts": 2, "initial_interval": "PT60S"}
    )
    dead = await h.client.enqueue("mail.bounce", [], retry={"max_attempts": 1})
    cancelled = await h.client.enqueue("mail.send", [], queue="later")
    expiring = await h.client.enqueue("mail.send", [], queue="later", expires_at="+PT1S")
    assert None not in (ok, retried, dead, cancelled, expiring)
    await h.service.cancel(cancelled.id)
    h.clock.advance(2)  # every job waited 2 s before a worker saw it
    await h.service.run_timers()  # expires the TTL job
    worker.start()
    await h.wait_state(ok.id, S.COMPLETED)
    await h.wait_state(dead.id, S.DISCARDED)
    await h.wait_state(retried.id, S.RETRYABLE)

    await metrics.refresh()
    text = metrics.exposition().decode()
    send_labels = {"queue": "default", "type": "mail.send"}
    bounce_labels = {"queue": "default", "type": "mail.bounce"}
    assert value(text, "ojs_job_enqueued_total", **send_labels) == 1
    assert value(text, "ojs_job_enqueued_total", **bounce_labels) == 2
    assert value(text, "ojs_job_enqueued_total", queue="later", type="mail.send") == 2
    assert value(text, "ojs_job_completed_total", **send_labels) == 1
    assert value(text, "ojs_job_failed_total", **bounce_labels) == 1  # discarded, not retried
    assert value(text, "ojs_job_retried_total", **bounce_labels) == 1
    assert value(text, "ojs_job_cancelled_total", queue="later", type="mail.send") == 1
    assert value(text, "ojs_job_expired_total", queue="later", type="mail.send") == 1

    completed = {**send_labels, "state": "completed"}
    assert value(text, "ojs_job_duration_seconds_count", **completed) == 1
    assert value(text, "ojs_job_duration_seconds_sum", **completed) == pytest.approx(0.2)
    assert value(text, "ojs_job_duration_seconds_bucket", le="0.25", **completed) == 1
    assert value(text, "ojs_job_duration_seconds_bucket", le="0.1", **completed) == 0
    failed = {**bounce_labels, "state": "retryable"}
    assert value(text, "ojs_job_duration_seconds_count", **failed) == 1
    discarded = {**bounce_labels, "state": "discarded"}
    assert value(text, "ojs_job_duration_seconds_sum", **discarded) == pytest.approx(3)
    # The spec's queue-time buckets; three first attempts that each waited 2 s (or more: the
    # handlers moved the clock before the later ones started).
    assert value(text, "ojs_job_queue_time_seconds_count", **bounce_labels) == 2
    assert value(text, "ojs_job_queue_time_seconds_bucket", le="1.0", **send_labels) == 0
    assert value(text, "ojs_job_queue_time_seconds_bucket", le="3600.0", **send_labels) == 1

    assert value(text, "ojs_queue_depth", queue="default", state="completed") == 1
    assert value(text, "ojs_queue_depth", queue="default", state="retryable") == 1
    assert value(text, "ojs_queue_depth", queue="later", state="cancelled") == 1
    assert value(text, "ojs_queue_depth", queue="later", state="available") == 0
    await eventually(lambda: worker.worker_id in h.backend._workers, what="first heartbeat")
    await metrics.refresh(force=True)
    assert value(metrics.exposition(), "ojs_workers_active") == 1
    await worker.stop()


async def test_queue_stats_report_the_last_hour(harness: Harness) -> None:
    h = harness
    worker = h.worker(concurrency=1)

    @worker.handler("report.build")
    async def build(ctx: JobContext) -> None:
        h.clock.advance(0.5)
        if ctx.args == ["bad"]:
            raise ValueError("no data")

    jobs = [
        await h.client.enqueue("report.build", [arg], retry={"max_attempts": 1})
        for arg in ("a", "b", "bad")
    ]
    h.clock.advance(1)
    worker.start()
    for job in jobs:
        assert job is not None
        await h.wait_state(job.id, S.COMPLETED if job.args != ["bad"] else S.DISCARDED)
    await worker.stop()
    stats = await h.service.queue_stats("default")
    assert stats.completed_last_hour == 2
    assert stats.failed_last_hour == 1
    assert stats.avg_duration_ms == pytest.approx(500)
    assert stats.avg_wait_ms >= 1000
    assert stats.throughput_per_second == pytest.approx(3 / 60, abs=1e-3)
    # An hour later the window is empty again; the per-state counts are the backend's.
    h.clock.advance(3700)
    later = await h.service.queue_stats("default")
    assert (later.completed_last_hour, later.failed_last_hour) == (0, 0)
    assert later.throughput_per_second == 0
    assert later.counts[S.COMPLETED] == 2


async def test_label_values_are_capped(harness: Harness) -> None:
    h = harness
    metrics = JobMetrics(max_types=2, max_queues=1)
    metrics.attach(h.service)
    for kind in ("t.one", "t.two", "t.three", "t.four"):
        await h.client.enqueue(kind, [])
    await h.client.enqueue("t.one", [], queue="second")
    text = metrics.exposition().decode()
    assert value(text, "ojs_job_enqueued_total", queue="default", type="t.one") == 1
    assert value(text, "ojs_job_enqueued_total", queue="default", type="t.two") == 1
    assert value(text, "ojs_job_enqueued_total", queue="default", type=OTHER) == 2
    assert value(text, "ojs_job_enqueued_total", queue=OTHER, type="t.one") == 1
    assert value(text, "ojs_job_enqueued_total", queue="default", type="t.three") is None
    await metrics.refresh()
    text = metrics.exposition().decode()
    assert value(text, "ojs_queue_depth", queue="default", state="available") == 4
    assert value(text, "ojs_queue_depth", queue=OTHER, state="available") == 1


async def test_a_scrape_reads_the_backend_at_most_once_per_interval(harness: Harness) -> None:
    h = harness
    metrics = JobMetrics(refresh_interval=3600)
    metrics.attach(h.service)
    await h.client.enqueue("t.one", [])
    await metrics.refresh()
    await h.client.enqueue("t.one", [])
    await metrics.refresh()  # cached: still one job available
    assert value(metrics.exposition(), "ojs_queue_depth", queue="default", state="available") == 1
    await metrics.refresh(force=True)
    assert value(metrics.exposition(), "ojs_queue_depth", queue="default", state="available") == 2


async def test_a_failing_observer_never_fails_an_operation(harness: Harness) -> None:
    h = harness
    seen: list[str] = []

    def broken(events: object) -> None:
        raise RuntimeError("observer bug")

    h.service.observers.add(broken)
    h.service.observers.add(lambda events: seen.extend(e.type for e in events))
    job = await h.client.enqueue("t.one", [])
    assert job is not None
    assert seen == ["job.enqueued"]
    h.service.observers.remove(broken)


async def test_rate_limit_refusals_waits_and_holders(harness: Harness) -> None:
    h = harness
    metrics = JobMetrics(refresh_interval=0)
    metrics.attach(h.service)
    limit = {"key": "mail-api", "concurrency": 1}
    jobs = [await h.client.enqueue("mail.send", [n], rate_limit=limit) for n in range(3)]
    first = await h.service.fetch(["default"], count=3, worker_id="w1")
    assert [j.id for j in first] == [jobs[0].id]  # the two others are held back
    h.clock.advance(4)
    await h.service.ack(first[0].id, None, "w1")
    second = await h.service.fetch(["default"], count=1, worker_id="w1")
    assert [j.args for j in second] == [[1]]
    await metrics.refresh(force=True)
    text = metrics.exposition()
    refused = value(text, "ojs_rate_limit_exceeded_total", key="mail-api", strategy="concurrency")
    assert refused == 2
    waited = value(text, "ojs_rate_limit_wait_duration_seconds_sum", key="mail-api")
    assert waited == 4  # from its refusal to its start, on the service clock
    assert value(text, "ojs_rate_limit_active", key="mail-api") == 1
    assert value(text, "ojs_rate_limit_waiting", key="mail-api") == 1


async def test_rate_limit_key_labels_are_capped(harness: Harness) -> None:
    h = harness
    metrics = JobMetrics(refresh_interval=0)
    metrics.attach(h.service)
    for n in range(105):
        await h.client.enqueue("mail.send", [n], rate_limit={"key": f"k{n}", "concurrency": 1})
    assert len(await h.service.fetch(["default"], count=105, worker_id="w1")) == 105
    await metrics.refresh(force=True)
    text = metrics.exposition()
    assert value(text, "ojs_rate_limit_active", key="k0") == 1
    assert value(text, "ojs_rate_limit_active", key=OTHER) == 5
