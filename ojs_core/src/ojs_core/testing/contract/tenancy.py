"""Multi-tenancy (``urn:ojs:ext:experimental:multi-tenancy``) and per-tenant fair dispatch,
through :class:`~ojs_core.service.JobService`: tenant ids, scoped reads, cancels and fetches,
weighted round-robin across tenants, per-tenant concurrency, enqueue limits, the admin
operations and their events.

The tests skip on a backend without :class:`~ojs_core.backend.TenantStore` and
:class:`~ojs_core.backend.TenantCounts` (the sharded ready index comes with the latter).
"""

from __future__ import annotations

from typing import Any

import pytest

from ...backend import Backend, TenantCounts, TenantStore
from ...errors import NotFoundError, ValidationError
from ...model import Job
from ...service import JobService
from ...states import JobState
from ...tenancy import TenantLimitError, TenantRequiredError, inject
from ...versioning import parse_declaration
from ..helpers import events_of
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestTenancy", "TestTenantFairness"]

S = JobState


def _needs_tenants(backend: Backend) -> None:
    if not isinstance(backend, TenantStore) or not isinstance(backend, TenantCounts):
        pytest.skip("the backend does not store tenants (TenantStore, TenantCounts)")


async def _push(service: JobService, tenant: str | None, queue: str, **options: Any) -> Job:
    body: dict[str, Any] = {"type": "test.job", "args": [], "options": {"queue": queue, **options}}
    if tenant is not None:
        body["meta"] = {"tenant_id": tenant}
    outcome = await service.enqueue(body)
    assert outcome.created
    return outcome.job


def _tenant(job: Job) -> str:
    return str(job.meta.get("tenant_id", ""))


async def _fetch_one_by_one(service: JobService, queue: str, n: int) -> list[Job]:
    out: list[Job] = []
    for _ in range(n):
        got = await service.fetch([queue], 1)
        assert len(got) == 1, f"fetch {len(out) + 1} of {n} found nothing"
        out.extend(got)
    return out


