"""Workflows as dependency graphs of jobs: definitions, advancement rules and derived state.

Chains, groups and batches (and the SDK's explicit ``depends_on`` graph) all compile to one
form: a list of :class:`~ojs_core.model.WorkflowNode`, each a job plus the nodes it waits for
and a trigger. Every job is created up front - roots ``available``, the rest ``pending`` - so a
workflow is written in one atomic insert, and advancing it is the idempotent
``pending -> available`` (or ``-> cancelled``) of individual jobs. The workflow's state and
counters are derived from its jobs' states rather than kept as counters, so concurrent
completions cannot lose an update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from .envelope import parse_enqueue
from .errors import ValidationError
from .ids import uuid7
from .model import Job, Workflow, WorkflowNode
from .states import JobState
from .timeutil import format_ts

__all__ = [
    "Advance",
    "compile_workflow",
    "next_actions",
    "workflow_state",
    "workflow_to_wire",
]

S = JobState
_CALLBACK_TRIGGERS = {"on_complete": "complete", "on_success": "success", "on_failure": "failure"}


class _Builder:
    def __init__(
        self, now: datetime, workflow_id: str, max_steps: int = 1000, max_depth: int = 32
    ) -> None:
        self.now = now
        self.workflow_id = workflow_id
        self.max_steps = max_steps
        self.max_depth = max_depth
        self.nodes: list[WorkflowNode] = []
        self.jobs: list[Job] = []

    def leaf(
        self,
        spec: Any,
        deps: tuple[int, ...],
        path: str,
        *,
        trigger: str = "success",
        role: str = "step",
        name: str | None = None,
    ) -> int:
        if not isinstance(spec, Mapping):
            raise ValidationError("must be an object", path=path, code="invalid_workflow")
        if len(self.nodes) >= self.max_steps:
            raise ValidationError(
                f"a workflow has at most {self.max_steps} steps (callbacks included)",
                path=path,
                code="invalid_workflow",
                details={"maximum": self.max_steps},
            )
        body = {k: v for k, v in spec.items() if k not in ("depends_on", "name")}
        body.pop("id", None)  # step ids name graph nodes, not job ids
        if "args" not in body:
            body["args"] = []
        options_raw = body.get("options") or {}
        if not isinstance(options_raw, Mapping):
            raise ValidationError("must be an object", path=f"{path}.options")
        options = dict(options_raw)
        options.pop("callback_type", None)
        if deps:
            options["pending"] = True
        body["options"] = options
        job = parse_enqueue(body, now=self.now, path=path)
        index = len(self.nodes)
        job = attrs.evolve(job, workflow_id=self.workflow_id, workflow_node=index)
        self.jobs.append(job)
        self.nodes.append(
            WorkflowNode(job_id=job.id, depends_on=deps, trigger=trigger, role=role, name=name)
        )
        return index

    def node(self, spec: Any, deps: tuple[int, ...], path: str, depth: int = 0) -> tuple[int, ...]:
        """Compile ``spec`` to run after ``deps``; returns the nodes that finish it."""
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        if kind in ("chain", "group", "batch") and depth >= self.max_depth:
            raise ValidationError(
                f"chains and groups nest at most {self.max_depth} deep",
                path=path or "type",
                code="invalid_workflow",
                details={"maximum": self.max_depth},
            )
        if kind == "chain":
            prev = deps
            steps = spec.get("steps", spec.get("jobs"))
            for i, step in enumerate(self._list(steps, f"{path}.steps")):
                prev = self.node(step, prev, f"{path}.steps[{i}]", depth + 1)
            return prev
        if kind in ("group", "batch"):
            exits: list[int] = []
            for i, job in enumerate(self._list(spec.get("jobs"), f"{path}.jobs")):
                exits.extend(self.node(job, deps, f"{path}.jobs[{i}]", depth + 1))
            if kind == "batch":
                callbacks = spec.get("callbacks") or {}
                if not isinstance(callbacks, Mapping):
                    raise ValidationError(
                        "must be an object", path=f"{path}.callbacks", code="invalid_workflow"
                    )
                cb_exits = [
                    self.leaf(
                        callbacks[key],
                        tuple(exits),
                        f"{path}.callbacks.{key}",
                        trigger=trigger,
                        role="callback",
                        name=key,
                    )
                    for key, trigger in _CALLBACK_TRIGGERS.items()
                    if callbacks.get(key) is not None
                ]
                return tuple(cb_exits) or tuple(exits)
            return tuple(exits)
        return (self.leaf(spec, deps, path),)

    @staticmethod
    def _list(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise ValidationError("must be a non-empty array", path=path, code="invalid_workflow")
        return value

    def graph(self, steps: Any, path: str) -> None:
        """The binding/SDK form: ``steps[{id, type, args, depends_on, options}]``."""
        items = self._list(steps, path)
        if len(items) > self.max_steps:
            raise ValidationError(
                f"a workflow has at most {self.max_steps} steps, got {len(items)}",
                path=path,
                code="invalid_workflow",
                details={"maximum": self.max_steps},
            )
        ids: dict[str, int] = {}
        for i, step in enumerate(items):
            if not isinstance(step, Mapping):
                raise ValidationError("must be an object", path=f"{path}[{i}]")
            sid = step.get("id", f"step-{i}")
            if not isinstance(sid, str) or sid in ids:
                raise ValidationError(
                    "step ids must be unique strings",
                    path=f"{path}[{i}].id",
                    code="invalid_workflow",
                )
            ids[sid] = i
        order = _topological(items, ids, path)
        index_of: dict[int, int] = {}
        for i in order:
            step = items[i]
            deps = tuple(index_of[ids[d]] for d in step.get("depends_on") or [])
            options = step.get("options") or {}
            cb = options.get("callback_type") if isinstance(options, Mapping) else None
            cb = cb if isinstance(cb, str) else None
            sid = step.get("id", f"step-{i}")
            trigger = _CALLBACK_TRIGGERS.get(cb or sid, "success") if deps else "success"
            role = "callback" if (cb or sid) in _CALLBACK_TRIGGERS and deps else "step"
            index_of[i] = self.leaf(
                step, deps, f"{path}[{i}]", trigger=trigger, role=role, name=sid
            )


def _topological(items: list[Any], ids: dict[str, int], path: str) -> list[int]:
    deps: dict[int, list[int]] = {}
    for i, step in enumerate(items):
        raw = step.get("depends_on") or []
        if not isinstance(raw, list):
            raise ValidationError(
                "must be an array", path=f"{path}[{i}].depends_on", code="invalid_workflow"
            )
        missing = [d for d in raw if not isinstance(d, str) or d not in ids]
        if missing:
            raise ValidationError(
                f"unknown step id(s) {missing}",
                path=f"{path}[{i}].depends_on",
                code="invalid_workflow",
            )
        deps[i] = [ids[d] for d in raw]
    # Depth-first with an explicit stack: a long chain of depends_on must not hit Python's
    # recursion limit (a RecursionError would be a 500 for a well-formed request).
    order: list[int] = []
    state: dict[int, int] = {}
    for root in range(len(items)):
        if state.get(root) == 2:
            continue
        stack: list[tuple[int, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            i, next_dep = stack[-1]
            if next_dep < len(deps[i]):
                stack[-1] = (i, next_dep + 1)
                d = deps[i][next_dep]
                if state.get(d) == 1:
                    raise ValidationError(
                        "dependency cycle", path=f"{path}[{d}].depends_on", code="invalid_workflow"
                    )
                if state.get(d) != 2:
                    state[d] = 1
                    stack.append((d, 0))
                continue
            stack.pop()
            state[i] = 2
            order.append(i)
    return order


def compile_workflow(
    body: Any, now: datetime, *, max_steps: int = 1000, max_depth: int = 32
) -> tuple[Workflow, list[Job]]:
    """Turn a workflow request (chain, group, batch or graph) into its record and all its jobs.

    At most ``max_steps`` jobs (callbacks included), and chains and groups nested at most
    ``max_depth`` deep; beyond either it is a 400 naming the limit.
    """
    if not isinstance(body, Mapping):
        raise ValidationError("workflow must be a JSON object", code="invalid_workflow")
    wid = uuid7(int(now.timestamp() * 1000))
    builder = _Builder(now, wid, max_steps, max_depth)
    kind = body.get("type")
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise ValidationError("must be a string", path="name", code="invalid_workflow")
    if kind in ("chain", "group", "batch"):
        if kind == "batch" and not body.get("callbacks"):
            raise ValidationError(
                "a batch needs at least one callback", path="callbacks", code="invalid_workflow"
            )
        builder.node(body, (), "")
    elif kind in (None, "dag", "graph", "workflow"):
        builder.graph(body.get("steps"), "steps")
        kind = "dag" if kind is None else kind
    else:
        raise ValidationError(
            "must be chain, group or batch (or omitted with steps[].depends_on)",
            path="type",
            code="invalid_workflow",
        )
    meta = body.get("meta") or body.get("metadata") or {}
    workflow = Workflow(
        id=wid,
        type=str(kind),
        name=name,
        nodes=builder.nodes,
        created_at=now,
        meta=dict(meta) if isinstance(meta, Mapping) else {},
    )
    return workflow, builder.jobs


@attrs.frozen
class Advance:
    """What to do next: nodes to make available (with their parents' results), nodes to cancel."""

    activate: tuple[tuple[int, list[Any]], ...] = ()
    cancel: tuple[int, ...] = ()


def next_actions(workflow: Workflow, jobs: Sequence[Job | None]) -> Advance:
    """Which pending nodes can now run and which can never run, given every node's job."""
    activate: list[tuple[int, list[Any]]] = []
    cancel: list[int] = []
    for i, node in enumerate(workflow.nodes):
        job = jobs[i]
        if job is None or job.state is not S.PENDING or not node.depends_on:
            continue
        deps = [jobs[d] for d in node.depends_on]
        states = [d.state if d is not None else S.CANCELLED for d in deps]
        all_done = all(s.terminal for s in states)
        all_ok = all(s is S.COMPLETED for s in states)
        if workflow.cancelled_at is not None:
            cancel.append(i)
        elif node.trigger == "success":
            if all_ok:
                activate.append((i, [d.result if d else None for d in deps]))
            elif any(s.terminal and s is not S.COMPLETED for s in states):
                cancel.append(i)
        elif all_done:
            if node.trigger == "complete" or not all_ok:
                activate.append((i, [d.result if d else None for d in deps]))
            else:
                cancel.append(i)
    return Advance(activate=tuple(activate), cancel=tuple(cancel))


def workflow_state(workflow: Workflow, jobs: Sequence[Job | None]) -> str:
    """``running``, ``completed``, ``failed`` or ``cancelled``, derived from the jobs."""
    if workflow.cancelled_at is not None:
        return "cancelled"
    states = [j.state if j else S.CANCELLED for j in jobs]
    if not all(s.terminal for s in states):
        return "running"
    # A batch is judged by the callbacks that ran (workflows §6); when none ran - or there are
    # none - by its jobs: any job that did not complete fails the workflow.
    fired = [
        i
        for i, n in enumerate(workflow.nodes)
        if n.role == "callback" and states[i] is not S.CANCELLED
    ]
    if fired:
        return "failed" if any(states[i] is S.DISCARDED for i in fired) else "completed"
    steps = [states[i] for i, n in enumerate(workflow.nodes) if n.role != "callback"]
    return "completed" if all(s is S.COMPLETED for s in steps) else "failed"


def workflow_to_wire(workflow: Workflow, jobs: Sequence[Job | None]) -> dict[str, Any]:
    """The union of the openapi/suite shape and the binding/SDK shape of a workflow."""
    state = workflow_state(workflow, jobs)
    steps: list[dict[str, Any]] = []
    counted = completed = failed = 0
    last_done: datetime | None = None
    started: datetime | None = None
    for i, node in enumerate(workflow.nodes):
        job = jobs[i]
        jstate = job.state if job else S.CANCELLED
        step: dict[str, Any] = {
            "index": i,
            "id": node.name or f"step-{i}",
            "job_id": node.job_id,
            "type": job.type if job else None,
            "state": jstate.value,
            "depends_on": [workflow.nodes[d].name or f"step-{d}" for d in node.depends_on],
        }
        if node.role == "callback":
            step["callback"] = node.name
        if job is not None:
            if job.result is not None:
                step["result"] = job.result
            if job.started_at is not None:
                step["started_at"] = format_ts(job.started_at)
                started = min(started, job.started_at) if started else job.started_at
            done = job.completed_at or job.cancelled_at or job.discarded_at
            if done is not None:
                step["completed_at"] = format_ts(done)
                last_done = max(last_done, done) if last_done else done
        steps.append(step)
        if node.role != "callback":
            counted += 1
            completed += jstate is S.COMPLETED
            failed += jstate is S.DISCARDED
    out: dict[str, Any] = {
        "id": workflow.id,
        "name": workflow.name or workflow.id,
        "type": workflow.type,
        "state": state,
        "steps_total": counted,
        "steps_completed": completed,
        "jobs_total": counted,
        "jobs_completed": completed,
        "failed_count": failed,
        "created_at": format_ts(workflow.created_at),
        "steps": steps,
        "jobs": steps,
        "metadata": {
            "created_at": format_ts(workflow.created_at),
            "job_count": counted,
            "completed_count": completed,
            "failed_count": failed,
        },
    }
    callbacks = {s["callback"]: s for s in steps if "callback" in s}
    if callbacks:
        out["callbacks"] = callbacks
    if started is not None:
        out["started_at"] = format_ts(started)
    if workflow.cancelled_at is not None:
        out["cancelled_at"] = format_ts(workflow.cancelled_at)
    if state in ("completed", "failed") and last_done is not None:
        out["completed_at"] = format_ts(last_done)
    return out
