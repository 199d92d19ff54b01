"""Noisy-neighbour detection (multi-tenancy spec §9.1) on the memory backend, with a manual
clock: each signal, its event, the sliding window, and no verdict without a neighbour."""

from __future__ import annotations

import asyncio
import contextlib

import attrs
import httpx
import pytest
from noisy_scenarios import NO_DEPTH, events_of, push, run_to_failure, signals_of
from webhook_receiver import until

from ojs_core.clock import ManualClock
from ojs_core.noisy_neighbors import CLEARED, DETECTED, NoisyNeighbors, Thresholds
from ojs_core.service import JobService
from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend


@pytest.fixture
async def svc() -> JobService:
    backend = MemoryBackend()
    await backend.open()
    return JobService(backend, clock=ManualClock())


async def test_a_deep_queue_is_detected_then_cleared(svc: JobService) -> None:
    detector = NoisyNeighbors(svc)
    await push(svc, "acme", "nq", 30)
    await push(svc, "beta", "nq", 2)
    await push(svc, "gamma", "nq", 1)
    found = await detector.assess()
    assert "queue_depth_ratio" in signals_of(found, "acme")
    assert signals_of(found, "beta") == []
    depth = next(s for s in found["acme"].signals if s.name == "queue_depth_ratio")
    assert depth.baseline == 1.5  # the median of the others' depths
    assert found["acme"].since == svc.now()
    detected = await events_of(svc, DETECTED)
    assert [e.data["tenant_id"] for e in detected] == ["acme"]
    assert await detector.assess()  # still noisy: no second event
    assert len(await events_of(svc, DETECTED)) == 1
    for job in await svc.fetch(["nq"], 30, "w", tenant="acme"):
        await svc.ack(job.id, None)
    svc.clock.advance(600)  # type: ignore[attr-defined]  # the enqueues leave the window
    found = await detector.assess()
    assert signals_of(found, "acme") == []
    assert [e.data["tenant_id"] for e in await events_of(svc, CLEARED)] == ["acme"]


async def test_the_enqueue_rate_counts_within_the_window(svc: JobService) -> None:
    detector = NoisyNeighbors(svc, NO_DEPTH)
    await push(svc, "acme", "nr", 12)
    await push(svc, "beta", "nr", 2)
    found = await detector.assess()
    assert signals_of(found, "acme") == ["enqueue_rate_ratio"]
    svc.clock.advance(NO_DEPTH.window.total_seconds() + 1)  # type: ignore[attr-defined]
    assert signals_of(await detector.assess(), "acme") == []


async def test_active_share_and_error_rate(svc: JobService) -> None:
    detector = NoisyNeighbors(svc, attrs.evolve(NO_DEPTH, enqueue_ratio=1e9))
    await push(svc, "acme", "na", 4)
    await push(svc, "beta", "na", 1)
    assert len(await svc.fetch(["na"], 4, "w", tenant="acme")) == 4
    assert len(await svc.fetch(["na"], 1, "w", tenant="beta")) == 1
    assert signals_of(await detector.assess(), "acme") == ["active_job_ratio"]
    await run_to_failure(svc, "gamma", "ne", 10, fail=True)
    await run_to_failure(svc, "delta", "ne", 10, fail=False)
    found = await detector.assess()
    assert signals_of(found, "gamma") == ["error_rate_ratio"]
    assert signals_of(found, "delta") == []


async def test_a_tenant_alone_or_small_is_never_noisy(svc: JobService) -> None:
    detector = NoisyNeighbors(svc)
    await push(svc, "acme", "ns", 50)
    assert signals_of(await detector.assess(), "acme") == []  # no neighbour to disturb
    await push(svc, "beta", "ns", 1)
    assert "queue_depth_ratio" in signals_of(await detector.assess(), "acme")
    small = NoisyNeighbors(svc, Thresholds(min_jobs=100))
    assert signals_of(await small.assess(), "acme") == []


async def test_the_periodic_check_publishes_the_event(svc: JobService) -> None:
    """``run`` assesses every interval of the service's clock, with no request."""
    detector = NoisyNeighbors(svc)
    task = asyncio.create_task(detector.run(30))
    try:
        await push(svc, "acme", "np", 20)
        await push(svc, "beta", "np", 1)
        await asyncio.sleep(0)  # the loop is waiting on the clock
        assert await events_of(svc, DETECTED) == []
        svc.clock.advance(30)  # type: ignore[attr-defined]
        await until(lambda: events_of(svc, DETECTED), "tenant.noisy_neighbor.detected")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_admin_api_shows_the_signals() -> None:
    app = create_app(MemoryBackend(), HttpSettings(run_scheduler=False))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        svc: JobService = app.state.service
        await svc.tenancy.put("acme", {})
        await push(svc, "acme", "nh", 20)
        await push(svc, "beta", "nh", 1)
        stats = (await client.get("/ojs/v1/admin/tenants/acme/stats")).json()
        assert stats["noisy_neighbor"]["detected"] is True
        assert "queue_depth_ratio" in [s["signal"] for s in stats["noisy_neighbor"]["signals"]]
        listed = (await client.get("/ojs/v1/admin/tenants")).json()["items"]
        assert listed[0]["stats"]["noisy_neighbor"]["detected"] is True
        noisy = (await client.get("/ojs/v1/admin/noisy-tenants")).json()["tenants"]
        assert [t["tenant_id"] for t in noisy] == ["acme"]
        quiet = (await client.get("/ojs/v1/admin/tenants/beta/stats")).json()
        assert quiet["noisy_neighbor"]["detected"] is False
