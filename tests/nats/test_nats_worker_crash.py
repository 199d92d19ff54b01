"""``kill -9`` of a worker process while its handler runs.

A worker process (``tests/nats/worker_process.py``: an ``ojs_core.Worker`` over ``NatsBackend``)
claims a job with a 1.5 s visibility timeout and heartbeats it; the test's own service runs the
timers, as any ``ojs-server`` replica would. While the worker lives the job stays ``active``
well past 1.5 s (the heartbeats extend it); once the worker is killed with SIGKILL the job must
come back after its visibility timeout, and a second worker process must complete it exactly
once: attempt 2, one completion, one ``job.completed`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fault_support import wait_line
from nats_support import events_of, eventually, push

from ojs_core.scheduler import Scheduler
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_nats.backend import NatsBackend

pytestmark = pytest.mark.slow

S = JobState
WORKER = Path(__file__).with_name("worker_process.py")
QUEUE = "crashq"
VISIBILITY_MS = 1500
BackendFactory = Callable[[], Awaitable[NatsBackend]]


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Worker processes a test starts; any still running at the end is killed."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), 10)


async def start_worker(
    nats_url: str, mode: str, processes: list[asyncio.subprocess.Process]
) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        nats_url,
        QUEUE,
        mode,
        str(VISIBILITY_MS),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    processes.append(proc)
    line = await wait_line(proc, "worker ready", within=30)
    return proc, line.split()[-1]


async def test_kill9_of_a_worker_mid_job_hands_the_job_to_another_worker_once(
    nats_url: str, new_backend: BackendFactory, processes: list[asyncio.subprocess.Process]
) -> None:
    svc = JobService(await new_backend())
    scheduler = Scheduler(svc)
    scheduler.start()
    try:
        first, first_id = await start_worker(nats_url, "hang", processes)
        job = await push(svc, "crash.job", [1], queue=QUEUE)
        line = await wait_line(first, f"started {job.id}", within=20)
        assert line.split()[2:] == ["1", first_id]

        # Alive, the worker's heartbeats keep the job active past its visibility timeout.
        await asyncio.sleep(VISIBILITY_MS / 1000 * 2)
        running = await svc.get(job.id)
        assert running.state is S.ACTIVE
        assert (running.attempt, running.worker_id) == (1, first_id)

        first.kill()  # SIGKILL mid-handler: no nack, no more heartbeats
        await asyncio.wait_for(first.wait(), 10)
        killed_at = time.monotonic()
        last = await svc.get(job.id)
        assert last.state is S.ACTIVE
        assert last.visible_until is not None

        async def available_again() -> bool:
            return (await svc.get(job.id)).state is S.AVAILABLE

        await eventually(available_again, within=20, what="the job available again")
        back_after = time.monotonic() - killed_at
        assert datetime.now(UTC) >= last.visible_until  # not before its visibility timeout
        print(f"job available again {back_after:.2f} s after the kill")
        assert back_after < VISIBILITY_MS / 1000 + 10

        second, second_id = await start_worker(nats_url, "complete", processes)
        line = await wait_line(second, f"completed {job.id}", within=20)
        assert line.split()[2:] == ["2", second_id]

        async def completed() -> bool:
            return (await svc.get(job.id)).state is S.COMPLETED

        await eventually(completed, within=10, what="the job completed")
        await asyncio.sleep(1.0)  # room for a (wrong) second delivery to show up
        second.terminate()
        out, _ = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 0, out
        done = await svc.get(job.id)
        assert (done.state, done.attempt, done.worker_id) == (S.COMPLETED, 2, second_id)
        assert done.result == {"by": second_id}
        assert out.decode().count(f"started {job.id}") == 0  # only the line awaited above
        assert out.decode().count(f"completed {job.id}") == 0
        assert len(await events_of(svc, "job.completed", job_id=job.id)) == 1
        started_events = await events_of(svc, "job.started", job_id=job.id)
        assert [e.data.get("worker_id") for e in started_events] == [first_id, second_id]
    finally:
        await scheduler.stop()
