"""The manifest tells the truth: core specifications under ``urn:ojs:spec:*``, extensions under
``urn:ojs:ext:*`` (experimental ones under ``urn:ojs:ext:experimental:*``), every version
SemVer, each listed once."""

from __future__ import annotations

import re

import httpx
from test_http_binding import client

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
