"""Tenant scoping of queue statistics, the bulk routes and the dead letter on the memory
backend (the scenarios are ``tenant_scope_scenarios``; the NATS suite runs them on two
replicas)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from tenant_scope_scenarios import SCENARIOS
from test_http_binding import client

__all__ = ["client"]

Scenario = Callable[[httpx.AsyncClient, httpx.AsyncClient], Awaitable[None]]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
async def test_scenario(scenario: Scenario, client: httpx.AsyncClient) -> None:
    await scenario(client, client)
