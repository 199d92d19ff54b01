"""Enqueue jobs and run them in the same process: a Client and a Worker over one backend.

Run it with ``uv run python examples/embedding/quickstart.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ojs_core import Client, JobContext, JobService, Scheduler, Worker
from ojs_memory import MemoryBackend


async def main() -> dict[str, Any]:
    """Send two emails, one of which fails once and is retried; return what happened."""
    backend = MemoryBackend()
    await backend.open()
    service = JobService(backend)  # shared, so the worker's long-poll wakes on each enqueue
    scheduler = Scheduler(service)  # applies timers: retry back-off, delays, timeouts, cron
    client = Client(service)
    worker = Worker(service, queues=["mail"], concurrency=4)
    finished = asyncio.Event()
    sent: list[str] = []

    @worker.handler("email.send")
    async def send_email(ctx: JobContext) -> dict[str, Any]:
        (address,) = ctx.args
        if address.endswith(".invalid") and ctx.attempt == 1:
            raise ConnectionError("SMTP server busy")  # fails this attempt; the job is retried
        sent.append(address)
        if len(sent) == 2:
            finished.set()
        return {"delivered_to": address, "attempt": ctx.attempt}

    await client.enqueue("email.send", ["ada@example.com"], queue="mail")
    flaky = await client.enqueue(
        "email.send",
        ["bob@mail.invalid"],
        queue="mail",
        retry={"max_attempts": 3, "initial_interval_ms": 10, "jitter": False},
    )
    assert flaky is not None

    scheduler.start()
    worker.start()
    await asyncio.wait_for(finished.wait(), timeout=10)
    await worker.stop(grace=5)  # stop fetching, let running handlers finish (ack), return
    await scheduler.stop()

    done = await client.get(flaky.id)
    await backend.close()
    return {
        "sent": sorted(sent),
        "state": done.state.value,
        "attempts": done.attempt,
        "first_error": done.errors[0].type,
        "result": done.result,
    }


if __name__ == "__main__":
    print(asyncio.run(main()))
