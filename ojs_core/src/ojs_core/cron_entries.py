"""Cron entries of a :class:`~ojs_core.service.JobService`: registering, listing, toggling and
firing them (the schedule rules are :mod:`ojs_core.cron`). A tick fires once however many
replicas run it: its job id is derived from the entry and the tick."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from . import lifecycle
from .cron import next_fire, parse_cron_request
from .errors import (
    DuplicateJobError,
    InvalidStateTransitionError,
    NotFoundError,
    OJSError,
    QueueFullError,
)
from .events import make_event
from .ids import deterministic_uuid7
from .model import CronJob
from .timeutil import format_ts

if TYPE_CHECKING:
    from .service import JobService

__all__ = ["CronEntries"]

log = logging.getLogger("ojs.cron")


class CronEntries:
    """The cron operations of one service (``JobService.cron``)."""

    def __init__(self, service: JobService) -> None:
        self._svc = service

    async def register(self, body: Any) -> tuple[CronJob, bool]:
        """Create or replace a cron entry; returns it and whether it was new."""
        cron = parse_cron_request(body, self._svc.now())
        existing = await self._svc.backend.get_cron(cron.name)
        if existing is not None:
            cron = attrs.evolve(
                cron,
                created_at=existing.created_at,
                last_run_at=existing.last_run_at,
                last_job_id=existing.last_job_id,
                run_count=existing.run_count,
            )
        created = await self._svc.backend.put_cron(cron)
        return cron, created

    async def list(self) -> list[CronJob]:
        """Every cron entry."""
        return await self._svc.backend.list_crons()

    async def get(self, name: str) -> CronJob:
        """One cron entry, or 404."""
        cron = await self._svc.backend.get_cron(name)
        if cron is None:
            raise NotFoundError("cron job", name)
        return cron

    async def delete(self, name: str) -> CronJob:
        """Remove a cron entry (jobs it already enqueued stay)."""
        cron = await self._svc.backend.delete_cron(name)
        if cron is None:
            raise NotFoundError("cron job", name)
        return cron

    async def set_enabled(self, name: str, enabled: bool) -> CronJob:
        """Enable or disable a cron entry; ``next_run_at`` is recomputed on enable."""
        now = self._svc.now()

        def change(c: CronJob) -> CronJob:
            nxt = next_fire(c.expression, c.timezone, now, anchor=now) if enabled else None
            return attrs.evolve(c, enabled=enabled, next_run_at=nxt, updated_at=now)

        try:
            _, cron = await self._svc.backend.update_cron(name, change)
        except NotFoundError:
            raise NotFoundError("cron job", name) from None
        return cron

    async def run_due(self) -> int:
        """Fire every cron entry that is due; returns how many fired. Safe on every replica."""
        now = self._svc.now()
        fired = 0
        for cron in await self._svc.backend.list_crons():
            if cron.enabled and cron.next_run_at is not None and cron.next_run_at <= now:
                try:
                    fired += await self._fire(cron, now)
                except OJSError:
                    log.exception("cron %s failed to fire", cron.name)
        return fired

    async def _fire(self, cron: CronJob, now: datetime) -> int:
        tick = cron.next_run_at
        assert tick is not None
        job_id = deterministic_uuid7(int(tick.timestamp() * 1000), cron.name, format_ts(tick))
        skip_reason: str | None = None
        previous = await self._svc.backend.get_job(cron.last_job_id) if cron.last_job_id else None
        if previous is not None and not previous.state.terminal:
            if cron.overlap_policy == "skip":
                skip_reason = "overlap_skip"
            elif cron.overlap_policy == "cancel_previous":
                with contextlib.suppress(InvalidStateTransitionError, NotFoundError):
                    await self._svc._transition(previous.id, lifecycle.cancel)
        fired = fired_elsewhere = False
        if skip_reason is None:
            tpl = cron.job_template
            body = dict(tpl)
            meta = dict(tpl.get("meta") or {})
            meta.update({"cron_name": cron.name, "cron_triggered_at": format_ts(tick)})
            body["meta"] = meta
            body["id"] = job_id
            try:
                await self._svc.enqueue(body)
                fired = True
            except QueueFullError:
                skip_reason = "queue_full"  # the tick is skipped, not retried every pass
            except DuplicateJobError:
                # Another replica fired this tick (same deterministic id): record its job too,
                # so whichever replica advances the entry keeps last_job_id and run_count right.
                fired_elsewhere = await self._svc.backend.get_job(job_id) is not None

        def advance(c: CronJob) -> CronJob:
            if c.next_run_at != tick:
                return c
            return attrs.evolve(
                c,
                last_run_at=tick,
                next_run_at=next_fire(c.expression, c.timezone, max(now, tick), anchor=tick),
                run_count=c.run_count + (1 if fired or fired_elsewhere else 0),
                last_job_id=job_id if fired or fired_elsewhere else c.last_job_id,
            )

        try:
            await self._svc.backend.update_cron(cron.name, advance)
        except NotFoundError:
            return 0
        if fired_elsewhere:
            return 0  # the replica that enqueued the job reports the tick
        data: dict[str, Any] = {
            "cron_name": cron.name,
            "cron_expression": cron.expression,
            "job_id": job_id,
        }
        if skip_reason:
            data["reason"] = skip_reason
        if skip_reason == "overlap_skip":
            data["active_job_id"] = cron.last_job_id
        kind = "cron.triggered" if skip_reason is None else "cron.skipped"
        await self._svc._emit([make_event(kind, now, data, subject=cron.name)])
        return 1 if fired else 0
