"""The manifest tells the truth: core specifications under ``urn:ojs:spec:*``, extensions under
``urn:ojs:ext:*`` (experimental ones under ``urn:ojs:ext:experimental:*``), every version
SemVer, each listed once."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from test_http_binding import client, error_of

from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_sqlite import SqliteBackend

__all__ = ["client"]

SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")


async def test_specs_and_extensions_are_in_their_tiers(client: httpx.AsyncClient) -> None:
    manifest = (await client.get("/ojs/manifest")).json()
    specs = manifest["specs"]
    official = manifest["extensions"]["official"]
    experimental = manifest["extensions"]["experimental"]
    for entry in specs:
        assert entry["uri"] == f"urn:ojs:spec:{entry['name']}"
    for entry in official:
        assert entry["uri"] == f"urn:ojs:ext:{entry['name']}"
    for entry in experimental:
        assert entry["uri"] == f"urn:ojs:ext:experimental:{entry['name']}"
    every = [*specs, *official, *experimental]
    assert all(SEMVER.match(e["version"]) for e in every), [e["version"] for e in every]
    uris = [e["uri"] for e in every]
    assert len(uris) == len(set(uris))
    names = {e["name"] for e in specs}
    assert {"retry", "cron", "workflows", "unique-jobs"} <= names
    assert not {"retry", "cron", "workflows", "unique-jobs"} & {e["name"] for e in official}
    assert {"dead-letter", "rate-limiting", "backpressure", "progress", "webhooks"} <= {
        e["name"] for e in official
    }


async def test_fair_scheduling_is_declared_where_pools_are_stored(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """FS-001..004 hold on memory (PoolStore): declared; not on a backend without pools,
    whose pool routes answer 422 ``unsupported``."""
    official = (await client.get("/ojs/manifest")).json()["extensions"]["official"]
    entry = {e["name"]: e for e in official}["fair-scheduling"]
    assert entry["uri"] == "urn:ojs:ext:fair-scheduling"
    assert entry["version"] == "1.0.0-rc.1"
    assert entry["endpoint"] == "GET /ojs/v1/admin/pools"
    assert entry["strategies"] == ["strict", "round-robin", "weighted", "least-loaded"]
    assert entry["default_strategy"] == "strict"
    app = create_app(SqliteBackend(str(tmp_path / "ojs.db")), HttpSettings(run_scheduler=False))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as other,
    ):
        official = (await other.get("/ojs/manifest")).json()["extensions"]["official"]
        assert "fair-scheduling" not in {e["name"] for e in official}
        error_of(await other.get("/ojs/v1/admin/pools"), 422, "unsupported")
        # Strategies across queues still work without pools (per process).
        r = await other.post(
            "/ojs/v1/workers/fetch", json={"queues": ["a", "b"], "strategy": "round-robin"}
        )
        assert r.status_code == 200
