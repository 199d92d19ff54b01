"""Workflows: chains, groups, batches and graphs written atomically and advanced job by job."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest

from ...errors import ConflictError, DuplicateJobError, NotFoundError
from ...ids import uuid7
from ...model import Job, Workflow, WorkflowNode
from ...service import JobService
from ...states import JobState
from ..helpers import expect_events, fetch_one, job_error, push, run_one
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestWorkflowRecords", "TestWorkflows"]

S = JobState
ONE_TRY: dict[str, Any] = {"retry": {"max_attempts": 1}}


#: The batch callbacks and the job type each runs in ``test_batch_callbacks``.
CALLBACKS = {"on_success": "b.success", "on_failure": "b.failure", "on_complete": "b.complete"}


def _callback_states(wf: dict[str, Any]) -> dict[str, str]:
    return {name: step["state"] for name, step in wf["callbacks"].items()}


def _step(jtype: str, *args: Any, **options: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"type": jtype, "args": list(args)}
    if options:
        step["options"] = options
    return step


class TestWorkflows(KitTest):
    """Workflow behaviour through the service."""

    async def test_chain_runs_in_order_passing_results(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """Each chain step waits for the previous one and receives its result."""
        wf = await service.create_workflow(
            {
                "type": "chain",
                "name": "pipeline",
                "steps": [_step("etl.extract", 1), _step("etl.transform"), _step("etl.load")],
            }
        )
        assert wf["state"] == "running"
        assert wf["name"] == "pipeline"
        assert [s["state"] for s in wf["steps"]] == ["available", "pending", "pending"]
        first = await fetch_one(service)
        assert first.type == "etl.extract"
        assert first.workflow_id == wf["id"]
        assert await service.fetch(["default"]) == []
        await service.ack(first.id, {"rows": 3})
        second = await fetch_one(service)
        assert second.type == "etl.transform"
        assert second.parent_results == [{"rows": 3}]
        await service.ack(second.id, "transformed")
        third = await fetch_one(service)
        assert third.parent_results == ["transformed"]
        await service.ack(third.id)
        done = await service.get_workflow(wf["id"])
        assert done["state"] == "completed"
        assert done["steps_completed"] == 3
        assert [s["state"] for s in done["steps"]] == ["completed"] * 3
        await expect_events(
            ojs_time, service, ["workflow.started", "workflow.completed"], "workflow.*"
        )

    async def test_chain_failure_cancels_the_rest(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """A discarded step fails the chain; the steps after it are cancelled."""
        wf = await service.create_workflow(
            {"type": "chain", "steps": [_step("c.a", **ONE_TRY), _step("c.b"), _step("c.c")]}
        )
        job = await fetch_one(service)
        await service.nack(job.id, job_error())
        out = await service.get_workflow(wf["id"])
        assert out["state"] == "failed"
        assert [s["state"] for s in out["steps"]] == ["discarded", "cancelled", "cancelled"]
        assert await service.fetch(["default"]) == []
        await expect_events(ojs_time, service, ["workflow.failed"], "workflow.failed")

    async def test_group_runs_in_parallel(self, service: JobService, ojs_time: TimeControl) -> None:
        """All group jobs are available at once; the group completes when all have."""
        wf = await service.create_workflow(
            {"type": "group", "jobs": [_step("g.a"), _step("g.b"), _step("g.c")]}
        )
        assert [s["state"] for s in wf["steps"]] == ["available"] * 3
        jobs = await service.fetch(["default"], count=5)
        assert sorted(j.type for j in jobs) == ["g.a", "g.b", "g.c"]
        for job in jobs[:2]:
            await service.ack(job.id)
        assert (await service.get_workflow(wf["id"]))["state"] == "running"
        await service.ack(jobs[2].id)
        assert (await service.get_workflow(wf["id"]))["state"] == "completed"
        events = await expect_events(
            ojs_time, service, ["workflow.completed"], "workflow.completed", "workflow.failed"
        )
        assert events[0].data["workflow_id"] == wf["id"]

    async def test_group_failure_does_not_stop_siblings(
        self, service: JobService, ojs_time: TimeControl
    ) -> None:
        """One failed group job fails the group; its siblings still run to the end."""
        wf = await service.create_workflow(
            {"type": "group", "jobs": [_step("g.bad", **ONE_TRY), _step("g.ok")]}
        )
        jobs = {j.type: j for j in await service.fetch(["default"], count=5)}
        await service.nack(jobs["g.bad"].id, job_error())
        assert (await service.get_workflow(wf["id"]))["state"] == "running"
        await service.ack(jobs["g.ok"].id)
        out = await service.get_workflow(wf["id"])
        assert out["state"] == "failed"
        assert out["failed_count"] == 1
        events = await expect_events(
            ojs_time, service, ["workflow.failed"], "workflow.completed", "workflow.failed"
        )
        assert events[0].data["workflow_id"] == wf["id"]

    @pytest.mark.parametrize("outcome", ["success", "failure"])
    async def test_batch_callbacks(self, service: JobService, outcome: str) -> None:
        """A batch runs ``on_complete`` always and ``on_success``/``on_failure`` as fitting."""
        wf = await service.create_workflow(
            {
                "type": "batch",
                "jobs": [_step("b.one", **ONE_TRY), _step("b.two")],
                "callbacks": {
                    "on_complete": _step("b.complete"),
                    "on_success": _step("b.success"),
                    "on_failure": _step("b.failure"),
                },
            }
        )
        assert _callback_states(wf) == dict.fromkeys(CALLBACKS, "pending")
        jobs = {j.type: j for j in await service.fetch(["default"], count=5)}
        assert set(jobs) == {"b.one", "b.two"}
        if outcome == "success":
            await service.ack(jobs["b.one"].id, 1)
        else:
            await service.nack(jobs["b.one"].id, job_error())
            # on_success can never run now; on_failure waits for every job to finish.
            mid = _callback_states(await service.get_workflow(wf["id"]))
            assert (mid["on_success"], mid["on_failure"]) == ("cancelled", "pending")
        await service.ack(jobs["b.two"].id, 2)
        ran, skipped = ("on_success", "on_failure")
        if outcome == "failure":
            ran, skipped = skipped, ran
        assert _callback_states(await service.get_workflow(wf["id"])) == {
            ran: "available",
            skipped: "cancelled",
            "on_complete": "available",
        }
        callbacks = {j.type: j for j in await service.fetch(["default"], count=5)}
        expected = {"b.complete", "b.success" if outcome == "success" else "b.failure"}
        assert set(callbacks) == expected
        results = [1, 2] if outcome == "success" else [2, None]
        assert sorted(callbacks["b.complete"].parent_results or [], key=str) == results
        if outcome == "success":
            assert sorted(callbacks["b.success"].parent_results or []) == results
        for job in callbacks.values():
            await service.ack(job.id)
        out = await service.get_workflow(wf["id"])
        assert out["state"] == "completed"
        states = {s["type"]: s["state"] for s in out["steps"]}
        assert states[CALLBACKS[skipped]] == "cancelled"

    async def test_graph_join_gets_all_parent_results(self, service: JobService) -> None:
        """A step depending on two others runs after both, with both results."""
        wf = await service.create_workflow(
            {
                "steps": [
                    {"id": "fetch", "type": "d.fetch", "args": []},
                    {"id": "left", "type": "d.left", "args": [], "depends_on": ["fetch"]},
                    {"id": "right", "type": "d.right", "args": [], "depends_on": ["fetch"]},
                    {"id": "join", "type": "d.join", "args": [], "depends_on": ["left", "right"]},
                ],
            }
        )
        assert wf["type"] == "dag"
        assert [s["id"] for s in wf["steps"]] == ["fetch", "left", "right", "join"]
        await run_one(service, result="f")
        mids = await service.fetch(["default"], count=5)
        assert sorted(j.type for j in mids) == ["d.left", "d.right"]
        for job in mids:
            assert job.parent_results == ["f"]
            await service.ack(job.id, job.type)
        join = await fetch_one(service)
        assert join.type == "d.join"
        assert sorted(join.parent_results or []) == ["d.left", "d.right"]
        await service.ack(join.id)
        assert (await service.get_workflow(wf["id"]))["state"] == "completed"

    async def test_concurrent_completions_fire_the_join_once(
        self, service: JobService, replica_service: JobService
    ) -> None:
        """Parallel steps finishing at once on two replicas make the next step ready once."""
        wf = await service.create_workflow(
            {
                "type": "batch",
                "jobs": [_step("p.a"), _step("p.b"), _step("p.c"), _step("p.d")],
                "callbacks": {"on_complete": _step("p.done")},
            }
        )
        jobs = await service.fetch(["default"], count=10)
        assert len(jobs) == 4
        await asyncio.gather(
            *((service if i % 2 else replica_service).ack(j.id, j.type) for i, j in enumerate(jobs))
        )
        callback = await fetch_one(service)
        assert callback.type == "p.done"
        assert sorted(callback.parent_results or []) == ["p.a", "p.b", "p.c", "p.d"]
        assert await service.fetch(["default"]) == []
        await service.ack(callback.id)
        assert (await service.get_workflow(wf["id"]))["state"] == "completed"

    async def test_cancel_stops_what_has_not_started(self, service: JobService) -> None:
        """Cancelling cancels pending and available steps; a running step may finish."""
        wf = await service.create_workflow(
            {
                "type": "group",
                "jobs": [
                    {"type": "chain", "steps": [_step("x.run"), _step("x.after")]},
                    _step("x.idle", queue="other"),
                ],
            }
        )
        running = await fetch_one(service)
        out = await service.cancel_workflow(wf["id"])
        assert out["state"] == "cancelled"
        states = {s["type"]: s["state"] for s in out["steps"]}
        assert states == {"x.run": "active", "x.after": "cancelled", "x.idle": "cancelled"}
        assert await service.fetch(["other"]) == []
        await service.ack(running.id)
        after = await service.get_workflow(wf["id"])
        assert after["state"] == "cancelled"
        assert {s["type"]: s["state"] for s in after["steps"]}["x.run"] == "completed"
        assert await service.fetch(["default"]) == []
        with pytest.raises(ConflictError):
            await service.cancel_workflow(wf["id"])

    async def test_non_string_callback_type_is_an_ordinary_step(self, service: JobService) -> None:
        """A ``callback_type`` that is not a string is ignored: the step runs after success."""
        wf = await service.create_workflow(
            {
                "steps": [
                    {"id": "a", "type": "x.a"},
                    {
                        "id": "b",
                        "type": "x.b",
                        "depends_on": ["a"],
                        "options": {"callback_type": ["on_failure"]},
                    },
                ]
            }
        )
        assert "callbacks" not in wf
        await run_one(service)
        assert (await fetch_one(service)).type == "x.b"

    async def test_unknown_workflow(self, service: JobService) -> None:
        """Reading or cancelling an unknown workflow is 404."""
        with pytest.raises(NotFoundError):
            await service.get_workflow(uuid7())
        with pytest.raises(NotFoundError):
            await service.cancel_workflow(uuid7())


class TestWorkflowRecords(KitTest):
    """``insert_workflow``, ``get_workflow`` and ``update_workflow`` directly."""

    @staticmethod
    def _record(jobs: list[Job], now: Any) -> Workflow:
        return Workflow(
            id=uuid7(),
            type="group",
            name="direct",
            nodes=[WorkflowNode(job_id=j.id) for j in jobs],
            created_at=now,
        )

    async def test_insert_is_all_or_nothing(self, service: JobService) -> None:
        """A workflow whose jobs collide with an existing id writes neither record nor jobs."""
        existing = await push(service)
        now = service.now()
        fresh = Job(id=uuid7(), type="w.fresh", created_at=now, enqueued_at=now)
        record = self._record([fresh, existing], now)
        with pytest.raises(DuplicateJobError):
            await service.backend.insert_workflow(record, [fresh, existing])
        assert await service.backend.get_workflow(record.id) is None
        assert await service.backend.get_job(fresh.id) is None
        assert [j.id for j in await service.fetch(["default"], count=5)] == [existing.id]

    async def test_record_round_trips_and_updates(self, service: JobService) -> None:
        """The stored record equals the one written; updates apply by compare-and-swap."""
        now = service.now()
        jobs = [Job(id=uuid7(), type="w.j", created_at=now, enqueued_at=now) for _ in range(2)]
        record = attrs.evolve(self._record(jobs, now), meta={"k": [1, "v"]})
        await service.backend.insert_workflow(record, jobs)
        assert await service.backend.get_workflow(record.id) == record
        assert await service.backend.get_jobs([j.id for j in jobs]) == jobs
        before, after = await service.backend.update_workflow(
            record.id, lambda w: attrs.evolve(w, cancelled_at=now)
        )
        assert before == record
        assert after.cancelled_at == now
        assert await service.backend.get_workflow(record.id) == after
        with pytest.raises(NotFoundError):
            await service.backend.update_workflow(uuid7(), lambda w: w)
