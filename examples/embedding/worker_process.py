"""A worker process: signal handling, graceful shutdown, and nothing lost when time runs out.

In production a worker runs until SIGTERM (``await worker.run()`` after
``worker.install_signal_handlers()``). This example stops by itself: the first worker is
stopped while one handler is stuck, that job is requeued without using up an attempt, and a
second worker finishes it.

Run it with ``uv run python examples/embedding/worker_process.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ojs_core import Client, JobContext, JobService, JobState, Worker
from ojs_memory import MemoryBackend


def build_worker(service: JobService, name: str, stuck: asyncio.Event) -> Worker:
    """A worker for ``thumb.render`` jobs; job 0 hangs until ``stuck`` is set."""
    worker = Worker(
        service,
        queues=["media"],
        concurrency=3,
        heartbeat_interval=5,  # extends the visibility of running jobs; carries directives
        handler_timeout=60,  # a handler running longer fails with error type "timeout"
        grace_period=30,  # how long stop() lets running handlers finish
        worker_id=name,
    )

    @worker.handler("thumb.render")
    async def render(ctx: JobContext) -> str:
        if ctx.args[0] == 0:
            await stuck.wait()
        return f"thumb-{ctx.args[0]}.png"

    return worker


async def main() -> dict[str, Any]:
    """Stop a worker mid-job, then let a second worker finish what the first handed back."""
    service = JobService(MemoryBackend())
    client = Client(service)
    jobs = [await client.enqueue("thumb.render", [n], queue="media") for n in range(5)]
    ids = [j.id for j in jobs if j is not None]

    first = build_worker(service, "worker-1", stuck=asyncio.Event())  # job 0 never finishes
    first.install_signal_handlers()  # SIGTERM/SIGINT: graceful stop; a second signal: at once
    first.start()
    for job_id in ids[1:]:
        await asyncio.wait_for(client.wait(job_id), 10)
    # Equivalent to SIGTERM, with a short grace period: job 0 is still running when it ends,
    # so its handler is cancelled and the job requeued (nack with requeue=True).
    await first.stop(grace=0.05)
    handed_back = await client.get(ids[0])

    unstuck = asyncio.Event()
    unstuck.set()
    second = build_worker(service, "worker-2", stuck=unstuck)
    second.start()
    finished = await asyncio.wait_for(client.wait(ids[0]), 10)
    await second.stop()
    states = [(await client.get(j)).state for j in ids]
    return {
        "handed_back": (handed_back.state.value, handed_back.attempt, handed_back.errors[-1].type),
        "finished": (finished.state.value, finished.attempt, finished.worker_id),
        "completed": states.count(JobState.COMPLETED),
    }


if __name__ == "__main__":
    print(asyncio.run(main()))
