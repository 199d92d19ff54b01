"""Enqueue skips the tenant admission only where it would change nothing: no job names a
tenant and none has to. A job that names one, or a service that requires one, goes through it."""

from __future__ import annotations

import pytest

from ojs_core import JobService
from ojs_core.errors import ValidationError
from ojs_core.model import Job
from ojs_core.tenancy import TenantRequiredError
from ojs_memory import MemoryBackend


def _job(meta: dict[str, object]) -> Job:
    return Job(id="j", type="t.x", queue="default", args=[], meta=meta)


def test_untouched_only_without_tenants_and_without_a_requirement() -> None:
    plain = JobService(MemoryBackend())
    assert plain.tenancy.untouched([_job({}), _job({"other": 1})])
    assert not plain.tenancy.untouched([_job({}), _job({"tenant_id": "acme"})])
    strict = JobService(MemoryBackend(), require_tenant=True)
    assert not strict.tenancy.untouched([_job({})])


async def test_a_required_tenant_is_still_enforced() -> None:
    svc = JobService(MemoryBackend(), require_tenant=True)
    with pytest.raises(TenantRequiredError):
        await svc.enqueue({"type": "t.x", "args": []})
    created = await svc.enqueue({"type": "t.x", "args": [], "meta": {"tenant_id": "acme"}})
    assert created.job.meta["tenant_id"] == "acme"


async def test_a_named_tenant_is_still_checked() -> None:
    svc = JobService(MemoryBackend())
    with pytest.raises(ValidationError) as caught:
        await svc.enqueue({"type": "t.x", "args": [], "meta": {"tenant_id": "bad id!"}})
    assert caught.value.path == "meta.tenant_id"
