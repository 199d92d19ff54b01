"""Per-request ceilings of the service (ojs_core.limits) and the recursion-free workflow build."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ojs_core.errors import ValidationError
from ojs_core.limits import BatchTooLargeError, Limits
from ojs_core.plugins import redact_url
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.workflow import compile_workflow
from ojs_memory import MemoryBackend

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def service(**limits: int) -> JobService:
    svc = JobService(MemoryBackend(), limits=Limits(**limits))
    await svc.backend.open()
    return svc


def job() -> dict[str, Any]:
    return {"type": "t.job", "args": []}


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_fetch_count"):
        Limits(max_fetch_count=0)


async def test_batch_over_the_limit_is_413_with_the_maximum() -> None:
    svc = await service(max_batch_jobs=3)
    assert len(await svc.enqueue_batch([job()] * 3)) == 3
    with pytest.raises(BatchTooLargeError) as info:
        await svc.enqueue_batch([job()] * 4)
    err = info.value
    assert err.status == 413
    wire = err.to_wire("r1")["error"]
    assert wire["code"] == "batch_size_exceeded"
    assert wire["max_batch_size"] == 3
    assert wire["details"] == {"batch_size": 4, "max_batch_size": 3}
    assert err.headers == {"X-OJS-Max-Batch-Size": "3"}
    assert (await svc.queue_stats("default")).counts[JobState.AVAILABLE] == 3  # none added


async def test_fetch_count_and_queue_count_are_bounded() -> None:
    svc = await service(max_fetch_count=5, max_fetch_queues=2)
    assert await svc.fetch(["a", "b"], 5) == []
    with pytest.raises(ValidationError) as info:
        await svc.fetch(["default"], 6)
    assert info.value.path == "count"
    assert info.value.details["maximum"] == 5
    with pytest.raises(ValidationError) as info:
        await svc.fetch(["a", "b", "c"], 1)
    assert info.value.path == "queues"
    assert info.value.details["maximum"] == 2


async def test_heartbeat_job_count_is_bounded() -> None:
    svc = await service(max_heartbeat_jobs=2)
    await svc.heartbeat("w1", ["x", "y"])
    with pytest.raises(ValidationError) as info:
        await svc.heartbeat("w1", ["x", "y", "z"])
    assert info.value.path == "active_jobs"
    assert info.value.details["maximum"] == 2


async def test_workflow_steps_are_bounded() -> None:
    svc = await service(max_workflow_steps=3)
    steps = [{"id": f"s{i}", "type": "t"} for i in range(4)]
    with pytest.raises(ValidationError) as info:
        await svc.create_workflow({"steps": steps})
    assert info.value.details["maximum"] == 3
    chain = {"type": "chain", "steps": [{"type": "t"}] * 4}
    with pytest.raises(ValidationError, match="at most 3 steps"):
        await svc.create_workflow(chain)
    assert (await svc.create_workflow({"steps": steps[:3]}))["steps_total"] == 3


def test_a_long_dependency_chain_compiles_without_recursion() -> None:
    # Regression: the topological sort recursed once per dependency, so a well-formed chain
    # of ~1000 depends_on steps raised RecursionError (a 500).
    steps = [{"id": "s0", "type": "t"}] + [
        {"id": f"s{i}", "type": "t", "depends_on": [f"s{i - 1}"]} for i in range(1, 1000)
    ]
    workflow, jobs = compile_workflow({"steps": list(reversed(steps))}, NOW)
    assert len(jobs) == 1000
    assert workflow.nodes[-1].depends_on  # the last compiled node waits for another


def test_a_cycle_is_still_found() -> None:
    steps = [
        {"id": "a", "type": "t", "depends_on": ["c"]},
        {"id": "b", "type": "t", "depends_on": ["a"]},
        {"id": "c", "type": "t", "depends_on": ["b"]},
    ]
    with pytest.raises(ValidationError, match="cycle"):
        compile_workflow({"steps": steps}, NOW)


def test_nesting_depth_is_bounded() -> None:
    # Each nesting level is a recursive call: the depth is bounded well below Python's limit.
    spec: dict[str, Any] = {"type": "t"}
    for _ in range(400):
        spec = {"type": "chain", "steps": [spec]}
    with pytest.raises(ValidationError, match="nest at most 32 deep") as info:
        compile_workflow(spec, NOW)
    assert info.value.details["maximum"] == 32
    ok: dict[str, Any] = {"type": "t"}
    for _ in range(32):
        ok = {"type": "chain", "steps": [ok]}
    assert len(compile_workflow(ok, NOW)[1]) == 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://u:secret@h:4222", "nats://u:***@h:4222"),
        ("nats://secret@h", "nats://***@h"),
        ("nats://u:a@h1,secret@h2", "nats://u:***@h1,***@h2"),
        ("nats://h1:4222,h2:4222", "nats://h1:4222,h2:4222"),
        ("sqlite:///var/a@b.db", "sqlite:///var/a@b.db"),
        ("memory", "memory"),
    ],
)
def test_redact_url_hides_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown
