"""Crash tests: ``kill -9`` of ojs-server mid-load, of nats-server, and of an embedded ojs-server.

Every job a client saw acknowledged (HTTP 201, or an ``enqueue`` that returned) must survive the
crash: still there, ``available``, and handed out by a fetch after the restart. ojs-server runs
as ``python -m ojs_http.cli`` from this venv (no ``uv run`` start-up cost).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fault_support import V1, OjsServer
from nats_support import eventually

from ojs_core.errors import BackendUnavailableError
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_nats.backend import NatsBackend
from ojs_nats.embedded import EmbeddedNatsServer

pytestmark = pytest.mark.slow

S = JobState


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[OjsServer]]:
    """Every ojs-server a test starts; any still running at the end is stopped."""
    started: list[OjsServer] = []
    yield started
    for server in started:
        server.stop()


async def load(base_url: str, clients: int, seconds: float, acked: list[str]) -> int:
    """``clients`` concurrent enqueuers for up to ``seconds``; 201 ids go into ``acked``.

    A client stops at its first transport error (the server died); returns how many did.
    """
    deadline = time.monotonic() + seconds
    failed = 0

    async def client(n: int) -> None:
        nonlocal failed
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                try:
                    response = await http.post(
                        f"{V1}/jobs", json={"type": "crash.job", "args": [n, i]}
                    )
                except httpx.TransportError:
                    failed += 1
                    return
                if response.status_code == 201:
                    acked.append(response.json()["job"]["id"])
                else:
                    assert response.status_code == 503, response.text

    await asyncio.gather(*(client(n) for n in range(clients)))
    return failed


async def fetch_all_over_http(base_url: str, wanted: set[str], within: float = 20) -> set[str]:
    """Fetch from ``default`` until every id of ``wanted`` came out (bounded)."""
    got: set[str] = set()
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:

        async def all_seen() -> bool:
            response = await http.post(
                f"{V1}/workers/fetch", json={"queues": ["default"], "count": 500}
            )
            assert response.status_code == 200, response.text
            got.update(j["id"] for j in response.json()["jobs"])
            return wanted <= got

        await eventually(all_seen, within=within, what=f"fetch all {len(wanted)} jobs")
    return got


async def states_over_http(base_url: str, ids: list[str]) -> dict[str, Any]:
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:

        async def state(job_id: str) -> Any:
            async with limit:
                response = await http.get(f"{V1}/jobs/{job_id}")
            return response.json()["job"]["state"] if response.status_code == 200 else None

        return dict(zip(ids, await asyncio.gather(*(state(i) for i in ids)), strict=True))


# -- kill -9 of ojs-server ------------------------------------------------------------------------


async def test_kill9_ojs_server_mid_load_loses_no_acknowledged_job(
    nats_url: str, tmp_path: Path, servers: list[OjsServer]
) -> None:
    admin = NatsBackend(nats_url)
    await admin.open()
    try:
        await admin.reset()
        first = OjsServer(tmp_path, "--backend", nats_url)
        servers.append(first)
        await first.ready()

        acked: list[str] = []
        started = time.monotonic()
        # Until the server dies (bounded): a slow machine must not end the load before the kill.
        loading = asyncio.ensure_future(load(first.url, clients=20, seconds=60, acked=acked))
        await eventually(
            lambda: len(acked) >= 200 and time.monotonic() - started >= 1.0,
            within=15,
            what="1 s of load and 200 jobs acknowledged",
        )
        first.kill9()
        print(f"ojs-server killed after {len(acked)} acknowledged enqueues")
        failed = await asyncio.wait_for(loading, 20)
        assert failed == 20  # every client saw the server die mid-load
        assert len(acked) == len(set(acked))

        second = OjsServer(tmp_path, "--backend", nats_url)
        servers.append(second)
        await second.ready()
        jobs = await admin.get_jobs(acked)
        assert [j for j, job in zip(acked, jobs, strict=True) if job is None] == []
        assert {job.state for job in jobs if job} == {S.AVAILABLE}
        fetched = await fetch_all_over_http(second.url, set(acked))
        assert set(acked) <= fetched
    finally:
        await admin.close()


# -- kill -9 of nats-server -----------------------------------------------------------------------


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(tmp_path / "nats-store", auth=False)
    await server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_kill9_nats_server_loses_no_acknowledged_job(own_nats: EmbeddedNatsServer) -> None:
    backend = NatsBackend(own_nats.url)
    await backend.open()
    svc = JobService(backend)
    try:
        acked: list[str] = []
        for batch in range(4):
            acked.extend(
                o.job.id
                for o in await svc.enqueue_batch(
                    [{"type": "n.job", "args": [batch, i]} for i in range(50)]
                )
            )
        for i in range(50):
            acked.append((await svc.enqueue({"type": "n.single", "args": [i]})).job.id)
        first_fetched = await svc.fetch(["default"], count=10, worker_id="before")
        assert len(first_fetched) == 10

        async def enqueuer(n: int) -> float:
            """Enqueue until NATS goes away; return how long the failing enqueue took."""
            for i in range(100_000):
                started = time.monotonic()
                try:
                    outcome = await asyncio.wait_for(
                        svc.enqueue({"type": "n.loaded", "args": [n, i]}), 15
                    )
                except BackendUnavailableError:
                    return time.monotonic() - started
                acked.append(outcome.job.id)
            raise AssertionError("NATS never went away")

        loaded = len(acked)
        enqueuers = [asyncio.ensure_future(enqueuer(n)) for n in range(5)]
        await eventually(lambda: len(acked) >= loaded + 100, what="100 enqueues under load")
        port, pid = own_nats.port, int(own_nats.pid_file.read_text())
        own_nats.kill()  # mid-load
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        in_flight_failed_after = await asyncio.wait_for(asyncio.gather(*enqueuers), 20)
        assert max(in_flight_failed_after) < 15

        # While NATS is down an enqueue fails with 503-backend_unavailable; it must not hang.
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            await asyncio.wait_for(svc.enqueue({"type": "n.down", "args": []}), 15)
        unavailable_after = time.monotonic() - started
        assert (await backend.health()).ok is False

        await own_nats.start()  # same port, same data directory
        assert own_nats.port == port

        async def healthy() -> bool:
            return (await backend.health()).ok

        await eventually(healthy, within=20, what="backend reconnected")
        jobs = await backend.get_jobs(acked)
        missing = [jid for jid, job in zip(acked, jobs, strict=True) if job is None]
        assert missing == []
        fetched_before = {j.id for j in first_fetched}
        for job in jobs:
            assert job is not None
            assert job.state is (S.ACTIVE if job.id in fetched_before else S.AVAILABLE)

        got: set[str] = set()

        async def all_fetched() -> bool:
            got.update(j.id for j in await svc.fetch(["default"], count=500, worker_id="after"))
            return set(acked) - fetched_before <= got

        await eventually(all_fetched, within=20, what="every acknowledged job fetched")
        assert not got & fetched_before  # the ones active before the crash stay with their worker
        for job_id in sorted(fetched_before):
            assert (await svc.ack(job_id, worker_id="before")).state is S.COMPLETED
        assert unavailable_after < 15
    finally:
        await backend.close()


# -- kill -9 of ojs-server with its embedded nats-server ------------------------------------------


async def test_kill9_embedded_ojs_server_keeps_acknowledged_jobs(
    tmp_path: Path, servers: list[OjsServer]
) -> None:
    data_dir = tmp_path / "ojs-data"
    args = ("--backend", "embedded", "--data-dir", str(data_dir))
    first = OjsServer(tmp_path, *args)
    servers.append(first)
    await first.ready()
    nats_pid = int((data_dir / "nats-server.pid").read_text())

    acked: list[str] = []
    started = time.monotonic()
    # Until the server dies (bounded): a slow machine must not end the load before the kill.
    loading = asyncio.ensure_future(load(first.url, clients=10, seconds=60, acked=acked))
    await eventually(
        lambda: len(acked) >= 150 and time.monotonic() - started >= 1.0,
        within=15,
        what="1 s of load and 150 jobs acknowledged",
    )
    first.kill9()
    print(f"embedded ojs-server killed after {len(acked)} acknowledged enqueues")
    assert await asyncio.wait_for(loading, 20) == 10

    def nats_child_gone() -> bool:
        try:
            os.kill(nats_pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{nats_pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] == "Z"

    await eventually(nats_child_gone, within=15, what="the embedded nats-server died with it")

    second = OjsServer(tmp_path, *args)
    servers.append(second)
    await second.ready()
    assert int((data_dir / "nats-server.pid").read_text()) != nats_pid
    states = await states_over_http(second.url, acked)
    assert {jid: s for jid, s in states.items() if s != "available"} == {}
    fetched = await fetch_all_over_http(second.url, set(acked))
    assert set(acked) <= fetched
