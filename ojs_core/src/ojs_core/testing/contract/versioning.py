"""Job versioning (experimental extension): versions on the envelope, workers' declarations,
routing of versioned jobs only to compatible fetches, and jobs held while nobody can take them.

The conformance requirements VER-001 to VER-006 of ``ojs-job-versioning.md`` §12, plus the
property the backends' version lanes exist for: jobs of a version a worker cannot take never
stand between it and the jobs it can take, and are not delayed for the others by its fetches.
"""

from __future__ import annotations

from typing import Any

import pytest

from ...errors import ValidationError
from ...service import JobService
from ...states import JobState
from ...versioning import VersionRange, job_version, parse_declaration
from ..helpers import job_error, push
from ._base import KitTest

__all__ = ["TestJobVersioning"]

S = JobState
V1 = parse_declaration({"invoice.generate": ">=1.0 <2.0"}, "versions")
V2 = parse_declaration([{"type": "invoice.generate", "versions": "2.0"}], "handlers")


async def _versioned(service: JobService, version: str | None, **extra: Any) -> str:
    body: dict[str, Any] = {"type": "invoice.generate", "args": [version], **extra}
    if version is not None:
        body["version"] = version
    return (await service.enqueue(body)).job.id


class TestJobVersioning(KitTest):
    """Versions of jobs and the versions workers declare."""

    async def test_version_field_and_type_suffix_are_parsed_and_kept(
        self, service: JobService
    ) -> None:
        """VER-001/002: ``version`` is stored; ``type@version`` is split; the field wins."""
        plain = (await service.enqueue({"type": "invoice.generate@2.1", "args": []})).job
        assert (plain.type, job_version(plain)) == ("invoice.generate", "2.1")
        both = (
            await service.enqueue({"type": "invoice.generate@2.1", "version": "3.0", "args": []})
        ).job
        assert (both.type, job_version(both)) == ("invoice.generate", "3.0")
        fetched = await service.fetch(["default"], count=2)
        assert {(j.id, job_version(j)) for j in fetched} == {(plain.id, "2.1"), (both.id, "3.0")}
        unversioned = await push(service, "invoice.generate")
        assert job_version(unversioned) is None
        assert "version" not in unversioned.extra

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            ({"type": "t", "args": [], "version": "two"}, "version"),
            ({"type": "t", "args": [], "version": 2}, "version"),
            ({"type": "t@", "args": []}, "type"),
            ({"type": "t@1.x", "args": []}, "type"),
            ({"type": "t@1.0@2.0", "args": []}, "type"),
        ],
    )
    async def test_invalid_versions_are_refused(
        self, service: JobService, body: dict[str, Any], path: str
    ) -> None:
        """A version that is not ``major.minor`` is a 400 naming the field; nothing is stored."""
        with pytest.raises(ValidationError) as err:
            await service.enqueue(body)
        assert err.value.path == path
        assert await service.fetch(["default"]) == []

    async def test_fetch_gets_only_compatible_versions(self, service: JobService) -> None:
        """VER-004/006: a declaring fetch gets the versions it accepts and unversioned jobs;
        the others stay available, in order, for a compatible worker."""
        v10 = await _versioned(service, "1.0")
        v20 = await _versioned(service, "2.0")
        v11 = await _versioned(service, "1.1")
        none = await _versioned(service, None)
        v21 = await _versioned(service, "2.0")
        got = await service.fetch(["default"], count=10, worker_id="old", versions=V1)
        assert sorted(j.id for j in got) == sorted([v10, v11, none])
        assert (await service.get(v20)).state is S.AVAILABLE
        newer = await service.fetch(["default"], count=10, worker_id="new", versions=V2)
        assert [j.id for j in newer] == [v20, v21]

    async def test_jobs_are_held_while_no_worker_is_compatible(self, service: JobService) -> None:
        """VER-005: a job no fetch accepts stays ``available`` and is not consumed; a
        compatible worker gets it later with its first attempt."""
        job = await _versioned(service, "3.0")
        for _ in range(3):
            assert await service.fetch(["default"], count=5, versions=V1) == []
            assert await service.fetch(["default"], count=5, versions=V2) == []
        held = await service.get(job)
        assert (held.state, held.attempt) == (S.AVAILABLE, 0)
        wide = parse_declaration({"invoice.generate": ">=1.0"}, "versions")
        [got] = await service.fetch(["default"], versions=wide)
        assert (got.id, got.attempt) == (job, 1)

    async def test_types_not_declared_take_any_version(self, service: JobService) -> None:
        """A declaration constrains only the types it names."""
        other = (await service.enqueue({"type": "email.send", "version": "7.0", "args": []})).job.id
        [got] = await service.fetch(["default"], versions=V1)
        assert got.id == other

    async def test_incompatible_backlog_does_not_block_or_delay(self, service: JobService) -> None:
        """Hundreds of jobs of another version ahead of it do not hide a compatible job from a
        fetch of one, and the fetch does not delay them: the next compatible fetch of theirs
        gets the oldest at once. Needs a ready index kept by lane (``version_lanes``)."""
        if not getattr(service.backend, "version_lanes", False):
            pytest.skip("the backend does not keep its ready index by version lane")
        backlog = [
            o.job.id
            for o in await service.enqueue_batch(
                [{"type": "invoice.generate", "version": "2.0", "args": [i]} for i in range(300)]
            )
        ]
        mine = await _versioned(service, "1.0")
        for _ in range(3):
            [got] = await service.fetch(["default"], count=1, worker_id="old", versions=V1)
            assert got.id == mine
            await service.ack(got.id, None, "old")
            mine = await _versioned(service, "1.0")
        [theirs] = await service.fetch(["default"], count=1, worker_id="new", versions=V2)
        assert theirs.id == backlog[0]

    async def test_priority_holds_across_versions(self, service: JobService) -> None:
        """Within what a fetch accepts, higher priority still goes first."""
        low = await _versioned(service, "1.0")
        high = await _versioned(service, "1.1", priority=10)
        plain_high = await _versioned(service, None, priority=5)
        got = await service.fetch(["default"], count=3, versions=V1)
        assert [j.id for j in got] == [high, plain_high, low]

    async def test_heartbeat_declaration_routes_later_fetches(self, service: JobService) -> None:
        """VER-003: versions declared in a heartbeat are kept on the worker's record and
        route its fetches that declare none; a new declaration replaces it."""
        v2 = await _versioned(service, "2.0")
        v1 = await _versioned(service, "1.0")
        outcome = await service.heartbeat(
            "w-ver",
            [],
            info={"handlers": [{"type": "invoice.generate", "versions": ">=1.0, <2.0"}]},
        )
        assert outcome.worker.versions == {"invoice.generate": ">=1.0, <2.0"}
        got = await service.fetch(["default"], count=5, worker_id="w-ver")
        assert [j.id for j in got] == [v1]
        await service.heartbeat("w-ver", [], info={"versions": {"invoice.generate": "2.0"}})
        got = await service.fetch(["default"], count=5, worker_id="w-ver")
        assert [j.id for j in got] == [v2]

    async def test_invalid_declarations_are_refused(self, service: JobService) -> None:
        """A range that does not parse is a 400 naming the field, in a heartbeat too."""
        with pytest.raises(ValidationError) as err:
            await service.heartbeat("w-bad", [], info={"versions": {"t": "~1.0"}})
        assert err.value.path == "versions.t"
        with pytest.raises(ValidationError):
            VersionRange.parse(">=1.0 <2.x", "versions")

    async def test_retry_keeps_the_version_and_its_routing(self, service: JobService) -> None:
        """A job handed back (requeued) is still routed by its version."""
        job = await _versioned(service, "2.0")
        [got] = await service.fetch(["default"], versions=V2)
        await service.nack(got.id, job_error(), None, requeue=True)
        assert await service.fetch(["default"], versions=V1) == []
        [again] = await service.fetch(["default"], versions=V2)
        assert (again.id, job_version(again)) == (job, "2.0")