class TestTenancy(KitTest):
    """Tenant ids, isolation of scoped requests, limits and the admin operations."""

    async def test_header_is_injected_and_checked(self, service: JobService) -> None:
        """The header's tenant lands in ``meta.tenant_id``; a body naming another is 400,
        an id of the wrong form is 400 with the field path (spec §5.2-5.3)."""
        body = inject({"type": "test.job", "args": []}, "acme")
        job = (await service.enqueue(body)).job
        assert job.meta["tenant_id"] == "acme"
        assert (await service.get(job.id)).meta["tenant_id"] == "acme"
        with pytest.raises(ValidationError) as conflict:
            inject({"type": "t.x", "args": [], "meta": {"tenant_id": "beta"}}, "acme")
        assert conflict.value.path == "meta.tenant_id"
        with pytest.raises(ValidationError) as bad:
            await service.enqueue({"type": "t.x", "args": [], "meta": {"tenant_id": "-bad id"}})
        assert bad.value.path == "meta.tenant_id"
        with pytest.raises(ValidationError) as bad_batch:
            await service.enqueue_batch(
                [
                    {"type": "t.x", "args": []},
                    {"type": "t.x", "args": [], "meta": {"tenant_id": ""}},
                ]
            )
        assert bad_batch.value.path == "jobs[1].meta.tenant_id"

    async def test_required_tenant(self, backend: Backend) -> None:
        """With tenants required, a job without one is refused with 422 (spec §5.1)."""
        strict = JobService(backend, require_tenant=True)
        with pytest.raises(TenantRequiredError) as refused:
            await strict.enqueue({"type": "t.x", "args": []})
        assert refused.value.status == 422
        job = (await strict.enqueue({"type": "t.x", "args": [], "meta": {"tenant_id": "acme"}})).job
        assert job.meta["tenant_id"] == "acme"

    async def test_scoped_read_and_cancel(self, service: JobService, backend: Backend) -> None:
        """A request scoped to another tenant neither sees nor cancels a job: 404, and the job
        is untouched; its own tenant and an unscoped request do both."""
        job = await _push(service, "acme", "mt-read")
        with pytest.raises(NotFoundError):
            await service.get(job.id, tenant="beta")
        with pytest.raises(NotFoundError):
            await service.cancel(job.id, tenant="beta")
        assert (await service.get(job.id)).state is S.AVAILABLE
        assert (await service.get(job.id, tenant="acme")).id == job.id
        _, cancelled = await service.cancel(job.id, tenant="acme")
        assert cancelled.state is S.CANCELLED
        plain = await _push(service, None, "mt-read")
        assert (await service.get(plain.id, tenant=service.tenancy.default)).id == plain.id
        with pytest.raises(NotFoundError):
            await service.get(plain.id, tenant="acme")

    async def test_scoped_fetch_takes_only_its_tenants_jobs(
        self, service: JobService, backend: Backend
    ) -> None:
        """A fetch scoped to a tenant claims its jobs only, even behind other tenants' older
        ones, and leaves those where they were: the next unscoped fetch gets them in order."""
        _needs_tenants(backend)
        others = [await _push(service, "beta", "mt-fetch") for _ in range(3)]
        mine = await _push(service, "acme", "mt-fetch")
        untagged = await _push(service, None, "mt-fetch")
        got = await service.fetch(["mt-fetch"], 10, tenant="acme")
        assert [j.id for j in got] == [mine.id]
        assert await service.fetch(["mt-fetch"], 10, tenant="acme") == []
        default = await service.fetch(["mt-fetch"], 10, tenant=service.tenancy.default)
        assert [j.id for j in default] == [untagged.id]
        rest = await service.fetch(["mt-fetch"], 10, tenant="beta")
        assert [j.id for j in rest] == [j.id for j in others]

    async def test_tenant_concurrency(
        self, service: JobService, backend: Backend, ojs_time: TimeControl
    ) -> None:
        """``max_concurrency`` holds a tenant's active jobs across fetches (MT-003); other
        tenants' jobs are handed out meanwhile, and an ack frees a slot."""
        _needs_tenants(backend)
        await service.tenancy.put("acme", {"limits": {"max_concurrency": 2}})
        ids = {(await _push(service, "acme", "mt-conc")).id for _ in range(4)}
        other = await _push(service, "beta", "mt-conc")
        first = await service.fetch(["mt-conc"], 10)
        mine = [j for j in first if j.id in ids]
        assert len(mine) == 2
        assert other.id in {j.id for j in first}
        assert await service.fetch(["mt-conc"], 10) == []
        view = await service.rate_limits.get("tenant:acme")
        assert view["concurrency"] == {"limit": 2, "active": 2, "available": 0}
        await service.ack(mine[0].id)
        more: list[Job] = []

        async def claimed() -> bool:
            # A refused job may come back a moment later on a backend that sets it aside.
            more.extend(await service.fetch(["mt-conc"], 10))
            return bool(more)

        await ojs_time.until(claimed, what="a claim once a slot was freed")
        assert len(more) == 1
        assert more[0].id in ids
        kinds = [e.type for e in await events_of(service, "tenant.limit_exceeded")]
        assert "tenant.limit_exceeded" in kinds

    async def test_both_keys_must_admit(self, service: JobService, backend: Backend) -> None:
        """A job with its own rate-limit key and a tenant limit passes both; when the tenant
        refuses, the slot its own key gave is released at once."""
        _needs_tenants(backend)
        await service.tenancy.put("acme", {"limits": {"max_concurrency": 1}})
        policy = {"key": "mt-own", "concurrency": 5}
        for _ in range(3):
            await _push(service, "acme", "mt-both", rate_limit=policy)
        got = await service.fetch(["mt-both"], 10)
        assert len(got) == 1
        own = await service.rate_limits.get("mt-own")
        assert own["concurrency"]["active"] == 1
        tenant = await service.rate_limits.get("tenant:acme")
        assert tenant["concurrency"]["active"] == 1

    async def test_max_queue_depth(self, service: JobService, backend: Backend) -> None:
        """Over ``max_queue_depth`` an enqueue is refused with 429 and the spec's fields
        (MT-004), a batch as a whole; once a job is consumed there is room again."""
        _needs_tenants(backend)
        await service.tenancy.put("acme", {"limits": {"max_queue_depth": 2}})
        await _push(service, "acme", "mt-depth")
        await _push(service, "acme", "mt-depth")
        with pytest.raises(TenantLimitError) as full:
            await _push(service, "acme", "mt-depth")
        err = full.value.to_wire()["error"]
        assert full.value.status == 429
        assert err["code"] == "TENANT_LIMIT_EXCEEDED"
        assert (err["tenant_id"], err["limit"], err["current"], err["maximum"]) == (
            "acme",
            "max_queue_depth",
            2,
            2,
        )
        await _push(service, "beta", "mt-depth")  # another tenant is not affected
        [job] = await service.fetch(["mt-depth"], 1, tenant="acme")
        await service.ack(job.id)
        await _push(service, "acme", "mt-depth")
        kinds = [e.type for e in await events_of(service, "tenant.limit_exceeded")]
        assert kinds == ["tenant.limit_exceeded"]

    async def test_max_enqueue_rate(
        self, service: JobService, backend: Backend, ojs_time: TimeControl
    ) -> None:
        """``max_enqueue_rate`` is a sliding window of enqueues; a batch that does not fit is
        refused whole and counts nothing."""
        _needs_tenants(backend)
        await service.tenancy.put(
            "acme", {"limits": {"max_enqueue_rate": {"limit": 3, "period": "PT1M"}}}
        )
        await _push(service, "acme", "mt-rate")
        await _push(service, "acme", "mt-rate")
        batch = [{"type": "t.x", "args": [], "meta": {"tenant_id": "acme"}} for _ in range(2)]
        with pytest.raises(TenantLimitError) as refused:
            await service.enqueue_batch(batch)
        assert refused.value.limit == "max_enqueue_rate"
        await _push(service, "acme", "mt-rate")  # the refused batch counted nothing
        with pytest.raises(TenantLimitError):
            await _push(service, "acme", "mt-rate")
        await ojs_time.advance(61)
        await _push(service, "acme", "mt-rate")

    async def test_admin_operations_and_stats(self, service: JobService, backend: Backend) -> None:
        """Create, update limits (the rest kept), list, stats with counts and limit use
        (MT-005), deregister; ``tenant.created`` once."""
        _needs_tenants(backend)
        cfg, created = await service.tenancy.put(
            "acme", {"limits": {"max_concurrency": 3}, "fairness_weight": 4}
        )
        assert created
        assert cfg.max_concurrency == 3
        _, again = await service.tenancy.put("acme", {"limits": {"max_concurrency": 3}})
        assert not again
        cfg, _ = await service.tenancy.put("acme", {"max_queue_depth": 10}, limits_only=True)
        assert (cfg.max_concurrency, cfg.max_queue_depth) == (3, 10)
        assert [c.tenant_id for c in await service.tenancy.configs()] == ["acme"]
        await _push(service, "acme", "mt-stats")
        await _push(service, "acme", "mt-stats")
        await _push(service, "beta", "mt-stats")
        await service.fetch(["mt-stats"], 1, tenant="acme")
        stats = await service.tenancy.stats("acme")
        assert stats["jobs"]["available"] == 1
        assert stats["jobs"]["active"] == 1
        assert stats["limits"]["max_concurrency"] == {"limit": 3, "current": 1}
        assert stats["limits"]["max_queue_depth"] == {"limit": 10, "current": 1}
        kinds = [e.type for e in await events_of(service, "tenant.created")]
        assert kinds == ["tenant.created"]
        await service.tenancy.delete("acme")
        with pytest.raises(NotFoundError):
            await service.tenancy.get("acme")

    async def test_workflow_steps_share_one_tenant(
        self, service: JobService, backend: Backend
    ) -> None:
        """Every step of a workflow belongs to the request's tenant; steps naming two are
        refused (spec §15.2)."""
        steps = [{"type": "wf.a", "args": []}, {"type": "wf.b", "args": []}]
        wf = await service.create_workflow({"type": "chain", "steps": steps}, tenant="acme")
        jobs = await backend.get_jobs([s["job_id"] for s in wf["steps"]])
        assert [j.meta.get("tenant_id") for j in jobs if j] == ["acme", "acme"]
        mixed = [
            {"type": "wf.a", "args": [], "meta": {"tenant_id": "acme"}},
            {"type": "wf.b", "args": [], "meta": {"tenant_id": "beta"}},
        ]
        with pytest.raises(ValidationError):
            await service.create_workflow({"type": "chain", "steps": mixed})

    async def test_priority_boost(self, service: JobService, backend: Backend) -> None:
        """A tenant's ``priority_boost`` is added to its jobs' priority at enqueue."""
        _needs_tenants(backend)
        await service.tenancy.put("vip", {"priority_boost": 5})
        job = await _push(service, "vip", "mt-boost", priority=1)
        assert job.priority == 6

    async def test_versions_and_tenants_together(
        self, service: JobService, backend: Backend
    ) -> None:
        """A job with both a version and a tenant (a version lane within a tenant shard): a
        fetch scoped to its tenant whose worker accepts its version gets it at once, behind
        backlogs of its tenant's other version and of another tenant's same version; a fetch
        that does not accept the version, or is another tenant's, never gets it and does not
        delay it (nor the backlogs) for the right worker."""
        _needs_tenants(backend)
        if not getattr(backend, "version_lanes", False):
            pytest.skip("the backend does not keep its ready index by version lane")
        v1 = parse_declaration({"invoice.generate": ">=1.0 <2.0"}, "versions")
        v2 = parse_declaration({"invoice.generate": "2.0"}, "versions")

        async def push(tenant: str, version: str) -> str:
            body: dict[str, Any] = {
                "type": "invoice.generate",
                "version": version,
                "args": [],
                "meta": {"tenant_id": tenant},
                "options": {"queue": "mt-ver"},
            }
            return (await service.enqueue(body)).job.id

        acme_v2 = [await push("acme", "2.0") for _ in range(20)]
        beta_v1 = [await push("beta", "1.0") for _ in range(20)]
        job = await push("acme", "1.0")
        v3 = parse_declaration({"invoice.generate": "3.0"}, "versions")
        for i in range(3):
            assert await service.fetch(["mt-ver"], 5, tenant="acme", versions=v3) == []
            other_version = await service.fetch(["mt-ver"], 5, tenant="acme", versions=v2)
            assert [j.id for j in other_version] == acme_v2[5 * i : 5 * i + 5]
            other_tenant = await service.fetch(["mt-ver"], 5, tenant="beta", versions=v1)
            assert [j.id for j in other_tenant] == beta_v1[5 * i : 5 * i + 5]
        # Another version (same tenant) and another tenant (same version) got none of it.
        assert (await service.get(job)).state is S.AVAILABLE
        [got] = await service.fetch(["mt-ver"], 1, tenant="acme", versions=v1)
        assert (got.id, got.attempt, got.state) == (job, 1, S.ACTIVE)
        assert _tenant(got) == "acme"
        # The backlogs were not set aside either: their right fetches get the oldest at once.
        [theirs] = await service.fetch(["mt-ver"], 1, tenant="beta", versions=v1)
        assert theirs.id == beta_v1[15]
        [older] = await service.fetch(["mt-ver"], 1, versions=v2)
        assert older.id == acme_v2[15]


