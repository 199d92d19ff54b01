"""Rate limits (the rate-limiting extension): concurrency, windows, throttles, ``on_limit``,
handler feedback, overrides and repair, through :class:`~ojs_core.service.JobService`.

Every backend gets the limits (counted per process without the optional
:class:`~ojs_core.backend.RateLimitStore`); the tests that need the shared store skip without
it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
import pytest

from ...backend import RateLimitStore
from ...errors import NotFoundError, ValidationError
from ...model import Job, JobError
from ...rate_limit_rules import KeyState
from ...service import JobService
from ...states import JobState
from ...timeutil import format_ts
from ..helpers import expect_events, push
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestRateLimits"]

S = JobState


async def _fetch_all(service: JobService, queue: str, count: int = 10) -> list[Job]:
    return await service.fetch([queue], count=count)


async def _claim_until(t: TimeControl, service: JobService, queue: str, n: int) -> list[Job]:
    """Fetch until ``n`` jobs were claimed in all (a refused job may come back a moment
    later on a backend that sets it aside)."""
    got: list[Job] = []

    async def enough() -> bool:
        got.extend(await _fetch_all(service, queue))
        return len(got) >= n

    await t.until(enough, what=lambda: f"{n} claims from {queue!r}, got {len(got)}")
    return got


def _limited(key: str, **policy: Any) -> dict[str, Any]:
    return {"key": key, **policy}


class TestRateLimits(KitTest):
    """A job's ``rate_limit`` holds its starts to its key's limits."""

    async def test_concurrency_admits_up_to_the_limit(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """With ``concurrency: 2`` two jobs of the key run at once; an ack frees a slot, and
        unlimited jobs behind the held ones are handed out meanwhile (§8.1)."""
        ids = [
            (await push(service, queue="rl-c", rate_limit=_limited("rl-c", concurrency=2))).id
            for _ in range(4)
        ]
        free = await push(service, queue="rl-c")
        first = await _claim_until(ojs_time, service, "rl-c", 3)
        assert len(first) == 3
        assert free.id in {j.id for j in first}
        limited = [j for j in first if j.id != free.id]
        assert {j.id for j in limited} <= set(ids)
        assert await _fetch_all(service, "rl-c") == []
        state = await service.rate_limits.get("rl-c")
        assert state["concurrency"] == {"limit": 2, "active": 2, "available": 0}
        await service.ack(limited[0].id)
        more = await _claim_until(ojs_time, service, "rl-c", 1)
        assert len(more) == 1
        assert more[0].id in ids
        assert await _fetch_all(service, "rl-c") == []

    async def test_every_way_out_of_active_frees_the_slot(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A failure and a cancellation free the slot as an ack does."""
        policy = _limited("rl-out", concurrency=1)
        a = await push(service, queue="rl-out", rate_limit=policy, retry={"max_attempts": 1})
        b = await push(service, queue="rl-out", rate_limit=policy)
        c = await push(service, queue="rl-out", rate_limit=policy)
        (got,) = await _claim_until(ojs_time, service, "rl-out", 1)
        assert got.id == a.id
        await service.nack(a.id, JobError(message="boom"))
        (got,) = await _claim_until(ojs_time, service, "rl-out", 1)
        assert got.id == b.id
        await service.cancel(b.id)
        (got,) = await _claim_until(ojs_time, service, "rl-out", 1)
        assert got.id == c.id

    async def test_a_rate_window_admits_limit_starts_per_period(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """``rate: {limit: 2, period: PT2S}``: two starts, then none until the window moves."""
        for _ in range(4):
            await push(
                service,
                queue="rl-r",
                rate_limit=_limited("rl-r", rate={"limit": 2, "period": "PT2S"}),
            )
        start = service.now()
        first = await _claim_until(ojs_time, service, "rl-r", 2)
        assert len(first) == 2
        if ojs_time.before(start + timedelta(seconds=1.5)):
            assert await _fetch_all(service, "rl-r") == []
        await ojs_time.advance_to(start + timedelta(seconds=2.1))
        assert len(await _claim_until(ojs_time, service, "rl-r", 2)) == 2

    async def test_a_throttle_spaces_starts(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """``throttle: {limit: 2, period: PT1S}``: one start per half second."""
        for _ in range(2):
            await push(
                service,
                queue="rl-t",
                rate_limit=_limited("rl-t", throttle={"limit": 2, "period": "PT1S"}),
            )
        start = service.now()
        first = await _claim_until(ojs_time, service, "rl-t", 1)
        assert len(first) == 1
        if ojs_time.before(start + timedelta(milliseconds=300)):
            assert await _fetch_all(service, "rl-t") == []
        await ojs_time.advance_to(start + timedelta(milliseconds=600))
        assert len(await _claim_until(ojs_time, service, "rl-t", 1)) == 1

    async def test_reschedule_moves_a_held_job_to_scheduled(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """``on_limit: reschedule``: a held job leaves ``available`` for ``scheduled``."""
        policy = _limited("rl-s", concurrency=1, on_limit="reschedule")
        a = await push(service, queue="rl-s", rate_limit=policy)
        b = await push(service, queue="rl-s", rate_limit=policy)

        async def b_rescheduled() -> bool:
            await _fetch_all(service, "rl-s")
            return (await service.get(b.id)).state is S.SCHEDULED

        await ojs_time.until(b_rescheduled, what="the second job rescheduled", timers=False)
        assert (await service.get(a.id)).state is S.ACTIVE
        after = await service.get(b.id)
        assert after.scheduled_at is not None
        assert after.scheduled_at > service.now()
        await expect_events(ojs_time, service, ["job.scheduled"], "job.scheduled", job_id=b.id)

    async def test_drop_discards_a_held_job(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """``on_limit: drop``: a held job is discarded unrun, with ``rate_limit.dropped``."""
        job = await push(
            service, queue="rl-d", rate_limit=_limited("rl-d", concurrency=0, on_limit="drop")
        )

        async def dropped() -> bool:
            await _fetch_all(service, "rl-d")
            return (await service.get(job.id)).state is S.DISCARDED

        await ojs_time.until(dropped, what="the job dropped")
        stored = await service.get(job.id)
        assert stored.attempt == 0
        assert stored.error is not None
        assert stored.error.code == "rate_limited"
        await expect_events(ojs_time, service, ["rate_limit.dropped"], "rate_limit.dropped")

    async def test_wait_keeps_the_job_available(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """The default ``wait``: a held job stays ``available``; ``rate_limit.exceeded`` is
        emitted and the key reports it waiting."""
        job = await push(service, queue="rl-w", rate_limit=_limited("rl-w", concurrency=0))
        assert await _fetch_all(service, "rl-w") == []
        assert (await service.get(job.id)).state is S.AVAILABLE
        exceeded = await expect_events(
            ojs_time, service, ["rate_limit.exceeded"], "rate_limit.exceeded"
        )
        assert exceeded[0].data["key"] == "rl-w"
        assert exceeded[0].data["strategy"] == "concurrency"
        view = await service.rate_limits.get("rl-w")
        assert view["waiting_count"] == 1

    async def test_rate_limit_until_holds_the_key(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A failure with ``rate_limit_until`` stops the key's starts until then (§9)."""
        policy = _limited("rl-h", concurrency=5)
        a = await push(service, queue="rl-h", rate_limit=policy)
        await push(service, queue="rl-h", rate_limit=policy)
        (got,) = await service.fetch(["rl-h"], count=1)
        assert got.id == a.id
        until = service.now() + timedelta(hours=1)
        error = JobError(
            message="429 from upstream", details={"rate_limit_until": format_ts(until)}
        )
        await service.nack(a.id, error)
        assert await _fetch_all(service, "rl-h") == []
        view = await service.rate_limits.get("rl-h")
        assert view["held_until"] == format_ts(until)
        await expect_events(
            ojs_time, service, ["rate_limit.dynamic_adjusted"], "rate_limit.dynamic_adjusted"
        )

    async def test_an_override_replaces_the_limits_until_removed(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """``PUT /rate-limits/{key}`` with ``concurrency: 0`` pauses the key; an empty body
        removes the override."""
        job = await push(service, queue="rl-o", rate_limit=_limited("rl-o", concurrency=5))
        await service.rate_limits.override("rl-o", {"concurrency": 0})
        assert await _fetch_all(service, "rl-o") == []
        view = await service.rate_limits.get("rl-o")
        assert view["concurrency"]["limit"] == 0
        await service.rate_limits.override("rl-o", {})
        (got,) = await _claim_until(ojs_time, service, "rl-o", 1)
        assert got.id == job.id

    async def test_inspection_and_listing(self, service: JobService) -> None:
        """A key is listed once a job used it; an unknown key is 404; a bad one 400."""
        await push(service, queue="rl-i", rate_limit=_limited("rl-i", concurrency=3))
        await _fetch_all(service, "rl-i")
        keys = [v["key"] for v in await service.rate_limits.list()]
        assert "rl-i" in keys
        with pytest.raises(NotFoundError):
            await service.rate_limits.get("never-used")
        with pytest.raises(ValidationError):
            await service.rate_limits.get("bad key")

    async def test_a_lost_release_is_repaired_when_the_key_is_full(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A holder whose job is not active (its release lost to a crash) does not keep the
        slot: the next start finds it and drops it."""
        backend = service.backend
        if not isinstance(backend, RateLimitStore):
            pytest.skip("the backend does not store rate limits (RateLimitStore)")
        job = await push(service, queue="rl-x", rate_limit=_limited("rl-x", concurrency=1))

        def ghost(state: KeyState | None) -> KeyState:
            return attrs.evolve(state or KeyState(key="rl-x"), holders={"gone": (1, 0)})

        await backend.change_rate_limit("rl-x", ghost)
        (got,) = await _claim_until(ojs_time, service, "rl-x", 1)
        assert got.id == job.id
        state = await backend.get_rate_limit("rl-x")
        assert state is not None
        assert {k: v[0] for k, v in state.holders.items()} == {job.id: 1}

    async def test_a_job_that_expires_takes_no_slot(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A rate-limited job found expired at fetch is discarded without holding a slot."""
        policy = _limited("rl-e", concurrency=1)
        stale = await push(service, queue="rl-e", rate_limit=policy, expires_at="+PT0.2S")
        await ojs_time.advance(0.5, timers=False)
        fresh = await push(service, queue="rl-e", rate_limit=policy)
        (got,) = await _claim_until(ojs_time, service, "rl-e", 1)
        assert got.id == fresh.id
        assert (await service.get(stale.id)).state is S.DISCARDED
        view = await service.rate_limits.get("rl-e")
        assert view["concurrency"]["active"] == 1
