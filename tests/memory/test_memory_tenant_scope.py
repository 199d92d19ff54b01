"""``ojs_core.tenant_scope`` rules that the HTTP scenarios do not reach: events of the
default tenant's untagged jobs, and the override of a dead-letter retry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ojs_core.errors import ValidationError
from ojs_core.events import make_event
from ojs_core.service import JobService
from ojs_core.tenant_scope import event_visible, scope_override
from ojs_memory import MemoryBackend

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_events_seen_by_each_scope() -> None:
    svc = JobService(MemoryBackend(), default_tenant="public")
    tagged = make_event("job.enqueued", NOW, {"job_id": "j1", "tenant_id": "acme"})
    untagged = make_event("job.enqueued", NOW, {"job_id": "j2"})
    system = make_event("webhook.subscription.created", NOW, {"subscription_id": "s"})
    assert event_visible(svc, tagged, "acme")
    assert not event_visible(svc, tagged, "beta")
    assert event_visible(svc, untagged, "public")  # the default tenant's untagged job
    assert not event_visible(svc, untagged, "acme")
    assert not event_visible(svc, system, "acme")
    assert all(event_visible(svc, e, None) for e in (tagged, untagged, system))


def test_a_retry_override_keeps_the_tenant() -> None:
    assert scope_override({"meta": {"k": 1}}, "acme") == {"meta": {"k": 1, "tenant_id": "acme"}}
    assert scope_override({"queue": "q"}, "acme") == {"queue": "q"}
    assert scope_override({"meta": {"k": 1}}, None) == {"meta": {"k": 1}}
    with pytest.raises(ValidationError) as caught:
        scope_override({"meta": {"tenant_id": "beta"}}, "acme")
    assert caught.value.path == "override.meta.tenant_id"
    with pytest.raises(ValidationError):
        scope_override({"meta": [1]}, "acme")


@pytest.mark.parametrize("kind", ["rate_limit.released", "rate_limit.dropped", "cron.triggered"])
def test_other_events_naming_a_job_are_not_the_default_tenants(kind: str) -> None:
    """Events other than ``job.*`` that name a job but carry no ``tenant_id`` (rate-limit
    releases and drops, cron ticks) may be about any tenant's job: a caller scoped to the
    default tenant does not see them, an unscoped one does."""
    svc = JobService(MemoryBackend(), default_tenant="public")
    event = make_event(kind, NOW, {"job_id": "j-of-acme", "queue": "q"})
    assert not event_visible(svc, event, "public")
    assert not event_visible(svc, event, "acme")
    assert event_visible(svc, event, None)
