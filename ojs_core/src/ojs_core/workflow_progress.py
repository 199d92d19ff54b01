"""A workflow's progress, aggregated from its jobs (progress spec §9, PRG-R004).

Computed on read from the jobs' states and progress; nothing is stored. Per step: a completed
job is at 1.0; any other job at its reported fraction (a failed or cancelled one keeps what it
reached, §8.2); a job that never reported, or has not started, at ``null`` (counted as 0). A
step whose record was already removed by retention was finished, and counts as 1.0.

The aggregate follows §9.1: a ``batch`` is the share of its jobs completed; a ``chain``, a
``group`` and any other graph are the average of their steps (for a chain that is the spec's
"completed steps plus the current step's fraction, over the total"). A batch's callbacks are
not steps, as in the workflow's own ``steps_total``: they run after the batch's work is done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import NotFoundError
from .model import Job
from .states import JobState

if TYPE_CHECKING:
    from .service import JobService

__all__ = ["step_progress", "workflow_progress"]


def step_progress(job: Job | None) -> float | None:
    """One step's fraction done, ``None`` when nothing was reported and it is not finished."""
    if job is None or job.state is JobState.COMPLETED:
        return 1.0
    return None if job.progress is None else job.progress.value


async def workflow_progress(service: JobService, workflow_id: str) -> dict[str, Any]:
    """The spec's workflow progress body (§9.2): ``workflow_id``, ``type``, ``progress`` and one
    entry per step (``job_id``, ``type``, ``state``, ``progress``, ``data`` when reported).
    404 for an unknown workflow."""
    workflow = await service.backend.get_workflow(workflow_id)
    if workflow is None:
        raise NotFoundError("workflow", workflow_id)
    nodes = [node for node in workflow.nodes if node.role != "callback"]
    jobs = await service.backend.get_jobs([node.job_id for node in nodes])
    steps: list[dict[str, Any]] = []
    values: list[float] = []
    completed = 0
    for node, job in zip(nodes, jobs, strict=True):
        value = step_progress(job)
        values.append(value or 0.0)
        if job is None or job.state is JobState.COMPLETED:
            completed += 1
        step: dict[str, Any] = {
            "job_id": node.job_id,
            "type": None if job is None else job.type,
            "state": None if job is None else job.state.value,
            "progress": value,
        }
        if node.name is not None:
            step["name"] = node.name
        if job is not None and job.progress is not None and job.progress.data is not None:
            step["data"] = job.progress.data
        steps.append(step)
    total = len(nodes)
    if not total:
        overall = 0.0
    elif workflow.type == "batch":
        overall = completed / total
    else:
        overall = sum(values) / total
    return {
        "workflow_id": workflow_id,
        "type": workflow.type,
        "progress": round(overall, 6),
        "completed_steps": completed,
        "total_steps": total,
        "steps": steps,
    }
