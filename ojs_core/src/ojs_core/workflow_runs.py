"""Workflows of a :class:`~ojs_core.service.JobService`: creating, reading, cancelling and
advancing them (chains, groups and batches; the rules are :mod:`ojs_core.workflow`)."""

from __future__ import annotations

import contextlib
import functools
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from . import lifecycle
from .errors import ConflictError, InvalidStateTransitionError, NotFoundError
from .events import make_event, transition_events
from .model import Job, Workflow
from .states import JobState
from .workflow import compile_workflow, next_actions, workflow_state, workflow_to_wire

if TYPE_CHECKING:
    from .service import JobService, TimedFn

__all__ = ["WorkflowRuns"]

S = JobState


class WorkflowRuns:
    """The workflow operations of one service (``JobService.workflows``)."""

    def __init__(self, service: JobService) -> None:
        self._svc = service

    async def create(self, body: Any, *, tenant: str | None = None) -> dict[str, Any]:
        """Compile and store a workflow; its root jobs are available at once. Its jobs belong
        to one tenant (``tenant``, or the one its steps name)."""
        now = self._svc.now()
        workflow, jobs = compile_workflow(
            body,
            now,
            max_steps=self._svc.limits.max_workflow_steps,
            max_depth=self._svc.limits.max_workflow_depth,
        )
        jobs = self._svc.tenancy.unify_workflow([self._svc._prepare(j) for j in jobs], tenant)
        async with self._svc.tenancy.admitting(jobs) as jobs, self._svc.gate.admit(jobs):
            await self._svc.backend.insert_workflow(workflow, jobs)
        events = [
            make_event(
                "workflow.started",
                now,
                {
                    "workflow_id": workflow.id,
                    "workflow_name": workflow.name,
                    "workflow_type": workflow.type,
                    "total_steps": len(workflow.nodes),
                },
                subject=workflow.id,
            )
        ]
        for job in jobs:
            events.extend(transition_events(None, job, now))
        await self._svc._emit(events)
        self._svc._job_arrived.set()
        return workflow_to_wire(workflow, jobs)

    async def _jobs(self, workflow: Workflow) -> list[Job | None]:
        return await self._svc.backend.get_jobs([n.job_id for n in workflow.nodes])

    async def get(self, workflow_id: str) -> dict[str, Any]:
        """The workflow with its derived state and per-step detail."""
        workflow = await self._svc.backend.get_workflow(workflow_id)
        if workflow is None:
            raise NotFoundError("workflow", workflow_id)
        return workflow_to_wire(workflow, await self._jobs(workflow))

    async def cancel(self, workflow_id: str) -> dict[str, Any]:
        """Cancel every job that has not started; running ones may finish. 409 if terminal."""
        workflow = await self._svc.backend.get_workflow(workflow_id)
        if workflow is None:
            raise NotFoundError("workflow", workflow_id)
        jobs = await self._jobs(workflow)
        state = workflow_state(workflow, jobs)
        if state != "running":
            raise ConflictError(
                f"Workflow '{workflow_id}' is already {state}",
                details={"workflow_id": workflow_id, "current_state": state},
            )
        now = self._svc.now()
        _, workflow = await self._svc.backend.update_workflow(
            workflow_id, lambda w: w if w.cancelled_at else attrs.evolve(w, cancelled_at=now)
        )
        for job in jobs:
            if job is not None and not job.state.terminal and job.state is not S.ACTIVE:
                with contextlib.suppress(InvalidStateTransitionError, NotFoundError):
                    await self._svc._transition(job.id, lifecycle.cancel)
        await self._svc._emit(
            [make_event("workflow.cancelled", now, {"workflow_id": workflow_id}, workflow_id)]
        )
        return workflow_to_wire(workflow, await self._jobs(workflow))

    async def advance(self, workflow_id: str, changed: Job | None = None) -> None:
        """Make ready steps available and cancel steps that can no longer run; idempotent.

        ``changed`` is the version of a job before the transition that prompted this call: the
        workflow's previous state is judged with it, so the transition that finishes the
        workflow emits ``workflow.completed``/``workflow.failed``.
        """
        workflow = await self._svc.backend.get_workflow(workflow_id)
        if workflow is None:
            return
        jobs = await self._jobs(workflow)
        was = workflow_state(
            workflow,
            [changed if changed and j and j.id == changed.id else j for j in jobs],
        )
        for _ in range(len(workflow.nodes) + 1):
            actions = next_actions(workflow, jobs)
            if not actions.activate and not actions.cancel:
                break
            now = self._svc.now()
            for index, results in actions.activate:
                await self._apply_step(
                    workflow.nodes[index].job_id,
                    functools.partial(lifecycle.activate_pending, parent_results=results),
                    now,
                )
            for index in actions.cancel:
                await self._apply_step(workflow.nodes[index].job_id, lifecycle.cancel, now)
            jobs = await self._jobs(workflow)
        now_state = workflow_state(workflow, jobs)
        if now_state != was and now_state in ("completed", "failed"):
            await self._svc._emit(
                [
                    make_event(
                        f"workflow.{now_state}",
                        self._svc.now(),
                        {"workflow_id": workflow_id, "workflow_name": workflow.name},
                        subject=workflow_id,
                    )
                ]
            )

    async def _apply_step(self, job_id: str, fn: TimedFn, now: datetime) -> None:
        try:
            before, after = await self._svc._update(job_id, lambda j: fn(j, now), now)
        except (ConflictError, NotFoundError):
            return  # another replica advanced it first
        if after is not before:
            await self._svc._emit(transition_events(before, after, now))
            if after.state is S.AVAILABLE:
                self._svc._job_arrived.set()
