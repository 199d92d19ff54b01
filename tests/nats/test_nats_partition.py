"""Partitions between ojs-server and nats-server, made by a TCP proxy (tests/nats/tcp_proxy.py).

An ``ojs-server`` process reaches its nats-server only through the proxy. Producers enqueue over
HTTP with ids they choose, so every id ever attempted is known; mid-load the proxy holds all
traffic for 40 s (a blackhole: nothing delivered, nothing closed) and then releases it, or cuts
every connection a few times. Afterwards a drain fetches and acks everything over HTTP and
records each delivery. What must hold:

* every job that got a 201 is delivered and acked exactly once;
* every job whose request failed (an error status, a transport error, a timeout) either does not
  exist or is delivered and acked exactly once, never left stranded;
* no job is delivered twice.

Every wait is bounded: requests have a client timeout, the load and the drain have deadlines,
and the test has its own phase deadline (``@pytest.mark.deadline``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from fault_support import V1, OjsServer, http_client
from nats_support import eventually
from tcp_proxy import TcpProxy

from ojs_core.ids import uuid7
from ojs_nats.embedded import EmbeddedNatsServer

pytestmark = pytest.mark.slow

PRODUCERS = 8
#: How long a client waits for one answer: longer than any bounded wait inside the server.
REQUEST_TIMEOUT_S = 30.0
HOLD_S = 40.0


@attrs.define
class Load:
    """What the producers attempted and what they were told."""

    attempted: list[str] = attrs.Factory(list)
    acked: set[str] = attrs.Factory(set)
    #: id -> why the request failed (a status code or an exception's name).
    failed: dict[str, str] = attrs.Factory(dict)
    #: How long each request that did not get a 201 took.
    slow: list[float] = attrs.Factory(list)
    #: Answers other than 201 and 503.
    unexpected: list[str] = attrs.Factory(list)
    stop: asyncio.Event = attrs.Factory(asyncio.Event)


async def produce(base_url: str, load: Load, n: int) -> None:
    async with http_client(base_url, REQUEST_TIMEOUT_S) as http:
        i = 0
        while not load.stop.is_set():
            i += 1
            job_id = uuid7()
            load.attempted.append(job_id)
            started = time.monotonic()
            try:
                response = await http.post(
                    f"{V1}/jobs", json={"id": job_id, "type": "partition.job", "args": [n, i]}
                )
            except httpx.HTTPError as exc:
                load.failed[job_id] = type(exc).__name__
                load.slow.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 201 and response.json()["job"]["id"] == job_id:
                load.acked.add(job_id)
            else:
                if response.status_code != 503:  # only "unavailable" is expected
                    load.unexpected.append(f"{response.status_code}: {response.text[:300]}")
                load.failed[job_id] = str(response.status_code)
                load.slow.append(time.monotonic() - started)
                await asyncio.sleep(0.05)


async def drain(base_url: str, load: Load, within: float) -> Counter[str]:
    """Fetch and ack until every acknowledged job was delivered and every failed one is either
    delivered or absent (bounded); returns how often each id was delivered."""
    delivered: Counter[str] = Counter()
    async with http_client(base_url, REQUEST_TIMEOUT_S) as http:

        async def ack(job_id: str) -> None:
            response = await http.post(
                f"{V1}/workers/ack", json={"job_id": job_id, "worker_id": "drainer"}
            )
            assert response.status_code == 200, (job_id, response.text)

        async def state(job_id: str) -> str | None:
            response = await http.get(f"{V1}/jobs/{job_id}")
            if response.status_code == 404:
                return None
            assert response.status_code == 200, response.text
            return str(response.json()["job"]["state"])

        async def drained() -> bool:
            response = await http.post(
                f"{V1}/workers/fetch",
                json={
                    "queues": ["default"],
                    "count": 200,
                    "worker_id": "drainer",
                    "visibility_timeout_ms": 600_000,  # no redelivery while draining
                },
            )
            assert response.status_code == 200, response.text
            jobs = response.json()["jobs"]
            for job in jobs:
                delivered[job["id"]] += 1
            await asyncio.gather(*(ack(job["id"]) for job in jobs))
            if jobs or not load.acked <= delivered.keys():
                return False
            # Nothing to fetch now: every failed job not delivered must not exist at all.
            pending = [j for j in load.failed if j not in delivered]
            states = await asyncio.gather(*(state(j) for j in pending))
            return all(s is None for s in states)

        await eventually(drained, within=within, interval=0.2, what="drain every job")
    return delivered


@pytest.fixture
async def proxied_server(tmp_path: Path) -> AsyncIterator[tuple[TcpProxy, OjsServer]]:
    nats_server = EmbeddedNatsServer(tmp_path / "nats-store", auth=False)
    await nats_server.start()
    proxy = await TcpProxy("127.0.0.1", nats_server.port or 0).start()
    server = OjsServer(tmp_path, "--backend", proxy.url, "--enable-reset", log_level="info")
    try:
        await server.ready()
        yield proxy, server
    finally:
        proxy.release()
        await asyncio.to_thread(server.stop)
        await proxy.close()
        await nats_server.stop()


async def hold_40s(proxy: TcpProxy) -> None:
    proxy.hold()
    await asyncio.sleep(HOLD_S)
    proxy.release()


async def cut_three_times(proxy: TcpProxy) -> None:
    for _ in range(3):
        assert proxy.cut() >= 1
        await asyncio.sleep(1.5)


async def partition_under_load(
    proxy: TcpProxy, server: OjsServer, fault: Callable[[TcpProxy], Awaitable[None]]
) -> dict[str, Any]:
    load = Load()
    producers = [asyncio.ensure_future(produce(server.url, load, n)) for n in range(PRODUCERS)]
    try:
        started = time.monotonic()
        await eventually(
            lambda: len(load.acked) >= 200 and time.monotonic() - started >= 1.0,
            within=30,
            what="1 s of load and 200 jobs acknowledged",
        )
        before = len(load.acked)
        await fault(proxy)
        after_fault = len(load.acked)
        # The server recovers by itself: new enqueues succeed again soon after.
        await eventually(
            lambda: len(load.acked) >= after_fault + 100,
            within=30,
            what="100 more jobs acknowledged after the fault",
        )
    finally:
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*producers), REQUEST_TIMEOUT_S + 15)

    assert load.unexpected == [], f"{load.unexpected}\n{server.errors_in_log()}"
    delivered = await drain(server.url, load, within=90)
    twice = {j: n for j, n in delivered.items() if n > 1}
    assert twice == {}, f"delivered more than once: {twice}"
    assert load.acked <= delivered.keys(), "an acknowledged job was never delivered"
    assert set(delivered) <= set(load.attempted), "a job nobody enqueued was delivered"
    existing_failed = sorted(j for j in load.failed if j in delivered)
    report = {
        "attempted": len(load.attempted),
        "acked_201": len(load.acked),
        "acked_before_fault": before,
        "failed": len(load.failed),
        "failed_reasons": dict(Counter(load.failed.values())),
        "failed_but_existing": len(existing_failed),
        "delivered": len(delivered),
        "slowest_failure_s": round(max(load.slow, default=0.0), 2),
        "proxy_connections_accepted": proxy.accepted,
    }
    print(f"partition report: {report}")
    assert len(delivered) == len(load.acked) + len(existing_failed)
    return report


@pytest.mark.deadline(240)
async def test_a_40s_blackhole_under_enqueue_load_loses_and_duplicates_nothing(
    proxied_server: tuple[TcpProxy, OjsServer],
) -> None:
    proxy, server = proxied_server
    report = await partition_under_load(proxy, server, hold_40s)
    # Requests during the hold failed, each within the server's bounded waits.
    assert report["failed"] > 0
    assert report["slowest_failure_s"] < REQUEST_TIMEOUT_S


@pytest.mark.deadline(180)
async def test_connections_cut_under_enqueue_load_lose_and_duplicate_nothing(
    proxied_server: tuple[TcpProxy, OjsServer],
) -> None:
    proxy, server = proxied_server
    report = await partition_under_load(proxy, server, cut_three_times)
    assert report["proxy_connections_accepted"] >= 4  # it reconnected after every cut
