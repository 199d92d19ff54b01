"""Readiness and health over NATS when the store is slow or unreachable.

The app's backend reaches the session's nats-server through a TcpProxy that the test slows
down or holds (a blackhole: nothing delivered, nothing closed); no mocks.
"""

from __future__ import annotations

import httpx
import pytest
from nats_support import eventually
from tcp_proxy import TcpProxy

from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_nats.backend import NatsBackend
from ojs_nats.embedded import EmbeddedNatsServer

V1 = "/ojs/v1"
pytestmark = pytest.mark.slow  # two 2 s flush timeouts and a reconnection


async def test_ready_and_health_follow_the_backend(nats_server: EmbeddedNatsServer) -> None:
    async with TcpProxy("127.0.0.1", nats_server.port or 0) as proxy:
        backend = NatsBackend(proxy.url)
        app = create_app(backend, HttpSettings(run_scheduler=False))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://test") as client,
            ):
                ready = await client.get(f"{V1}/ready")
                assert ready.status_code == 200
                health = (await client.get(f"{V1}/health")).json()
                assert health["backend"]["status"] == "ok"

                # Slow (a round trip over a second): degraded, still serving.
                proxy.delay(0.6)
                slow = await client.get(f"{V1}/health")
                assert slow.status_code == 200
                assert slow.json()["backend"]["status"] == "degraded"
                assert (await client.get(f"{V1}/ready")).status_code == 200
                proxy.delay(0)

                # Unreachable: down, and not ready until the link heals.
                proxy.hold()
                down = await client.get(f"{V1}/health")
                assert down.status_code == 503
                assert down.json()["backend"]["status"] == "down"
                not_ready = await client.get(f"{V1}/ready")
                assert not_ready.status_code == 503
                assert not_ready.json()["status"] == "disconnected"
                proxy.release()

                async def ready_again() -> bool:
                    return (await client.get(f"{V1}/ready")).status_code == 200

                await eventually(ready_again, within=20, what="ready after the link healed")
        finally:
            proxy.release()
