"""Workflows: compilation, advancement and derived state (digest §9)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ojs_core import lifecycle
from ojs_core.errors import ValidationError
from ojs_core.ids import is_uuid7
from ojs_core.model import Job, JobError, Workflow
from ojs_core.states import JobState
from ojs_core.workflow import (
    Advance,
    compile_workflow,
    next_actions,
    workflow_state,
    workflow_to_wire,
)

S = JobState
SETTINGS = settings(max_examples=200, deadline=None)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
T1 = NOW + timedelta(seconds=1)
T2 = NOW + timedelta(seconds=2)


def spec(jtype: str, *args: Any, **options: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": jtype, "args": list(args)}
    if options:
        out["options"] = options
    return out


def complete(job: Job, result: Any = None) -> Job:
    return lifecycle.ack(lifecycle.claim(job, T1, "w", None), T2, result)


def discard(job: Job) -> Job:
    claimed = lifecycle.claim(job, T1, "w", None)
    return lifecycle.fail(claimed, T2, JobError(code="boom", retryable=False))


def settle(workflow: Workflow, jobs: list[Job]) -> list[Job]:
    """Apply next_actions until nothing changes, as a backend would after each job event."""
    jobs = list(jobs)
    while True:
        advance = next_actions(workflow, jobs)
        if not advance.activate and not advance.cancel:
            return jobs
        for index, parents in advance.activate:
            jobs[index] = lifecycle.activate_pending(jobs[index], T2, parents)
        for index in advance.cancel:
            jobs[index] = lifecycle.cancel(jobs[index], T2)


# --- compile ----------------------------------------------------------------------------------


def test_compile_chain() -> None:
    wf, jobs = compile_workflow(
        {"type": "chain", "name": "etl", "steps": [spec("a", 1), spec("b"), spec("c")]}, NOW
    )
    assert is_uuid7(wf.id)
    assert (wf.type, wf.name, wf.created_at) == ("chain", "etl", NOW)
    assert [n.depends_on for n in wf.nodes] == [(), (0,), (1,)]
    assert [j.state for j in jobs] == [S.AVAILABLE, S.PENDING, S.PENDING]
    assert [j.type for j in jobs] == ["a", "b", "c"]
    assert jobs[0].args == [1]
    assert jobs[1].args == []  # args default to []
    assert [n.job_id for n in wf.nodes] == [j.id for j in jobs]
    assert all(j.workflow_id == wf.id for j in jobs)
    assert [j.workflow_node for j in jobs] == [0, 1, 2]
    assert len({j.id for j in jobs}) == 3
    assert workflow_state(wf, jobs) == "running"


def test_compile_chain_with_jobs_key() -> None:
    wf, jobs = compile_workflow({"type": "chain", "jobs": [spec("a"), spec("b")]}, NOW)
    assert [n.depends_on for n in wf.nodes] == [(), (0,)]
    assert len(jobs) == 2


def test_compile_group() -> None:
    wf, jobs = compile_workflow({"type": "group", "jobs": [spec("a"), spec("b"), spec("c")]}, NOW)
    assert wf.type == "group"
    assert [n.depends_on for n in wf.nodes] == [(), (), ()]
    assert all(j.state is S.AVAILABLE for j in jobs)


def test_compile_batch() -> None:
    wf, jobs = compile_workflow(
        {
            "type": "batch",
            "jobs": [spec("a"), spec("b")],
            "callbacks": {
                "on_success": spec("s"),
                "on_failure": spec("f"),
                "on_complete": spec("c", queue="callbacks"),
            },
        },
        NOW,
    )
    roles = {n.name: (n.role, n.trigger, n.depends_on) for n in wf.nodes if n.role == "callback"}
    assert roles == {
        "on_success": ("callback", "success", (0, 1)),
        "on_failure": ("callback", "failure", (0, 1)),
        "on_complete": ("callback", "complete", (0, 1)),
    }
    by_type = {j.type: j for j in jobs}
    assert by_type["c"].queue == "callbacks"
    assert by_type["a"].state is S.AVAILABLE
    assert by_type["s"].state is S.PENDING


def test_compile_dag_with_depends_on() -> None:
    wf, jobs = compile_workflow(
        {
            "name": "dag",
            "steps": [
                {"id": "report", "type": "r", "depends_on": ["left", "right"]},
                {"id": "left", "type": "l", "depends_on": ["root"]},
                {"id": "root", "type": "a"},
                {"id": "right", "type": "rt", "depends_on": ["root"]},
            ],
        },
        NOW,
    )
    assert wf.type == "dag"
    names = [n.name for n in wf.nodes]
    # Nodes are created in dependency order, and edges point at earlier nodes.
    assert names.index("root") < names.index("left") < names.index("report")
    assert names.index("right") < names.index("report")
    for i, node in enumerate(wf.nodes):
        assert all(d < i for d in node.depends_on)
    report = wf.nodes[names.index("report")]
    assert {wf.nodes[d].name for d in report.depends_on} == {"left", "right"}
    states = {wf.nodes[i].name: j.state for i, j in enumerate(jobs)}
    assert states == {
        "root": S.AVAILABLE,
        "left": S.PENDING,
        "right": S.PENDING,
        "report": S.PENDING,
    }


def test_compile_nested_group_in_chain() -> None:
    wf, _ = compile_workflow(
        {
            "type": "chain",
            "steps": [spec("a"), {"type": "group", "jobs": [spec("b"), spec("c")]}, spec("d")],
        },
        NOW,
    )
    assert [n.depends_on for n in wf.nodes] == [(), (0,), (0,), (1, 2)]


def test_step_options_are_kept() -> None:
    _, jobs = compile_workflow(
        {"type": "group", "jobs": [spec("a", queue="q1", priority=5, retry={"max_attempts": 1})]},
        NOW,
    )
    assert (jobs[0].queue, jobs[0].priority, jobs[0].max_attempts) == ("q1", 5, 1)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (
            {"name": "x", "steps": [{"id": "a", "type": "a", "depends_on": ["a"]}]},
            "steps[0].depends_on",
        ),
        (
            {
                "steps": [
                    {"id": "a", "type": "a", "depends_on": ["b"]},
                    {"id": "b", "type": "b", "depends_on": ["a"]},
                ]
            },
            "steps[0].depends_on",
        ),
        (
            {"steps": [{"id": "a", "type": "a"}, {"id": "b", "type": "b", "depends_on": ["zzz"]}]},
            "steps[1].depends_on",
        ),
        ({"steps": [{"id": "a", "type": "a", "depends_on": "b"}]}, "steps[0].depends_on"),
        ({"steps": [{"id": "a", "type": "a"}, {"id": "a", "type": "b"}]}, "steps[1].id"),
        ({"steps": []}, "steps"),
        ({}, "steps"),
        ({"type": "chain", "steps": []}, ".steps"),
        ({"type": "group", "jobs": "x"}, ".jobs"),
        ({"type": "batch", "jobs": [spec("a")]}, "callbacks"),
        ({"type": "batch", "jobs": [spec("a")], "callbacks": {}}, "callbacks"),
        ({"type": "saga", "steps": [spec("a")]}, "type"),
        ({"type": "chain", "name": 5, "steps": [spec("a")]}, "name"),
        ({"type": "chain", "steps": ["nope"]}, ".steps[0]"),
        ({"type": "chain", "steps": [{"type": "BAD"}]}, ".steps[0].type"),
    ],
)
def test_invalid_workflows_rejected(body: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as info:
        compile_workflow(body, NOW)
    assert info.value.path == path
    assert info.value.status == 400


def test_cycle_error_code() -> None:
    body = {
        "steps": [
            {"id": "a", "type": "a", "depends_on": ["b"]},
            {"id": "b", "type": "b", "depends_on": ["a"]},
        ]
    }
    with pytest.raises(ValidationError, match="cycle") as info:
        compile_workflow(body, NOW)
    assert info.value.code == "invalid_workflow"
    with pytest.raises(ValidationError, match="unknown") as info:
        compile_workflow({"steps": [{"id": "a", "type": "a", "depends_on": ["x"]}]}, NOW)
    assert info.value.code == "invalid_workflow"


def test_body_must_be_object() -> None:
    with pytest.raises(ValidationError):
        compile_workflow([spec("a")], NOW)


# --- chain advancement ------------------------------------------------------------------------


def test_chain_activates_next_step_with_previous_result() -> None:
    wf, jobs = compile_workflow({"type": "chain", "steps": [spec("a"), spec("b"), spec("c")]}, NOW)
    assert next_actions(wf, jobs) == Advance()
    jobs[0] = complete(jobs[0], {"rows": 10})
    assert next_actions(wf, jobs) == Advance(activate=((1, [{"rows": 10}]),))
    jobs = settle(wf, jobs)
    assert jobs[1].state is S.AVAILABLE
    assert jobs[1].parent_results == [{"rows": 10}]
    assert jobs[2].state is S.PENDING
    jobs[1] = complete(jobs[1], "b-out")
    jobs = settle(wf, jobs)
    assert jobs[2].parent_results == ["b-out"]
    assert workflow_state(wf, jobs) == "running"
    jobs[2] = complete(jobs[2])
    assert next_actions(wf, jobs) == Advance()
    assert workflow_state(wf, jobs) == "completed"


def test_chain_does_not_advance_on_retryable_step() -> None:
    wf, jobs = compile_workflow({"type": "chain", "steps": [spec("a"), spec("b")]}, NOW)
    claimed = lifecycle.claim(jobs[0], T1, "w", None)
    jobs[0] = lifecycle.fail(claimed, T2, JobError(), rng=random.Random(0))
    assert jobs[0].state is S.RETRYABLE
    assert next_actions(wf, jobs) == Advance()
    assert workflow_state(wf, jobs) == "running"


def test_chain_failure_cancels_later_steps() -> None:
    wf, jobs = compile_workflow(
        {"type": "chain", "steps": [spec("a"), spec("b"), spec("c"), spec("d")]}, NOW
    )
    jobs[0] = complete(jobs[0])
    jobs = settle(wf, jobs)
    jobs[1] = discard(jobs[1])
    assert next_actions(wf, jobs) == Advance(cancel=(2,))
    jobs = settle(wf, jobs)
    assert [j.state for j in jobs] == [S.COMPLETED, S.DISCARDED, S.CANCELLED, S.CANCELLED]
    assert workflow_state(wf, jobs) == "failed"


def test_group_state() -> None:
    wf, jobs = compile_workflow({"type": "group", "jobs": [spec("a"), spec("b")]}, NOW)
    jobs[0] = complete(jobs[0])
    assert workflow_state(wf, jobs) == "running"
    assert workflow_state(wf, [jobs[0], complete(jobs[1])]) == "completed"
    assert workflow_state(wf, [jobs[0], discard(jobs[1])]) == "failed"
    assert workflow_state(wf, [jobs[0], lifecycle.cancel(jobs[1], T2)]) == "failed"


# --- batch callbacks --------------------------------------------------------------------------

BATCH = {
    "type": "batch",
    "jobs": [spec("a"), spec("b")],
    "callbacks": {"on_success": spec("s"), "on_failure": spec("f"), "on_complete": spec("c")},
}


def _callbacks(wf: Workflow, jobs: list[Job]) -> dict[str, JobState]:
    return {n.name: jobs[i].state for i, n in enumerate(wf.nodes) if n.role == "callback"}


def test_batch_all_succeeded() -> None:
    wf, jobs = compile_workflow(BATCH, NOW)
    jobs[0] = complete(jobs[0], 1)
    jobs = settle(wf, jobs)
    # One job still running: no callback decided yet.
    assert set(_callbacks(wf, jobs).values()) == {S.PENDING}
    jobs[1] = complete(jobs[1], 2)
    jobs = settle(wf, jobs)
    assert _callbacks(wf, jobs) == {
        "on_success": S.AVAILABLE,
        "on_failure": S.CANCELLED,
        "on_complete": S.AVAILABLE,
    }
    for i, node in enumerate(wf.nodes):
        if node.role == "callback" and jobs[i].state is S.AVAILABLE:
            assert jobs[i].parent_results == [1, 2]
    assert workflow_state(wf, jobs) == "running"
    jobs = [complete(j) if j.state is S.AVAILABLE else j for j in jobs]
    assert workflow_state(wf, jobs) == "completed"


def test_batch_with_a_failure() -> None:
    wf, jobs = compile_workflow(BATCH, NOW)
    jobs[0] = discard(jobs[0])
    jobs = settle(wf, jobs)
    # on_success can never fire now; the others wait for every job to finish.
    assert _callbacks(wf, jobs) == {
        "on_success": S.CANCELLED,
        "on_failure": S.PENDING,
        "on_complete": S.PENDING,
    }
    jobs[1] = complete(jobs[1], "ok")
    jobs = settle(wf, jobs)
    assert _callbacks(wf, jobs) == {
        "on_success": S.CANCELLED,
        "on_failure": S.AVAILABLE,
        "on_complete": S.AVAILABLE,
    }
    failure = next(jobs[i] for i, n in enumerate(wf.nodes) if n.name == "on_failure")
    assert failure.parent_results == [None, "ok"]


def test_batch_callbacks_fire_exactly_once() -> None:
    wf, jobs = compile_workflow(BATCH, NOW)
    jobs = settle(wf, [complete(jobs[0]), complete(jobs[1]), *jobs[2:]])
    # Settled: asking again yields nothing, even after the callbacks ran.
    assert next_actions(wf, jobs) == Advance()
    jobs = [complete(j) if j.state is S.AVAILABLE else j for j in jobs]
    assert next_actions(wf, jobs) == Advance()


def test_batch_failed_when_a_callback_fails() -> None:
    wf, jobs = compile_workflow(BATCH, NOW)
    jobs = settle(wf, [complete(jobs[0]), complete(jobs[1]), *jobs[2:]])
    jobs = [discard(j) if j.state is S.AVAILABLE else j for j in jobs]
    assert workflow_state(wf, jobs) == "failed"


def test_batch_with_failure_and_on_failure_callback_completed_is_completed() -> None:
    wf, jobs = compile_workflow(BATCH, NOW)
    jobs = settle(wf, [discard(jobs[0]), complete(jobs[1]), *jobs[2:]])
    jobs = [complete(j) if j.state is S.AVAILABLE else j for j in jobs]
    assert workflow_state(wf, jobs) == "completed"


def test_batch_with_only_on_success_and_a_failed_job_is_failed() -> None:
    wf, jobs = compile_workflow(
        {"type": "batch", "jobs": [spec("a"), spec("b")], "callbacks": {"on_success": spec("s")}},
        NOW,
    )
    jobs = settle(wf, [discard(jobs[0]), complete(jobs[1]), *jobs[2:]])
    assert jobs[2].state is S.CANCELLED
    assert workflow_state(wf, jobs) == "failed"


# --- cancellation and wire form ---------------------------------------------------------------


def test_cancelled_workflow_cancels_pending_nodes() -> None:
    wf, jobs = compile_workflow({"type": "chain", "steps": [spec("a"), spec("b"), spec("c")]}, NOW)
    wf = attrs.evolve(wf, cancelled_at=T1)
    jobs[0] = complete(jobs[0])
    assert next_actions(wf, jobs) == Advance(cancel=(1, 2))
    assert workflow_state(wf, jobs) == "cancelled"


def test_missing_jobs_count_as_cancelled() -> None:
    wf, jobs = compile_workflow({"type": "chain", "steps": [spec("a"), spec("b")]}, NOW)
    assert next_actions(wf, [None, jobs[1]]) == Advance(cancel=(1,))
    assert workflow_state(wf, [None, None]) == "failed"


def test_workflow_to_wire() -> None:
    wf, jobs = compile_workflow(
        {"type": "chain", "name": "etl", "steps": [spec("a"), spec("b")]}, NOW
    )
    wire = workflow_to_wire(wf, jobs)
    assert wire["id"] == wf.id
    assert wire["name"] == "etl"
    assert wire["type"] == "chain"
    assert wire["state"] == "running"
    assert wire["steps_total"] == wire["jobs_total"] == 2
    assert wire["steps_completed"] == 0
    assert wire["steps"][1]["depends_on"] == ["step-0"]
    assert wire["steps"][0]["job_id"] == jobs[0].id
    assert "completed_at" not in wire
    jobs[0] = complete(jobs[0], "r")
    jobs = settle(wf, jobs)
    jobs[1] = complete(jobs[1])
    wire = workflow_to_wire(wf, jobs)
    assert wire["state"] == "completed"
    assert wire["steps_completed"] == 2
    assert wire["steps"][0]["result"] == "r"
    assert wire["completed_at"] == "2026-01-01T00:00:02Z"
    assert wire["started_at"] == "2026-01-01T00:00:01Z"
    assert wire["metadata"]["completed_count"] == 2


def test_workflow_to_wire_batch_counts_exclude_callbacks() -> None:
    wf, jobs = compile_workflow(BATCH, NOW)
    jobs = settle(wf, [discard(jobs[0]), complete(jobs[1]), *jobs[2:]])
    wire = workflow_to_wire(wf, jobs)
    assert wire["jobs_total"] == 2
    assert wire["failed_count"] == 1
    assert set(wire["callbacks"]) == {"on_success", "on_failure", "on_complete"}
    assert wire["callbacks"]["on_success"]["state"] == "cancelled"


# --- property: random DAGs --------------------------------------------------------------------


@st.composite
def dags(draw) -> tuple[dict[str, Any], dict[str, bool]]:
    n = draw(st.integers(1, 8))
    steps = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        steps.append(
            {"id": f"s{i}", "type": "t", "args": [i], "depends_on": [f"s{d}" for d in deps]}
        )
    outcomes = {f"s{i}": draw(st.booleans()) for i in range(n)}
    shuffled = draw(st.permutations(steps))
    return {"name": "dag", "steps": list(shuffled)}, outcomes


@SETTINGS
@given(dags())
def test_random_dag_runs_to_a_consistent_end(case: tuple[dict[str, Any], dict[str, bool]]) -> None:
    body, succeeds = case
    wf, jobs = compile_workflow(body, NOW)
    name = [n.name for n in wf.nodes]
    for _ in range(len(jobs) + 1):
        jobs = settle(wf, jobs)
        runnable = [i for i, j in enumerate(jobs) if j.state is S.AVAILABLE]
        if not runnable:
            break
        for i in runnable:
            node = wf.nodes[i]
            # Only ever run once every dependency completed, with their results in order.
            assert all(jobs[d].state is S.COMPLETED for d in node.depends_on)
            if node.depends_on:
                assert jobs[i].parent_results == [jobs[d].result for d in node.depends_on]
            jobs[i] = complete(jobs[i], name[i]) if succeeds[name[i]] else discard(jobs[i])
    assert all(j.state.terminal for j in jobs)
    for i, node in enumerate(wf.nodes):
        deps_ok = all(jobs[d].state is S.COMPLETED for d in node.depends_on)
        if deps_ok:
            assert jobs[i].state is (S.COMPLETED if succeeds[name[i]] else S.DISCARDED)
        else:
            assert jobs[i].state is S.CANCELLED
    all_ok = all(j.state is S.COMPLETED for j in jobs)
    assert workflow_state(wf, jobs) == ("completed" if all_ok else "failed")
