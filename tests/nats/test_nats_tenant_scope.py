"""Tenant scoping of queue statistics, the bulk routes and the dead letter on two replicas
of one real nats-server: one replica writes, the other reads and changes, and the scoping
holds across them (the scenarios are ``tenant_scope_scenarios``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from nats_fixtures import BackendFactory
from tenant_scope_scenarios import SCENARIOS
from webhook_scenarios import client_of

from ojs_http import create_app
from ojs_http.settings import HttpSettings

Scenario = Callable[[httpx.AsyncClient, httpx.AsyncClient], Awaitable[None]]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
async def test_scenario_on_two_replicas(scenario: Scenario, new_backend: BackendFactory) -> None:
    one, two = await new_backend(), await new_backend()
    settings = HttpSettings(run_scheduler=False)
    async with (
        client_of(create_app(one, settings, manage_backend=False)) as first,
        client_of(create_app(two, settings, manage_backend=False)) as second,
    ):
        await scenario(first, second)
