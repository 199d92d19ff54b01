"""Job versioning in process: a Worker's handlers declare the versions they accept, and each
worker is handed only those (and unversioned jobs); the JobContext tells the version."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from embed_support import Harness, eventually

from ojs_core.errors import ValidationError
from ojs_core.states import JobState
from ojs_core.worker import JobContext


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


async def test_workers_get_only_the_versions_they_declare(harness: Harness) -> None:
    seen: dict[str, list[str | None]] = {"old": [], "new": []}
    old = harness.worker(worker_id="old")
    new = harness.worker(worker_id="new")

    @old.handler("invoice.generate", versions=">=1.0 <2.0")
    async def v1(ctx: JobContext) -> None:
        seen["old"].append(ctx.version)

    @new.handler("invoice.generate", versions=">=2.0")
    async def v2(ctx: JobContext) -> None:
        seen["new"].append(ctx.version)

    jobs = []
    for version in ("1.0", "2.0", "1.3", "2.1", None):
        job = await harness.client.enqueue("invoice.generate", [version], version=version)
        assert job is not None
        jobs.append(job.id)
    old.start()
    new.start()
    for job_id in jobs:
        await harness.wait_state(job_id, JobState.COMPLETED)
    assert sorted(v for v in seen["old"] if v) == ["1.0", "1.3"]
    assert sorted(v for v in seen["new"] if v) == ["2.0", "2.1"]
    assert seen["old"].count(None) + seen["new"].count(None) == 1


async def test_a_version_nobody_declares_waits_available(harness: Harness) -> None:
    worker = harness.worker(worker_id="w")

    @worker.handler("invoice.generate", versions="1.0")
    async def v1(ctx: JobContext) -> None:
        return None

    held = await harness.client.enqueue("invoice.generate", [], version="3.0")
    ok = await harness.client.enqueue("invoice.generate", [], version="1.0")
    assert held is not None
    assert ok is not None
    worker.start()
    await harness.wait_state(ok.id, JobState.COMPLETED)
    await eventually(lambda: worker.fetching, what="the worker polls again")
    assert (await harness.job(held.id)).state is JobState.AVAILABLE
    assert (await harness.job(held.id)).attempt == 0


async def test_the_heartbeat_declares_the_versions(harness: Harness) -> None:
    worker = harness.worker(worker_id="w-hb")
    worker.register("invoice.generate", _noop, versions=">=1.0, <2.0")
    await worker.heartbeat()
    record = await harness.backend.get_worker("w-hb")
    assert record is not None
    assert record.versions == {"invoice.generate": ">=1.0, <2.0"}


def test_an_invalid_range_is_refused_at_registration(harness: Harness) -> None:
    worker = harness.worker()
    with pytest.raises(ValidationError, match="version"):
        worker.register("invoice.generate", _noop, versions="^1.0")


async def _noop(ctx: JobContext) -> None:
    return None
