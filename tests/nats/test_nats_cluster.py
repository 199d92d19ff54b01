"""Leader loss on a 3-node NATS cluster: ``kill -9`` of the jobs stream's leader under load.

Three nats-server processes (JetStream, cluster routes on loopback, ``fault_support.NatsCluster``)
and one ``ojs-server --nats-replicas 3`` given all three URLs. Producers enqueue over HTTP with
ids they choose; workers fetch and ack over HTTP (retrying a failed ack a few times, as a worker
would). Mid-load the leader of ``KV_OJS_JOBS`` is killed with SIGKILL; the load goes on through
the election. Then everything left is drained on the two surviving nodes. What must hold:

* every job that got a 201 ends ``completed``, nothing acknowledged is lost;
* no job is acked (200) twice, none is completed twice;
* a job whose enqueue failed either does not exist or is completed once.

The test counts the client requests that failed around the election and reports them. It runs
twice: the killed leader is the node ojs-server is connected to (the connection drops too, and
nats-py reconnects to a survivor), or another node (only the election).

Marked ``cluster``: deselected by default (``addopts`` in pyproject.toml); ``.ci/run`` runs it in
a step of its own with ``-m cluster``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from fault_support import V1, NatsCluster, OjsServer, http_client
from nats_support import eventually

from ojs_core.ids import uuid7
from ojs_nats import names

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.deadline(240)]

JOBS_STREAM = names.kv_stream(names.JOBS_BUCKET)
PRODUCERS = 4
WORKERS = 4
REQUEST_TIMEOUT_S = 30.0
VISIBILITY_MS = 10_000
ACK_TRIES = 10


@attrs.define
class Outcome:
    started: float
    op: str
    ok: bool
    #: The status code, or the name of the transport error.
    detail: str
    seconds: float

    @property
    def failed(self) -> bool:
        """A server error or no answer (a 409 is an answer: the ack came too late)."""
        return not self.ok and self.detail != "409"


@attrs.define
class Load:
    attempted: list[str] = attrs.Factory(list)
    created: set[str] = attrs.Factory(set)
    enqueue_failed: set[str] = attrs.Factory(set)
    delivered: Counter[str] = attrs.Factory(Counter)
    acked: Counter[str] = attrs.Factory(Counter)
    #: Acks refused with 409 after an earlier try of the same ack failed (it had landed).
    ack_conflicts: set[str] = attrs.Factory(set)
    #: Acks refused (409) at their first try: the job was not this worker's to ack.
    refused: dict[str, str] = attrs.Factory(dict)
    #: job id -> (worker, time) of every delivery.
    deliveries: dict[str, list[tuple[str, int, float]]] = attrs.Factory(dict)
    outcomes: list[Outcome] = attrs.Factory(list)
    #: Answers other than success, 503 (unavailable) and 409 to an ack (it came too late).
    unexpected: list[str] = attrs.Factory(list)
    #: "op: message" of every 5xx answer, counted.
    errors: Counter[str] = attrs.Factory(Counter)
    stop: asyncio.Event = attrs.Factory(asyncio.Event)

    def record(self, op: str, started: float, ok: bool, detail: str) -> None:
        self.outcomes.append(Outcome(started, op, ok, detail, time.monotonic() - started))


async def call(
    http: httpx.AsyncClient, load: Load, op: str, path: str, body: dict[str, Any]
) -> httpx.Response | None:
    """POST; the response, or ``None`` after a transport error or timeout (recorded)."""
    started = time.monotonic()
    try:
        response = await http.post(path, json=body)
    except httpx.HTTPError as exc:
        load.record(op, started, False, type(exc).__name__)
        return None
    ok = response.status_code < 300
    load.record(op, started, ok, str(response.status_code))
    if response.status_code >= 500:
        load.errors[f"{op}: {response.json()['error']['message'][:160]}"] += 1
    if response.status_code not in (200, 201, 503) and (op, response.status_code) != ("ack", 409):
        load.unexpected.append(f"{op} -> {response.status_code}: {response.text[:300]}")
    return response


async def produce(base_url: str, load: Load, n: int, batch: int) -> None:
    """Enqueue jobs with ids chosen here, one at a time (``batch`` 1) or in atomic batches."""
    async with http_client(base_url, REQUEST_TIMEOUT_S) as http:
        i = 0
        while not load.stop.is_set():
            bodies: list[dict[str, Any]] = []
            for _ in range(batch):
                i += 1
                bodies.append({"id": uuid7(), "type": "cluster.job", "args": [n, i]})
            ids: list[str] = [b["id"] for b in bodies]
            load.attempted.extend(ids)
            if batch == 1:
                response = await call(http, load, "enqueue", f"{V1}/jobs", bodies[0])
            else:
                path = f"{V1}/jobs/batch"
                response = await call(http, load, "enqueue_batch", path, {"jobs": bodies})
            if response is not None and response.status_code == 201:
                load.created.update(ids)
            else:
                load.enqueue_failed.update(ids)
                await asyncio.sleep(0.05)


async def work(base_url: str, load: Load, n: int, until: asyncio.Event) -> None:
    """Fetch and ack until ``until`` is set; a failed ack is retried (bounded)."""
    worker_id = f"w{n}"
    async with http_client(base_url, REQUEST_TIMEOUT_S) as http:
        while not until.is_set():
            body = {
                "queues": ["default"],
                "count": 10,
                "worker_id": worker_id,
                "visibility_timeout_ms": VISIBILITY_MS,
                "wait_ms": 200,
            }
            response = await call(http, load, "fetch", f"{V1}/workers/fetch", body)
            if response is None or response.status_code != 200:
                await asyncio.sleep(0.05)
                continue
            for job in response.json()["jobs"]:
                load.delivered[job["id"]] += 1
                load.deliveries.setdefault(job["id"], []).append(
                    (worker_id, int(job["attempt"]), time.monotonic())
                )
                await ack(http, load, job["id"], worker_id)


async def ack(http: httpx.AsyncClient, load: Load, job_id: str, worker_id: str) -> None:
    body = {"job_id": job_id, "worker_id": worker_id}
    for attempt in range(ACK_TRIES):
        response = await call(http, load, "ack", f"{V1}/workers/ack", body)
        if response is not None and response.status_code == 200:
            load.acked[job_id] += 1
            return
        if response is not None and response.status_code == 409:
            if attempt > 0:
                load.ack_conflicts.add(job_id)  # an earlier try landed, or the attempt expired
            else:
                load.refused[job_id] = response.text
            return
        await asyncio.sleep(0.5)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster")
    try:
        await nodes.start()
        yield nodes
    finally:
        await asyncio.to_thread(nodes.stop)


@pytest.fixture
async def server(tmp_path: Path, cluster: NatsCluster) -> AsyncIterator[OjsServer]:
    ojs = OjsServer(tmp_path, "--backend", cluster.urls, "--nats-replicas", "3", log_level="info")
    try:
        await ojs.ready(within=60)
        yield ojs
    finally:
        await asyncio.to_thread(ojs.stop)


async def watch_leader(cluster: NatsCluster, victim: str, seen: list[tuple[float, str]]) -> None:
    """Note when the jobs stream has a leader other than ``victim`` again."""
    while True:
        leader = await cluster.probe_leader(JOBS_STREAM)
        if leader is not None and leader != victim:
            seen.append((time.monotonic(), leader))
            return
        await asyncio.sleep(0.1)


async def drain(base_url: str, load: Load, within: float) -> dict[str, str | None]:
    """Fetch and ack until every job that exists is completed (bounded); the final state of
    every job attempted (``None``: it does not exist)."""
    done = asyncio.Event()
    final: dict[str, str | None] = {}
    async with http_client(base_url, REQUEST_TIMEOUT_S) as http:

        async def state(job_id: str) -> str | None:
            response = await http.get(f"{V1}/jobs/{job_id}")
            if response.status_code == 404:
                return None
            assert response.status_code == 200, response.text
            return str(response.json()["job"]["state"])

        workers = [asyncio.ensure_future(work(base_url, load, n, done)) for n in range(2)]
        try:

            async def all_done() -> bool:
                for worker in workers:
                    if worker.done():
                        worker.result()  # raise what failed
                ids = sorted(set(load.attempted))
                for start in range(0, len(ids), 50):
                    chunk = ids[start : start + 50]
                    states = await asyncio.gather(*(state(j) for j in chunk))
                    final.update(zip(chunk, states, strict=True))
                return all(s in (None, "completed") for s in final.values())

            await eventually(all_done, within=within, interval=1.0, what="every job completed")
        finally:
            done.set()
            await asyncio.wait_for(asyncio.gather(*workers), REQUEST_TIMEOUT_S + 15)
    return final


@pytest.mark.parametrize("victim", ["connected", "other"])
async def test_kill9_of_the_jobs_stream_leader_under_load(
    cluster: NatsCluster, server: OjsServer, victim: str
) -> None:
    serving = await cluster.node_serving("ojs-python")
    others = [n for n in cluster.live() if n is not serving]
    target = serving if victim == "connected" else others[0]
    await cluster.move_leader(JOBS_STREAM, target)

    # The queue's record and consumer exist before the load: its first use by concurrent
    # producers is not what this test measures.
    async with http_client(server.url, REQUEST_TIMEOUT_S) as http:
        warm_up = await http.post(f"{V1}/jobs", json={"type": "cluster.warm_up", "args": []})
        assert warm_up.status_code == 201, warm_up.text
        warm_up_id = warm_up.json()["job"]["id"]

    load = Load()
    load.attempted.append(warm_up_id)
    load.created.add(warm_up_id)
    workers_stop = asyncio.Event()
    producers = [
        asyncio.ensure_future(produce(server.url, load, n, batch=5 if n == 0 else 1))
        for n in range(PRODUCERS)
    ]
    workers = [
        asyncio.ensure_future(work(server.url, load, n, workers_stop)) for n in range(WORKERS)
    ]
    new_leader: list[tuple[float, str]] = []
    try:
        started = time.monotonic()
        await eventually(
            lambda: (
                len(load.created) >= 200
                and sum(load.acked.values()) >= 100
                and time.monotonic() - started >= 2.0
            ),
            within=60,
            what="2 s of load, 200 jobs created and 100 acked",
        )
        assert await cluster.probe_leader(JOBS_STREAM) == target.name
        created_before = len(load.created)
        target.kill9()
        killed_at = time.monotonic()
        watcher = asyncio.ensure_future(watch_leader(cluster, target.name, new_leader))
        await asyncio.wait_for(watcher, 60)
        elected_after = new_leader[0][0] - killed_at
        # Enqueues and acks go through again once a new leader is elected.
        created_then = len(load.created)
        acked_then = sum(load.acked.values())
        await eventually(
            lambda: (
                len(load.created) >= created_then + 100
                and sum(load.acked.values()) >= acked_then + 50
            ),
            within=60,
            what="100 more jobs created and 50 more acked after the election",
        )
        recovered_after = time.monotonic() - killed_at
        await asyncio.sleep(1.0)
    finally:
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*producers), REQUEST_TIMEOUT_S + 15)
        workers_stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), REQUEST_TIMEOUT_S * 3)

    final = await drain(server.url, load, within=90)
    failed = [o for o in load.outcomes if o.failed]
    around = [o for o in failed if killed_at - 1 <= o.started <= killed_at + recovered_after]
    report = {
        "victim": victim,
        "killed": target.name,
        "ojs_server_was_on": serving.name,
        "new_leader": new_leader[0][1],
        "leader_elected_after_s": round(elected_after, 2),
        "requests_recovered_after_s": round(recovered_after, 2),
        "created_before_kill": created_before,
        "created_201": len(load.created),
        "enqueue_failed": len(load.enqueue_failed),
        "enqueue_failed_but_completed": sum(
            1 for j in load.enqueue_failed if final[j] == "completed"
        ),
        "acked_200": sum(load.acked.values()),
        "ack_conflicts_after_retry": len(load.ack_conflicts),
        "redelivered": sum(1 for n in load.delivered.values() if n > 1),
        "acks_409_after_visibility_timeout": len(load.refused),
        "requests": len(load.outcomes),
        "requests_failed": len(failed),
        "requests_failed_around_election": len(around),
        "failed_by_op": dict(Counter(f"{o.op}:{o.detail}" for o in failed)),
        "slowest_request_s": round(max(o.seconds for o in load.outcomes), 2),
    }
    print(f"cluster report: {report}")
    print(f"server errors: {dict(load.errors)}")

    assert load.unexpected == [], f"{load.unexpected}\n{server.errors_in_log()}"
    lost = sorted(j for j in load.created if final[j] != "completed")
    assert lost == [], f"created (201) but not completed: {lost}"
    twice = {j: n for j, n in load.acked.items() if n > 1}
    assert twice == {}, f"acked (200) twice: {twice}"
    assert set(final) == set(load.attempted)
    assert {s for s in final.values()} <= {None, "completed"}
    # Each attempt went to one worker; a job came back only after its visibility timeout (an
    # ack delayed by the election past it is refused with 409, and the job runs again).
    for job_id, seen in load.deliveries.items():
        attempts = [attempt for _, attempt, _ in seen]
        assert len(attempts) == len(set(attempts)), (job_id, seen)
    for job_id, why in load.refused.items():
        assert len(load.deliveries[job_id]) > 1, (job_id, why, load.deliveries[job_id])
