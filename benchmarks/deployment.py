"""``uv run python -m benchmarks.deployment [--quick]``: the deployment users run.

A producer process enqueues; a worker process (another Python process) runs the handlers; one
nats-server between them. Measured side by side in one run:

* **raw**: nats-py alone, the floor: the producer ``js.publish``es, the worker pulls
  ``fetch(100)`` and acks each message;
* **ojs**: the producer calls ``Client.enqueue`` on ``NatsBackend``; the worker process runs
  ``JobService`` + ``Scheduler`` + ``Worker`` (library defaults but the concurrency).

Scenarios: **throughput** (``--jobs`` no-op jobs, 100 enqueues in flight, worker concurrency
``--concurrency``: enqueues/s at the producer, jobs/s at the worker from first to last
handler) and **latency** at a fixed rate (``--rate`` jobs/s for ``--seconds``: from the enqueue
call to the start of the handler, p50/p99; both processes read the same clock). Per job, each
process reports its CPU microseconds and nats-server its own (``/proc``) and the messages it
received (``in_msgs`` of ``/varz``: publishes, acks, API requests), so the budget is visible;
the last column divides the machine's cores by the three processes' CPU per job: the rate at
which they would fill every core, a ceiling no scheduling can pass.
A peer row (``--peers taskiq``: taskiq-nats's ``PullBasedJetStreamBroker`` with its defaults, the
producer calling ``task.kiq`` and the worker running taskiq's receiver with ``max_async_tasks``
set to the concurrency) runs when the library is importable:
``uv run --with taskiq-nats python -m benchmarks.deployment --peers taskiq``.

Not a test: no thresholds; the ratios to raw are the figures. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig

import nats
from ojs_nats.embedded import find_nats_server, free_port

RAW_STREAM = "DEPLOY"
RAW_SUBJECT = "deploy.jobs"
PAYLOAD_PAD = "user@example.com"
TASKIQ_STREAM = "taskiq_jetstream"
LABELS = {"raw": "raw nats-py", "ojs": "ojs-python", "taskiq": "taskiq-nats"}


def taskiq_broker(url: str, on_start: Any = None) -> Any:
    """The peer: a taskiq-nats pull broker with its defaults and one no-op task."""
    from taskiq_nats import PullBasedJetStreamBroker

    broker = PullBasedJetStreamBroker(url, stream_name=TASKIQ_STREAM)

    async def noop(i: int, pad: str, sent: float) -> None:
        if on_start is not None:
            on_start([i, pad, sent])

    return broker, broker.register_task(noop, task_name="bench.noop")


def preload(mode: str) -> None:
    """Import what ``mode`` runs, before its CPU time is measured: module imports are a
    start-up cost, not a per-job one (ojs-python's packages take ~0.3 s to import)."""
    if mode == "taskiq":
        import taskiq.api  # noqa: F401
        import taskiq_nats  # noqa: F401
    elif mode == "ojs":
        import ojs_core  # noqa: F401
        import ojs_nats  # noqa: F401


def cpu_us() -> float:
    """CPU time (user + system) of this process so far, in microseconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1e6


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the roles (each runs in its own process) ----------------------------------------------------


async def producer(mode: str, url: str, jobs: int, rate: float) -> dict[str, Any]:
    """Enqueue ``jobs`` jobs: as fast as 100 in flight allow (``rate`` 0), or at ``rate``/s."""
    preload(mode)
    started_cpu = cpu_us()
    if mode == "raw":
        nc = await nats.connect(url)
        js = nc.jetstream()

        async def send(i: int) -> None:
            body = json.dumps({"type": "bench.noop", "args": [i, PAYLOAD_PAD, time.time()]})
            await js.publish(RAW_SUBJECT, body.encode())

        close = nc.close
    elif mode == "taskiq":
        broker, noop_task = taskiq_broker(url)
        await broker.startup()

        async def send(i: int) -> None:
            await noop_task.kiq(i, PAYLOAD_PAD, time.time())

        close = broker.shutdown
    else:
        from ojs_core import Client
        from ojs_nats import NatsBackend

        backend = NatsBackend(url)
        await backend.open()
        client = Client(backend)

        async def send(i: int) -> None:
            await client.enqueue("bench.noop", [i, PAYLOAD_PAD, time.time()], queue="deploy")

        close = backend.close
    t0 = time.perf_counter()
    if rate <= 0:
        window = asyncio.Semaphore(100)

        async def one(i: int) -> None:
            async with window:
                await send(i)

        await asyncio.gather(*(one(i) for i in range(jobs)))
    else:
        pending: set[asyncio.Task[None]] = set()
        nxt = time.perf_counter()
        for i in range(jobs):
            task = asyncio.ensure_future(send(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
            nxt += 1 / rate
            delay = nxt - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.gather(*pending)
    seconds = time.perf_counter() - t0
    await close()
    return {"enqueued": jobs, "seconds": seconds, "cpu_us": cpu_us() - started_cpu}


async def worker(
    mode: str, url: str, jobs: int, concurrency: int, visibility_ms: int | None = None
) -> dict[str, Any]:
    """Run handlers until ``jobs`` started; report latencies, throughput and CPU
    (``visibility_ms``: the OJS worker's visibility timeout, else the library's default)."""
    latencies: list[float] = []
    first = last = 0.0
    done = asyncio.Event()

    def started(args: list[Any]) -> None:
        nonlocal first, last
        now = time.time()
        latencies.append(now - args[2])
        first = first or now
        last = now
        if len(latencies) >= jobs:
            done.set()

    preload(mode)
    print("ready", flush=True)
    started_cpu = cpu_us()
    if mode == "raw":
        nc = await nats.connect(url)
        js = nc.jetstream()
        psub = await js.pull_subscribe(
            RAW_SUBJECT,
            durable="w",
            stream=RAW_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1),
        )

        async def consume() -> None:
            while not done.is_set():
                try:
                    msgs = await psub.fetch(100, timeout=1)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    started(json.loads(msg.data)["args"])
                await asyncio.gather(*(m.ack() for m in msgs))

        task = asyncio.ensure_future(consume())
        await done.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()
    elif mode == "taskiq":
        from taskiq.api import run_receiver_task

        broker, _ = taskiq_broker(url, on_start=started)
        broker.is_worker_process = True
        await broker.startup()
        task = asyncio.ensure_future(run_receiver_task(broker, max_async_tasks=concurrency))
        await done.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await broker.shutdown()
    else:
        from ojs_core import JobContext, JobService, Scheduler, Worker
        from ojs_nats import NatsBackend

        backend = NatsBackend(url)
        await backend.open()
        service = JobService(backend)
        scheduler = Scheduler(service)
        ojs_worker = Worker(
            service, ["deploy"], concurrency=concurrency, visibility_timeout_ms=visibility_ms
        )

        @ojs_worker.handler("bench.noop")
        async def handle(ctx: JobContext) -> None:
            started(ctx.args)

        scheduler.start()
        ojs_worker.start()
        await done.wait()
        await ojs_worker.stop(grace=10)
        await scheduler.stop()
        await backend.close()
    return {
        "handled": len(latencies),
        "seconds": max(last - first, 1e-9),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "cpu_us": cpu_us() - started_cpu,
    }


def run_loop(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run a role on uvloop when it is installed (as ``ojs-server`` does), else on asyncio;
    both modes get the same loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: dict[str, Any] = uvloop.run(main)
    return result


# -- the conductor -------------------------------------------------------------------------------


class Server:
    """A nats-server with JetStream and a monitoring port, in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ojs-deploy-"))
        self.port, self.monitor = free_port(), free_port()
        argv = ["-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor)]
        self.proc = subprocess.Popen(
            [find_nats_server(), *argv, "-js", "-sd", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"nats://127.0.0.1:{self.port}"

    def in_msgs(self) -> int:
        """Messages the server received so far (publishes, acks, API requests)."""
        url = f"http://127.0.0.1:{self.monitor}/varz"
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(json.load(response)["in_msgs"])

    def cpu_us(self) -> float:
        """CPU time (user + system) of the server so far, in microseconds."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1e6 / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Stop the server."""
        self.proc.terminate()
        self.proc.wait()


async def fresh(server: Server) -> None:
    """Empty stores for the next scenario: a raw stream, or a reset ojs store."""
    from ojs_nats import NatsBackend

    nc = await nats.connect(server.url)
    js = nc.jetstream()
    for stream in (RAW_STREAM, TASKIQ_STREAM):
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
    await js.add_stream(name=RAW_STREAM, subjects=[RAW_SUBJECT], retention="workqueue")
    await nc.close()
    backend = NatsBackend(server.url)
    await backend.open()
    await backend.reset()
    await backend.close()


def role(*argv: str) -> subprocess.Popen[str]:
    """This module in another process, playing one role."""
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.deployment", *argv],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The JSON line a role printed last."""
    out, _ = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"a role failed ({proc.returncode}): {out[-2000:]}")
    parsed: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return parsed


async def scenario(
    server: Server,
    mode: str,
    jobs: int,
    rate: float,
    concurrency: int,
    visibility_ms: int | None = None,
) -> dict[str, Any]:
    """One producer process and one worker process; the merged figures."""
    await fresh(server)
    before, server_cpu = server.in_msgs(), server.cpu_us()
    common = ["--mode", mode, "--url", server.url, "--jobs", str(jobs)]
    extra = [] if visibility_ms is None else ["--visibility-ms", str(visibility_ms)]
    w = role("--role", "worker", *common, "--concurrency", str(concurrency), *extra)
    assert w.stdout is not None
    assert w.stdout.readline().strip() == "ready"
    await asyncio.sleep(1.0)  # the worker's connection and first fetch are up
    p = role("--role", "producer", *common, "--rate", str(rate))
    produced, handled = await asyncio.to_thread(result, p), await asyncio.to_thread(result, w)
    msgs = server.in_msgs() - before
    server_cpu = server.cpu_us() - server_cpu
    cpu = (produced["cpu_us"] + handled["cpu_us"] + server_cpu) / jobs
    return {
        "enqueue_per_s": jobs / produced["seconds"],
        "processed_per_s": handled["handled"] / handled["seconds"],
        "p50_ms": handled["p50_ms"],
        "p99_ms": handled["p99_ms"],
        "producer_cpu_us": produced["cpu_us"] / jobs,
        "worker_cpu_us": handled["cpu_us"] / jobs,
        "server_cpu_us": server_cpu / jobs,
        "server_msgs": msgs / jobs,
        "ceiling_per_s": len(os.sched_getaffinity(0)) * 1e6 / cpu,
    }


async def conduct(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every scenario for every mode; rows for the table."""
    server = Server()
    await asyncio.sleep(1.0)
    rows: list[dict[str, Any]] = []
    try:
        for mode in ("raw", "ojs", *args.peers):
            label = LABELS[mode]
            thr = await scenario(server, mode, args.jobs, 0, args.concurrency, args.visibility_ms)
            rows.append({"system": label, "scenario": "throughput", **thr})
            print(f"  {label} throughput: {thr}", flush=True)
            n = int(args.rate * args.seconds)
            lat = await scenario(server, mode, n, args.rate, args.concurrency, args.visibility_ms)
            rows.append({"system": label, "scenario": f"latency @{args.rate:g}/s", **lat})
            print(f"  {label} latency: {lat}", flush=True)
    finally:
        server.stop()
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """The table, with each ojs figure's ratio to raw."""
    raw = {r["scenario"]: r for r in rows if r["system"] == "raw nats-py"}
    head = (
        "| system | scenario | enqueue/s | processed/s | p50 ms | p99 ms | producer CPU µs/job "
        "| worker CPU µs/job | server CPU µs/job | server msgs/job | CPU ceiling jobs/s |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        base = raw.get(r["scenario"], {})

        def cell(key: str, fmt: str, r: dict[str, Any] = r, base: dict[str, Any] = base) -> str:
            text = format(r[key], fmt)
            if r is not base and base.get(key):
                text += f" ({r[key] / base[key]:.2f}x)"
            return text

        lines.append(
            f"| {r['system']} | {r['scenario']} | {cell('enqueue_per_s', ',.0f')} "
            f"| {cell('processed_per_s', ',.0f')} | {cell('p50_ms', '.2f')} "
            f"| {cell('p99_ms', '.2f')} | {cell('producer_cpu_us', ',.0f')} "
            f"| {cell('worker_cpu_us', ',.0f')} | {cell('server_cpu_us', ',.0f')} "
            f"| {cell('server_msgs', '.1f')} | {cell('ceiling_per_s', ',.0f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Conduct the run, or play one role in it (``--role``)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.deployment", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--jobs", type=int, default=10_000, help="jobs of the throughput scenario")
    p.add_argument("--rate", type=float, default=500.0, help="jobs/s of the latency scenario")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the latency scenario")
    p.add_argument("--concurrency", type=int, default=10, help="the worker's concurrency")
    p.add_argument(
        "--visibility-ms",
        type=int,
        help="the OJS worker's visibility timeout (default: the library's, 30 s, longer than "
        "a run: a shorter one reaches the steady state where acked jobs' deadlines pass)",
    )
    p.add_argument("--json", help="also write the rows as JSON to this file")
    p.add_argument(
        "--peers",
        nargs="*",
        default=[],
        choices=["taskiq"],
        help="peer libraries to run beside (must be importable: uv run --with taskiq-nats ...)",
    )
    p.add_argument("--role", choices=["producer", "worker"], help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=sorted(LABELS), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "producer":
        print(json.dumps(run_loop(producer(args.mode, args.url, args.jobs, args.rate))))
        return
    if args.role == "worker":
        work = worker(args.mode, args.url, args.jobs, args.concurrency, args.visibility_ms)
        print(json.dumps(run_loop(work)))
        return
    if args.quick:
        args.jobs, args.seconds = 2_000, 3.0
    started = time.perf_counter()
    rows = asyncio.run(conduct(args))
    print()
    print(render(rows))
    print(
        f"\n(ran in {time.perf_counter() - started:.0f} s on {len(os.sched_getaffinity(0))} cores; "
        f"{args.jobs:,} jobs, worker concurrency {args.concurrency})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