class TestTenantFairness(KitTest):
    """Unscoped fetches serve tenants in (weighted) round-robin within a priority."""

    async def test_round_robin(self, service: JobService, backend: Backend) -> None:
        """Tenants take turns whatever their backlog: a burst of one tenant does not hold
        back the others (fair-scheduling §9, multi-tenancy §7.1)."""
        _needs_tenants(backend)
        for _ in range(6):
            await _push(service, "acme", "mt-rr")
        for _ in range(2):
            await _push(service, "beta", "mt-rr")
            await _push(service, None, "mt-rr")
        got = await _fetch_one_by_one(service, "mt-rr", 6)
        assert [sorted(map(_tenant, got[i : i + 3])) for i in (0, 3)] == [
            ["", "acme", "beta"],
            ["", "acme", "beta"],
        ]
        rest = await service.fetch(["mt-rr"], 10)
        assert [_tenant(j) for j in rest] == ["acme"] * 4

    async def test_weighted(self, service: JobService, backend: Backend) -> None:
        """With weights 2 and 1, two thirds of the dispatches go to the heavier tenant."""
        _needs_tenants(backend)
        await service.tenancy.put("heavy", {"fairness_weight": 2})
        for _ in range(10):
            await _push(service, "light", "mt-w")
            await _push(service, "heavy", "mt-w")
        got = await _fetch_one_by_one(service, "mt-w", 9)
        assert sorted(map(_tenant, got)).count("heavy") == 6

    async def test_count_is_shared_fairly(self, service: JobService, backend: Backend) -> None:
        """One fetch of many jobs takes them from every tenant in turn."""
        _needs_tenants(backend)
        for _ in range(8):
            await _push(service, "acme", "mt-many")
        for _ in range(2):
            await _push(service, "beta", "mt-many")
        got = await service.fetch(["mt-many"], 4)
        assert sorted(map(_tenant, got)) == ["acme", "acme", "beta", "beta"]

    async def test_priority_comes_first(self, service: JobService, backend: Backend) -> None:
        """Fairness applies within a priority level: a higher priority job of any tenant is
        served before the others (fair-scheduling §9.3)."""
        _needs_tenants(backend)
        for _ in range(3):
            await _push(service, "acme", "mt-prio")
        urgent = await _push(service, "beta", "mt-prio", priority=10)
        got = await service.fetch(["mt-prio"], 1)
        assert [j.id for j in got] == [urgent.id]
