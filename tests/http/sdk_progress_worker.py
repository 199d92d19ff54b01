"""A worker written with the official Python SDK (``openjobspec``, imported as ``ojs``), run by
``test_http_sdk_progress.py`` in a subprocess whose ``sys.path`` holds the SDK's sources.

Usage: ``python sdk_progress_worker.py BASE_URL``. It enqueues one job, runs an SDK ``Worker``
whose handler reports progress with ``ojs.report_progress`` and works through a
``DurableContext`` (a recorded side effect, a checkpoint, then a crash on the first attempt; a
replay from the checkpoint and ``complete()`` on the second), waits for the job to complete and
prints one JSON line of what it saw. Nothing here is SDK code: only calls into it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import ojs  # the SDK under test: on sys.path only in the test's subprocess

QUEUE = "sdk-progress"


async def main(base: str) -> dict[str, Any]:
    seen: dict[str, Any] = {"attempts": [], "side_effect_calls": 0}
    worker = ojs.Worker(base, queues=[QUEUE], poll_interval=0.1, heartbeat_interval=1.0)

    async def fetch_rows() -> list[int]:
        seen["side_effect_calls"] += 1
        return [1, 2, 3]

    @worker.register("sdk.durable")
    async def handle(ctx: Any) -> dict[str, Any]:
        dc = await ojs.DurableContext.create(ctx)
        replaying = dc.is_replaying
        rows = await dc.side_effect("fetch-rows", fetch_rows)
        await ojs.report_progress(
            ctx._transport, ctx.job.id, 40, message="rows fetched", data={"rows": len(rows)}
        )
        progress = await ctx._transport.get_progress(ctx.job.id)
        await dc.checkpoint(1, {"rows": rows})
        seen["attempts"].append(
            {"attempt": ctx.job.attempt, "replaying": replaying, "progress": progress}
        )
        if ctx.job.attempt == 1:
            raise RuntimeError("crash after the checkpoint")
        await dc.complete()
        return {"rows": rows}

    async with httpx.AsyncClient(base_url=base) as http:
        created = await http.post(
            "/ojs/v1/jobs",
            json={
                "type": "sdk.durable",
                "args": [],
                "options": {
                    "queue": QUEUE,
                    "retry": {"max_attempts": 3, "initial_interval": "PT1S", "jitter": False},
                },
            },
        )
        created.raise_for_status()
        job_id = created.json()["job"]["id"]
        running = asyncio.create_task(worker.start())
        job: dict[str, Any] = {}
        for _ in range(600):  # bounded: 30 s
            job = (await http.get(f"/ojs/v1/jobs/{job_id}")).json()["job"]
            if job["state"] in ("completed", "discarded", "cancelled"):
                break
            await asyncio.sleep(0.05)
        await worker.stop()
        await asyncio.wait_for(running, 10)
        seen["job"] = job
        seen["progress"] = (await http.get(f"/ojs/v1/jobs/{job_id}/progress")).json()
        checkpoint = await http.get(f"/ojs/v1/jobs/{job_id}/checkpoint")
        seen["checkpoint_status"] = checkpoint.status_code
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
