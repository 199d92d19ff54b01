"""The tenant of a gRPC call: the ``x-ojs-tenant`` metadata, the binding's ``X-OJS-Tenant``.

A call carrying it is tenant-scoped with the HTTP binding's rules (``ojs_core.tenancy``,
``ojs_core.tenant_scope``): enqueued jobs get it in ``meta.tenant_id`` (``INVALID_ARGUMENT``
when the job names another), and reads, cancels, fetches, queue statistics and the dead letter
see only that tenant's jobs (another tenant's job is ``NOT_FOUND``). Like the header, it is a
scope and not a credential (``docs/security.md``).
"""

from __future__ import annotations

from typing import Any

from ojs_core.tenancy import parse_tenant_id

__all__ = ["METADATA_KEY", "tenant_of"]

METADATA_KEY = "x-ojs-tenant"


def tenant_of(context: Any) -> str | None:
    """The call's tenant (checked: an invalid one is ``INVALID_ARGUMENT`` naming
    ``metadata.x-ojs-tenant``), or ``None`` for an unscoped call."""
    for key, value in context.invocation_metadata() or ():
        if key == METADATA_KEY:
            raw = value if isinstance(value, str) else ""
            return parse_tenant_id(raw.strip(), "metadata." + METADATA_KEY)
    return None
