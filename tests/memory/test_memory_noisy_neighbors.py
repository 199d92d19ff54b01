"""Noisy-neighbour detection (multi-tenancy spec §9.1) on the memory backend, with a manual
clock: each signal, its event, the sliding window, and no verdict without a neighbour."""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics

import attrs
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noisy_scenarios import NO_DEPTH, events_of, push, run_to_failure, signals_of
from webhook_receiver import until

from ojs_core.clock import ManualClock
from ojs_core.events import make_event
from ojs_core.noisy_neighbors import (
    CLEARED,
    DETECTED,
    MAX_READ,
    NoisyNeighbors,
    Thresholds,
    _Usage,
    judge,
)
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


async def test_at_most_max_judged_unconfigured_tenants_are_judged(svc: JobService) -> None:
    """Beyond the configured tenants, only the ``max_judged`` most active ones seen in the
    window are judged (a producer may tag jobs with any number of tenant ids)."""
    await svc.tenancy.put("configured", {})
    for i in range(8):
        await push(svc, f"t{i}", "ncap", i + 1)  # t7 the most active
    found = await NoisyNeighbors(svc, max_judged=3).assess()
    assert set(found) == {"configured", "t7", "t6", "t5"}
    assert len(await NoisyNeighbors(svc).assess()) == 9  # under the default cap: all


def _naive(usage: dict[str, _Usage], th: Thresholds) -> dict[str, list[tuple[str, float]]]:
    """The definition as first written: each tenant compared with a list of the others."""
    out: dict[str, list[tuple[str, float]]] = {}
    for tenant, mine in usage.items():
        others = [u for t, u in usage.items() if t != tenant]
        found: list[tuple[str, float]] = []
        out[tenant] = found
        if not others:
            continue
        base = max(float(statistics.median(u.depth for u in others)), 1.0)
        if mine.depth >= th.min_jobs and mine.depth > th.depth_ratio * base:
            found.append(("queue_depth_ratio", base))
        base = max(statistics.fmean(u.enqueued for u in others), 1.0)
        if mine.enqueued >= th.min_jobs and mine.enqueued > th.enqueue_ratio * base:
            found.append(("enqueue_rate_ratio", base))
        total_active = mine.active + sum(u.active for u in others)
        if total_active >= th.min_active and mine.active > th.active_share * total_active:
            found.append(("active_job_ratio", total_active))
        rated = [u.error_rate for u in others if u.finished]
        base = max(statistics.fmean(rated) if rated else 0.0, 0.01)
        near = math.isclose(mine.error_rate, th.error_ratio * base, rel_tol=1e-9)
        if not near and mine.finished >= th.min_jobs and mine.error_rate > th.error_ratio * base:
            found.append(("error_rate_ratio", base))
    return out


_COUNT = st.integers(min_value=0, max_value=60)
_USAGE = st.builds(
    _Usage, depth=_COUNT, active=_COUNT, enqueued=_COUNT, completed=_COUNT, failed=_COUNT
)


@settings(max_examples=300, deadline=None)
@given(usage=st.dictionaries(st.text("abcdefgh", min_size=1, max_size=3), _USAGE, max_size=12))
def test_the_leave_one_out_baselines_equal_the_naive_ones(usage: dict[str, _Usage]) -> None:
    """``judge`` (sums and a sorted list computed once) gives each tenant the signals and
    baselines of the direct computation over the list of the other tenants."""
    th = Thresholds(min_jobs=3, min_active=2)
    fast = judge(usage, th)
    naive = _naive(usage, th)
    assert set(fast) == set(usage)
    for tenant, expected in naive.items():
        mine = usage[tenant]
        got = [
            (s.name, s.baseline)
            for s in fast[tenant]
            # An error rate exactly at its threshold may round either way: the naive side
            # leaves it out, so does this.
            if s.name != "error_rate_ratio"
            or not math.isclose(mine.error_rate, th.error_ratio * s.baseline, rel_tol=1e-9)
        ]
        assert [name for name, _ in got] == [name for name, _ in expected]
        for (_, a), (_, b) in zip(got, expected, strict=True):
            assert math.isclose(a, b, rel_tol=1e-9)


async def _log(svc: JobService, tenant: str, n: int) -> None:
    """``n`` ``job.enqueued`` events of ``tenant`` in the log, now (no jobs behind them)."""
    events = [
        make_event("job.enqueued", svc.now(), {"job_id": f"{tenant}-{i}", "tenant_id": tenant})
        for i in range(n)
    ]
    for i in range(0, n, 1000):
        await svc.emit(events[i : i + 1000])


async def test_a_new_detector_skips_the_log_before_the_window(svc: JobService) -> None:
    """A detector started on a long log (a new replica) starts at the window, not at the
    log's beginning: its first pass already sees the jobs of the window."""
    await _log(svc, "old", 3 * MAX_READ)
    svc.clock.advance(NO_DEPTH.window.total_seconds() + 60)  # type: ignore[attr-defined]
    await push(svc, "acme", "nw", 12)
    await push(svc, "beta", "nw", 2)
    found = await NoisyNeighbors(svc, NO_DEPTH).assess()
    assert signals_of(found, "acme") == ["enqueue_rate_ratio"]
    assert "old" not in found


async def test_a_detector_behind_reads_the_newest_events(svc: JobService) -> None:
    """When the window holds more events than a pass reads, the pass reads its newest part
    instead of falling further behind with every pass."""
    detector = NoisyNeighbors(svc, NO_DEPTH)
    await detector.assess()  # started on an empty log
    await _log(svc, "early", 3 * MAX_READ)
    svc.clock.advance(60)  # type: ignore[attr-defined]  # all still in the window
    await push(svc, "acme", "nb", 3)
    found = await detector.assess()  # this pass stops at MAX_READ: behind
    svc.clock.advance(30)  # type: ignore[attr-defined]
    await push(svc, "beta", "nb", 3)
    found = await detector.assess()  # this one skips to the newest events
    assert {"acme", "beta"} <= set(found)
