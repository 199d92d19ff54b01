"""A workflow whose advancement was interrupted (the process died between a step's ack and the
next step's activation) is finished by the timer that the terminal step carries."""

from __future__ import annotations

from datetime import timedelta

from ojs_core import lifecycle
from ojs_core.clock import ManualClock
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_memory import MemoryBackend


async def test_interrupted_chain_advances_on_its_timer() -> None:
    clock = ManualClock()
    svc = JobService(MemoryBackend(), clock=clock)
    wf = await svc.create_workflow(
        {
            "type": "chain",
            "name": "recover",
            "steps": [{"type": "a.one", "args": []}, {"type": "a.two", "args": []}],
        }
    )
    first_id, second_id = (s["job_id"] for s in wf["steps"])
    (job,) = await svc.fetch(["default"])
    assert job.id == first_id
    # Store the ack the way a backend would, but skip the follow-up (as if the process died).
    now = clock.now()
    _, acked = await svc.backend.update_job(first_id, lambda j: lifecycle.ack(j, now, {"r": 1}))
    assert acked.workflow_pending
    assert lifecycle.timer_deadline(acked) == now + lifecycle.WORKFLOW_ADVANCE_GRACE
    second = await svc.backend.get_job(second_id)
    assert second is not None
    assert second.state is JobState.PENDING

    clock.advance(ms=1999)
    await svc.run_timers()
    second = await svc.backend.get_job(second_id)
    assert second is not None
    assert second.state is JobState.PENDING

    clock.advance(ms=1)
    assert await svc.run_timers() == 1
    second = await svc.backend.get_job(second_id)
    assert second is not None
    assert second.state is JobState.AVAILABLE
    assert second.parent_results == [{"r": 1}]
    first = await svc.backend.get_job(first_id)
    assert first is not None
    assert not first.workflow_pending
    # What remains is the retention deadline, not the workflow's.
    assert first.retain_until is not None
    assert lifecycle.timer_deadline(first) == first.retain_until
    assert first.retain_until - now >= timedelta(days=7)


async def test_normal_completion_clears_the_mark_at_once() -> None:
    clock = ManualClock()
    svc = JobService(MemoryBackend(), clock=clock)
    wf = await svc.create_workflow(
        {"type": "group", "name": "g", "jobs": [{"type": "a.one", "args": []}]}
    )
    (job,) = await svc.fetch(["default"])
    done = await svc.ack(job.id)
    stored = await svc.backend.get_job(done.id)
    assert stored is not None
    assert not stored.workflow_pending
    assert (await svc.get_workflow(wf["id"]))["state"] == "completed"
    clock.advance(timedelta(seconds=5).total_seconds())
    assert await svc.run_timers() == 0
