"""Job versioning across replicas: a declaration made in a heartbeat through one replica routes
the worker's fetches through the other, and version lanes keep each replica's fetches from
pulling (and so delaying) the jobs of versions their workers do not take."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_core.versioning import parse_declaration

S = JobState
V1 = parse_declaration({"invoice.generate": ">=1.0 <2.0"}, "versions")
V2 = parse_declaration({"invoice.generate": "2.0"}, "versions")


async def _push(svc: JobService, version: str | None, **extra: Any) -> str:
    body: dict[str, Any] = {"type": "invoice.generate", "args": [], "queue": "ver", **extra}
    if version is not None:
        body["version"] = version
    return (await svc.enqueue(body)).job.id


async def test_a_heartbeat_through_one_replica_routes_fetches_through_the_other(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    v2 = await _push(a, "2.0")
    v1 = await _push(a, "1.0")
    await a.heartbeat("w-x", [], info={"versions": {"invoice.generate": ">=1.0 <2.0"}})
    got = await b.fetch(["ver"], count=5, worker_id="w-x")
    assert [j.id for j in got] == [v1]
    assert (await b.get(v2)).state is S.AVAILABLE
    # A new declaration through A applies to B's fetches once B's one-second cache expires.
    await a.heartbeat("w-x", [], info={"versions": {"invoice.generate": "2.0"}})
    deadline = time.monotonic() + 10
    claimed: list[str] = []
    while not claimed and time.monotonic() < deadline:
        claimed = [j.id for j in await b.fetch(["ver"], worker_id="w-x", wait_ms=200)]
    assert claimed == [v2]


async def test_incompatible_fetches_on_one_replica_do_not_delay_the_other(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    backlog = [
        o.job.id
        for o in await a.enqueue_batch(
            [
                {"type": "invoice.generate", "version": "2.0", "args": [i], "queue": "ver"}
                for i in range(50)
            ]
        )
    ]
    mine = await _push(a, "1.0")

    async def old_worker() -> list[str]:
        out: list[str] = []
        for _ in range(20):
            out.extend(j.id for j in await a.fetch(["ver"], count=5, versions=V1))
        return out

    old, new = await asyncio.gather(
        old_worker(), b.fetch(["ver"], count=50, versions=V2, wait_ms=2000)
    )
    assert old == [mine]
    # Every v2 job was handed to B's compatible fetch at once, in order: none was pulled and
    # set aside by A's incompatible fetches running at the same time.
    assert [j.id for j in new] == backlog
