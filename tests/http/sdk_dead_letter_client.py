"""Run by ``test_http_sdk_dead_letter.py`` with the official SDK (``ojs``) on ``sys.path``: the
dead-letter flow as an SDK user meets it. An SDK ``Client`` enqueues a job with one attempt; an
SDK ``Worker`` runs a handler that fails; the job must then be in the SDK's
``list_dead_letter_jobs``; ``retry_dead_letter_job`` brings it back and a second worker run
completes it; a second failing job is removed with ``delete_dead_letter_job``. Prints one JSON
line of what it saw. Nothing here is SDK code: only calls into it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import ojs  # the SDK under test: on sys.path only in the test's subprocess

QUEUE = "sdk-dead"


async def _until(client: Any, job_id: str, states: tuple[str, ...]) -> Any:
    for _ in range(600):  # bounded: 30 s
        job = await client.get_job(job_id)
        if str(getattr(job.state, "value", job.state)) in states:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id} never reached {states}")


async def main(base: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    fail = {"on": True}
    worker = ojs.Worker(base, queues=[QUEUE], poll_interval=0.1, heartbeat_interval=1.0)

    @worker.register("sdk.flaky")
    async def flaky(ctx: Any) -> str:
        if fail["on"]:
            raise RuntimeError("the mail server said no")
        return "delivered"

    client = ojs.Client(base)
    retry = ojs.RetryPolicy(max_attempts=1)
    first = await client.enqueue("sdk.flaky", ["a"], queue=QUEUE, retry=retry)
    second = await client.enqueue("sdk.flaky", ["b"], queue=QUEUE, retry=retry)
    running = asyncio.create_task(worker.start())
    await _until(client, first.id, ("discarded",))
    await _until(client, second.id, ("discarded",))
    listed = await client.list_dead_letter_jobs(queue=QUEUE)
    jobs = listed.get("jobs", listed) if isinstance(listed, dict) else listed
    seen["dead"] = sorted(j["id"] if isinstance(j, dict) else j.id for j in jobs)
    fail["on"] = False
    await client.retry_dead_letter_job(first.id)
    done = await _until(client, first.id, ("completed",))
    seen["retried_state"] = str(getattr(done.state, "value", done.state))
    await client.delete_dead_letter_job(second.id)
    after = await client.list_dead_letter_jobs(queue=QUEUE)
    rest = after.get("jobs", after) if isinstance(after, dict) else after
    seen["dead_after"] = [j["id"] if isinstance(j, dict) else j.id for j in rest]
    seen["ids"] = sorted([first.id, second.id])
    await worker.stop()
    await asyncio.wait_for(running, 10)
    await client.close()
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
