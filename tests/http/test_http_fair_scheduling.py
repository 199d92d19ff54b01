"""The fair-scheduling extension over HTTP: a fetch's ``strategy`` and ``weights``."""

from __future__ import annotations

from collections import Counter

import httpx
from test_http_binding import V1, client, error_of

__all__ = ["client"]

Q = ["critical", "default", "low"]


async def _fill(client: httpx.AsyncClient, queues: list[str], n: int) -> None:
    for q in queues:
        for _ in range(n):
            r = await client.post(f"{V1}/jobs", json={"type": "t.job", "args": [], "queue": q})
            assert r.status_code == 201, r.text


async def _fetch(client: httpx.AsyncClient, body: dict[str, object]) -> list[str]:
    r = await client.post(f"{V1}/workers/fetch", json={"queues": Q, "worker_id": "w"} | body)
    assert r.status_code == 200, r.text
    return [j["queue"] for j in r.json()["jobs"]]


async def test_fetch_strategies(client: httpx.AsyncClient) -> None:
    await _fill(client, Q, 6)
    assert await _fetch(client, {}) == ["critical"]
    assert await _fetch(client, {"strategy": "round-robin", "count": 3}) == Q
    weighted = {"strategy": "weighted", "weights": {"critical": 2, "default": 1, "low": 1}}
    got: Counter[str] = Counter()
    for _ in range(8):
        got.update(await _fetch(client, weighted))
    assert got == {"critical": 4, "default": 2, "low": 2}


async def test_bad_strategy_fields_are_400_with_their_path(client: httpx.AsyncClient) -> None:
    for body, path in (
        ({"strategy": "fastest"}, "strategy"),
        ({"weights": {"low": -1}}, "weights.low"),
        ({"weights": 3}, "weights"),
        (
            {"starvation_prevention": {"min_dispatch_ratio": 2}},
            "starvation_prevention.min_dispatch_ratio",
        ),
    ):
        r = await client.post(f"{V1}/workers/fetch", json={"queues": Q} | body)
        assert r.status_code == 400, r.text
        err = error_of(r, 400)
        assert err["details"]["validation_errors"][0]["path"] == path


async def test_fetch_weights_must_name_the_fetch_queues(client: httpx.AsyncClient) -> None:
    """A fetch's ``weights`` may only weigh its own ``queues`` (bounded, as a pool's are): a
    key it does not list is 400 naming it, before any of it is kept."""
    for body, path in (
        ({"weights": {"critical": 2, "elsewhere": 1}}, "weights.elsewhere"),
        ({"weights": {f"q{i}": 1 for i in range(5000)}}, "weights.q0"),
        ({"queue": "low", "weights": {"critical": 1}}, "weights.critical"),
        (
            {"starvation_prevention": {"enabled": True, "rotation_interval": "PT2H"}},
            "starvation_prevention.rotation_interval",
        ),
    ):
        fetch = body if "queue" in body else {"queues": Q} | body
        r = await client.post(f"{V1}/workers/fetch", json=fetch)
        err = error_of(r, 400)
        assert err["details"]["validation_errors"][0]["path"] == path


async def test_scheduling_stats(client: httpx.AsyncClient) -> None:
    await _fill(client, ["critical", "low"], 2)
    await _fetch(client, {"strategy": "round-robin", "count": 3})
    stats = (await client.get(f"{V1}/admin/scheduling/stats")).json()
    assert stats["window"] == "PT1M"
    by_name = {q["name"]: q for q in stats["queues"]}
    assert by_name["critical"]["dispatch_count_1m"] == 2
    assert by_name["low"]["dispatch_count_1m"] == 1
    assert by_name["critical"]["dispatch_ratio_1m"] == round(2 / 3, 4)
    assert by_name["critical"]["active_jobs"] == 2
    assert by_name["low"]["active_jobs"] == 1
    assert by_name["default"]["dispatch_count_1m"] == 0
    assert isinstance(by_name["low"]["avg_wait_ms"], int)
