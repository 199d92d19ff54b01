"""A worker process for the crash tests (run as a script; not a test module).

``python worker_process.py NATS_URL QUEUE MODE VISIBILITY_MS``: an ``ojs_core.Worker`` over a
``NatsBackend`` with one slot, heartbeating every 0.3 s with ``VISIBILITY_MS`` of visibility.
Its handler prints ``started <id> <attempt> <worker>`` and then, in ``hang`` mode, waits
forever (until the process is killed); in ``complete`` mode it prints
``completed <id> <attempt> <worker>`` and returns, which acks the job. It runs no scheduler:
timers (the visibility timeout) are another process's business.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from ojs_core import JobContext, JobService, Worker
from ojs_nats import NatsBackend


async def main(nats_url: str, queue: str, mode: str, visibility_ms: int) -> None:
    backend = NatsBackend(nats_url)
    await backend.open()
    worker = Worker(
        JobService(backend),
        queues=[queue],
        concurrency=1,
        visibility_timeout_ms=visibility_ms,
        heartbeat_interval=0.3,
        poll_wait=0.5,
    )

    @worker.handler("crash.job")
    async def run(ctx: JobContext) -> dict[str, Any]:
        print(f"started {ctx.job.id} {ctx.job.attempt} {worker.worker_id}", flush=True)
        if mode == "hang":
            await asyncio.Event().wait()
        print(f"completed {ctx.job.id} {ctx.job.attempt} {worker.worker_id}", flush=True)
        return {"by": worker.worker_id}

    worker.install_signal_handlers()
    print(f"worker ready {worker.worker_id}", flush=True)
    try:
        await worker.run()
    finally:
        await backend.close()


if __name__ == "__main__":
    url, queue_name, run_mode, visibility = sys.argv[1:5]
    assert run_mode in ("hang", "complete"), run_mode
    asyncio.run(main(url, queue_name, run_mode, int(visibility)))
