"""Route tables of the HTTP binding, one module per resource."""

from __future__ import annotations

from starlette.routing import BaseRoute

from . import (
    admin,
    bulk,
    checkpoints,
    cron,
    jobs,
    pools,
    progress,
    queue_config,
    queues,
    rate_limits,
    schema_registry,
    stream,
    system,
    tenants,
    webhook_deliveries,
    webhooks,
    workers,
    workflows,
    ws,
)

__all__ = ["routes"]


def routes(*, enable_reset: bool) -> list[BaseRoute]:
    """Every route of levels 0-4 (plus the reset hook when enabled)."""
    return [
        *system.routes(enable_reset=enable_reset),
        *bulk.routes,
        *jobs.routes,
        *workers.routes,
        *queues.routes,
        *workflows.routes,
        *cron.routes,
        *progress.routes,
        *checkpoints.routes,
        *stream.routes,
        *ws.routes,
        *admin.routes,
        *schema_registry.routes,
        *queue_config.routes,
        *rate_limits.routes,
        *tenants.routes,
        *pools.routes,
        *webhooks.routes,
        *webhook_deliveries.routes,
    ]
