"""Cron: registration, and each tick firing exactly once however many services run it.

Ticks use ``@every 1s`` so a real-time run waits about a second per tick.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import attrs
import pytest

from ...errors import NotFoundError, ValidationError
from ...ids import deterministic_uuid7
from ...model import CronJob
from ...service import JobService
from ...timeutil import format_ts
from ..helpers import events_of, expect_events, fetch_one
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestCron", "TestCronRecords"]

CRON: dict[str, Any] = {
    "name": "every-second",
    "expression": "@every 1s",
    "job_template": {"type": "c.tick", "args": [1]},
}


async def _tick(t: TimeControl, service: JobService, name: str = "every-second") -> CronJob:
    """Let time reach the entry's next run (without firing it); returns the entry."""
    cron = await service.get_cron(name)
    assert cron.next_run_at is not None
    await t.advance_to(cron.next_run_at)
    return cron


class TestCron(KitTest):
    """Ticks through :meth:`JobService.run_crons`."""

    async def test_fires_once_per_tick(self, service: JobService, ojs_time: TimeControl) -> None:
        """One due tick enqueues one job with a deterministic id; running again adds nothing."""
        cron, created = await service.register_cron(CRON)
        assert created
        assert cron.next_run_at is not None
        tick = cron.next_run_at
        if ojs_time.before(tick):
            assert await service.run_crons() == 0
        await ojs_time.just_before(tick)
        if ojs_time.before(tick):
            assert await service.run_crons() == 0
            assert await service.fetch(["default"]) == []
        await _tick(ojs_time, service)
        assert await service.run_crons() == 1
        assert await service.run_crons() == 0
        jobs = await service.fetch(["default"], count=10)
        assert len(jobs) == 1
        job = jobs[0]
        assert job.type == "c.tick"
        assert job.args == [1]
        assert job.meta["cron_name"] == "every-second"
        assert job.meta["cron_triggered_at"] == format_ts(tick)
        assert job.id == deterministic_uuid7(
            int(tick.timestamp() * 1000), "every-second", format_ts(tick)
        )
        entry = await service.get_cron("every-second")
        assert entry.run_count == 1
        assert entry.last_run_at == tick
        assert entry.last_job_id == job.id
        assert entry.next_run_at is not None
        # The schedule's next tick after the run: a second on, unless the run came later.
        assert entry.next_run_at > tick
        assert (entry.next_run_at - tick) % timedelta(seconds=1) == timedelta(0)
        if ojs_time.manual:
            assert entry.next_run_at == tick + timedelta(seconds=1)

    async def test_two_services_fire_a_tick_once(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Two services sharing one backend object run the same tick: one job, one event."""
        other = JobService(service.backend, clock=service.clock)
        await service.register_cron(CRON)
        await _tick(ojs_time, service)
        fired = await asyncio.gather(service.run_crons(), other.run_crons())
        assert sorted(fired) == [0, 1]
        jobs = await service.fetch(["default"], count=10)
        assert len(jobs) == 1
        entry = await other.get_cron("every-second")
        assert entry.run_count == 1
        assert entry.last_job_id == jobs[0].id
        await expect_events(ojs_time, service, ["cron.triggered"], "cron.triggered")
        # The next tick finds the first job still running (``skip`` is the default): on both.
        await _tick(ojs_time, service)
        assert list(await asyncio.gather(service.run_crons(), other.run_crons())) == [0, 0]
        assert await service.fetch(["default"]) == []

    async def test_two_replicas_fire_a_tick_once(
        self, service: JobService, replica_service: JobService, ojs_time: TimeControl
    ) -> None:
        """Two replicas (possibly two connections to one store) run ticks: each fires once."""
        await service.register_cron({**CRON, "overlap_policy": "allow"})
        for n in range(1, 3):
            await _tick(ojs_time, service)
            fired = await asyncio.gather(service.run_crons(), replica_service.run_crons())
            assert sorted(fired) == [0, 1]
            entry = await service.get_cron("every-second")
            assert entry.run_count == n
        assert len(await service.fetch(["default"], count=10)) == 2

    async def test_replayed_tick_is_deduplicated(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A stale replica firing an old tick again collides on the job id: no second job."""
        await service.register_cron(CRON)
        await _tick(ojs_time, service)
        assert await service.run_crons() == 1
        job = await fetch_one(service)
        await service.ack(job.id)
        entry = await service.get_cron("every-second")
        tick = entry.last_run_at
        assert tick is not None
        await service.backend.update_cron(
            "every-second", lambda c: attrs.evolve(c, next_run_at=tick, last_job_id=None)
        )
        assert await service.run_crons() == 0
        assert await service.fetch(["default"]) == []
        entry = await service.get_cron("every-second")
        assert entry.last_job_id == job.id
        assert entry.next_run_at is not None
        assert entry.next_run_at > tick

    async def test_overlap_skip_while_previous_runs(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """With ``skip`` a tick whose previous job is still active enqueues nothing."""
        await service.register_cron({**CRON, "overlap_policy": "skip"})
        await _tick(ojs_time, service)
        assert await service.run_crons() == 1
        first = await fetch_one(service)
        tick = (await _tick(ojs_time, service)).next_run_at
        assert tick is not None
        assert await service.run_crons() == 0
        assert await service.fetch(["default"]) == []
        skipped = await expect_events(ojs_time, service, ["cron.skipped"], "cron.skipped")
        assert skipped[0].data["reason"] == "overlap_skip"
        assert skipped[0].data["active_job_id"] == first.id
        entry = await service.get_cron("every-second")
        assert entry.run_count == 1
        assert entry.next_run_at is not None
        assert entry.next_run_at > tick
        await service.ack(first.id)
        await _tick(ojs_time, service)
        assert await service.run_crons() == 1
        assert (await service.get_cron("every-second")).run_count == 2

    async def test_disabled_entry_does_not_fire(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A disabled entry is skipped; enabling it schedules the next run from now."""
        await service.register_cron(CRON)
        disabled = await service.set_cron_enabled("every-second", False)
        assert not disabled.enabled
        await ojs_time.advance(1.1)
        assert await service.run_crons() == 0
        enabled = await service.set_cron_enabled("every-second", True)
        assert enabled.next_run_at is not None
        assert enabled.next_run_at > ojs_time.now() - timedelta(milliseconds=1)
        await _tick(ojs_time, service)
        assert await service.run_crons() == 1

    async def test_register_is_an_upsert(self, service: JobService) -> None:
        """Registering an existing name updates it (keeping its history) and says so."""
        _, created = await service.register_cron(CRON)
        assert created
        cron, created = await service.register_cron({**CRON, "expression": "*/5 * * * *"})
        assert not created
        assert cron.expression == "*/5 * * * *"
        assert [c.name for c in await service.crons()] == ["every-second"]
        assert (await service.get_cron("every-second")).expression == "*/5 * * * *"

    async def test_sdk_shape_and_validation(self, service: JobService) -> None:
        """The SDK's flat shape (``cron``, ``type``, ``args``) registers; invalid entries are
        validation errors and register nothing."""
        cron, _ = await service.register_cron(
            {"name": "sdk", "cron": "0 * * * *", "type": "c.sdk", "args": [1], "timezone": "UTC"}
        )
        assert cron.job_template["type"] == "c.sdk"
        assert cron.job_template["args"] == [1]
        for bad in (
            {"name": "x", "expression": "not cron", "job_template": {"type": "c.x"}},
            {"name": "x", "expression": "* * * * *", "job_template": {"type": "Bad Type"}},
            {"name": "x", "expression": "* * * * *", "timezone": "+02:00", "type": "c.x"},
            {"name": "x", "expression": "0 0 30 2 *", "type": "c.x"},  # February 30: never
            {"name": "x", "expression": "@every 0.0000000001ns", "type": "c.x"},
            {"name": "x", "expression": "* * * * *", "type": "c.x", "overlap_policy": ["skip"]},
        ):
            with pytest.raises(ValidationError):
                await service.register_cron(bad)
        assert [c.name for c in await service.crons()] == ["sdk"]

    async def test_delete(self, service: JobService) -> None:
        """A deleted entry is gone; deleting or reading it again is 404."""
        await service.register_cron(CRON)
        await service.register_cron({**CRON, "name": "another"})
        assert [c.name for c in await service.crons()] == ["another", "every-second"]
        removed = await service.delete_cron("every-second")
        assert removed.name == "every-second"
        assert [c.name for c in await service.crons()] == ["another"]
        with pytest.raises(NotFoundError):
            await service.delete_cron("every-second")
        with pytest.raises(NotFoundError):
            await service.get_cron("every-second")
        with pytest.raises(NotFoundError):
            await service.set_cron_enabled("every-second", True)


class TestCronRecords(KitTest):
    """The cron methods of the protocol directly."""

    async def test_put_get_list_delete(self, service: JobService) -> None:
        """``put_cron`` says whether the entry is new; records round-trip unchanged."""
        cron, _ = await service.register_cron(CRON)
        backend = service.backend
        changed = attrs.evolve(cron, description="described", run_count=7)
        assert await backend.put_cron(changed) is False
        assert await backend.get_cron(cron.name) == changed
        other = attrs.evolve(cron, name="b-entry")
        assert await backend.put_cron(other) is True
        assert [c.name for c in await backend.list_crons()] == ["b-entry", "every-second"]
        assert await backend.delete_cron("b-entry") == other
        assert await backend.delete_cron("b-entry") is None
        assert await backend.get_cron("b-entry") is None

    async def test_update_cron_is_compare_and_swap(
        self, service: JobService, replica_service: JobService
    ) -> None:
        """Thirty concurrent increments from two replicas lose none."""
        await service.register_cron(CRON)

        def bump(c: CronJob) -> CronJob:
            return attrs.evolve(c, run_count=c.run_count + 1)

        await asyncio.gather(
            *(
                svc.backend.update_cron("every-second", bump)
                for _ in range(15)
                for svc in (service, replica_service)
            )
        )
        assert (await service.get_cron("every-second")).run_count == 30
        with pytest.raises(NotFoundError):
            await service.backend.update_cron("unknown", bump)

    async def test_events_record_each_tick(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A fired tick publishes ``cron.triggered`` naming the entry and the job."""
        await service.register_cron(CRON)
        await _tick(ojs_time, service)
        await service.run_crons()
        events = await expect_events(ojs_time, service, ["cron.triggered"], "cron.*")
        assert events[0].data["cron_name"] == "every-second"
        job = await fetch_one(service)
        assert events[0].data["job_id"] == job.id
        assert await events_of(service, "cron.skipped") == []
