"""Chains, groups and batches created in process, run by an in-process worker.

Run it with ``uv run python examples/embedding/workflows.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ojs_core import Client, JobContext, JobService, Worker
from ojs_core.client import group, job
from ojs_memory import MemoryBackend


async def main() -> dict[str, Any]:
    """Run a chain that fans out into a group, and a batch with a success callback."""
    service = JobService(MemoryBackend())
    client = Client(service)
    worker = Worker(service, concurrency=4)
    notified = asyncio.Event()

    @worker.handler("video.fetch")
    async def fetch(ctx: JobContext) -> str:
        return f"/tmp/{ctx.args[0]}.raw"

    @worker.handler("video.encode")
    async def encode(ctx: JobContext) -> str:
        (source,) = ctx.parent_results or [""]  # the fetch step's result
        return f"{source}@{ctx.args[0]}"

    @worker.handler("video.publish")
    async def publish(ctx: JobContext) -> list[str]:
        return sorted(ctx.parent_results or [])  # both encodings

    @worker.handler("batch.notify")
    async def notify(ctx: JobContext) -> str:
        notified.set()
        return f"{len(ctx.parent_results or [])} thumbnails ready"

    @worker.handler("image.thumb")
    async def thumb(ctx: JobContext) -> str:
        return f"thumb-{ctx.args[0]}"

    pipeline = await client.chain(
        job("video.fetch", ["intro"]),
        group(job("video.encode", ["720p"]), job("video.encode", ["1080p"])),
        job("video.publish"),
        name="publish-intro",
    )
    thumbs = await client.batch(
        [job("image.thumb", [n]) for n in range(3)], on_success=job("batch.notify")
    )
    worker.start()
    await asyncio.wait_for(notified.wait(), timeout=10)
    await asyncio.wait_for(client.wait(pipeline["steps"][-1]["job_id"]), 10)  # the publish step
    await worker.stop()
    final = await client.get_workflow(pipeline["id"])
    batch_done = await client.get_workflow(thumbs["id"])
    return {
        "pipeline": final["state"],
        "published": final["steps"][-1]["result"],
        "batch": batch_done["state"],
        "callback": batch_done["callbacks"]["on_success"]["state"],
    }


if __name__ == "__main__":
    print(asyncio.run(main()))
