"""Progress and checkpoints over HTTP on NATS (the real nats-server): what a worker stored is
read back by another server process's connection (a restart), and a checkpoint that would make
the job record larger than the server's ``max_payload`` is a 413 naming the checkpoint, not a
dropped connection or a 5xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from nats_support import eventually

from ojs_core.limits import Limits
from ojs_core.service import JobService
from ojs_core.worker import JobContext, Worker
from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_nats.backend import NatsBackend

V1 = "/ojs/v1"


@asynccontextmanager
async def serve(nats_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    options: dict[str, Any] = {"run_scheduler": False, **settings}
    app = create_app(NatsBackend(nats_url), HttpSettings(**options))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield client


async def _active(client: httpx.AsyncClient, queue: str) -> str:
    body = {"type": "import.rows", "args": [], "options": {"queue": queue}}
    assert (await client.post(f"{V1}/jobs", json=body)).status_code == 201
    fetched = await client.post(f"{V1}/workers/fetch", json={"queues": [queue], "worker_id": "w"})
    (job,) = fetched.json()["jobs"]
    job_id: str = job["id"]
    return job_id


async def test_progress_and_checkpoint_outlive_the_server_process(
    nats_url: str, new_backend: Any
) -> None:
    await new_backend()  # a clean store
    async with serve(nats_url) as client:
        job_id = await _active(client, "progress-a")
        put = await client.put(
            f"{V1}/jobs/{job_id}/progress", json={"progress": 0.25, "data": {"rows": 25}}
        )
        assert put.json()["accepted"] is True
        sdk = await client.post(
            f"{V1}/workers/progress", json={"job_id": job_id, "percentage": 40, "message": "m"}
        )
        assert sdk.json()["progress"] == 0.4
        saved = await client.post(
            f"{V1}/ojs/v1/checkpoints/{job_id}",
            json={"state": {"row": 40}, "step_index": 2, "metadata": {"attempt": "1"}},
        )
        assert saved.status_code == 200, saved.text
    async with serve(nats_url) as client:  # another process, another connection
        progress = (await client.get(f"{V1}/jobs/{job_id}/progress")).json()
        assert (progress["progress"], progress["message"], progress["data"]) == (0.4, "m", None)
        resume = (await client.get(f"{V1}/ojs/v1/checkpoints/{job_id}/resume")).json()
        assert resume["has_checkpoint"] is True
        assert resume["checkpoint"]["state"] == {"row": 40}
        # The attempt is abandoned: the next fetch gets the checkpoint in the envelope.
        nack = {"job_id": job_id, "error": {"message": "crash"}, "requeue": True}
        assert (await client.post(f"{V1}/workers/nack", json=nack)).status_code == 200
        fetched = await client.post(f"{V1}/workers/fetch", json={"queues": ["progress-a"]})
        (job,) = fetched.json()["jobs"]
        assert job["checkpoint"]["state"] == {"row": 40}
        assert "progress" not in job  # the new attempt starts without progress
        await client.put(f"{V1}/jobs/{job_id}/progress", json={"progress": 0.1})
        await client.post(f"{V1}/workers/ack", json={"job_id": job_id})
        done = (await client.get(f"{V1}/jobs/{job_id}")).json()["job"]
        assert (done["state"], done["progress"]["value"]) == ("completed", 1.0)
        assert "checkpoint" not in done


async def test_a_checkpoint_the_store_cannot_hold_is_413(nats_url: str, new_backend: Any) -> None:
    backend: NatsBackend = await new_backend()
    max_payload = backend.conn.nc.max_payload
    # Our own limit is set above the store's, so that the store's bound is what is hit.
    limits = Limits(max_checkpoint_bytes=8 * 1024 * 1024)
    async with serve(nats_url, limits=limits) as client:
        job_id = await _active(client, "progress-b")
        state = {"blob": "x" * (max_payload + 10)}
        response = await client.post(f"{V1}/jobs/{job_id}/checkpoint", json={"state": state})
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert (error["code"], error["details"]["path"]) == ("payload_too_large", "state")
        # Nothing was stored and the connection still works.
        job = (await client.get(f"{V1}/jobs/{job_id}")).json()["job"]
        assert (job["state"], job.get("checkpoint")) == ("active", None)
        small = await client.post(f"{V1}/jobs/{job_id}/checkpoint", json={"state": 1})
        assert small.json()["checkpoint"]["sequence"] == 1


async def test_in_process_worker_reports_and_checkpoints(new_backend: Any) -> None:
    service = JobService(await new_backend())
    seen: list[Any] = []

    async def handler(ctx: JobContext) -> str:
        seen.append(ctx.last_checkpoint)
        assert await ctx.report_progress(0.5, data={"half": True})
        saved = await ctx.checkpoint({"at": 5})
        return f"seq {saved.sequence}"

    worker = Worker(service, queues=["progress-c"], concurrency=1)
    worker.register("import.rows", handler)
    outcome = await service.enqueue(
        {"type": "import.rows", "args": [], "options": {"queue": "progress-c"}}
    )
    job_id = outcome.job.id
    worker.start()

    async def finished() -> bool:
        return (await service.get(job_id)).state.terminal

    try:
        await eventually(finished, what="the job handled")
    finally:
        await worker.stop()
    done = await service.get(job_id)
    assert done.state.value == "completed"
    assert done.result == "seq 1"
    assert done.progress is not None
    assert (done.progress.value, done.progress.data) == (1.0, {"half": True})
    assert done.checkpoint is None
    assert seen == [None]


async def test_a_nack_lands_when_the_checkpoint_leaves_no_room_for_the_error(
    nats_url: str, new_backend: Any
) -> None:
    """A checkpoint that fits, then a failure whose error no longer fits beside it: the job
    must still leave ``active`` (it used to stay there forever, every nack and timer refused
    with 413); it retries without its checkpoint instead."""
    backend: NatsBackend = await new_backend()
    max_payload = backend.conn.nc.max_payload
    limits = Limits(max_checkpoint_bytes=8 * 1024 * 1024)
    async with serve(nats_url, limits=limits) as client:
        job_id = await _active(client, "progress-c")
        state = {"blob": "x" * (max_payload - 8_000)}
        saved = await client.post(f"{V1}/jobs/{job_id}/checkpoint", json={"state": state})
        assert saved.status_code == 200, saved.text
        error = {"code": "boom", "message": "m", "details": {"traceback": "t" * 9_000}}
        nack = await client.post(f"{V1}/workers/nack", json={"job_id": job_id, "error": error})
        assert nack.status_code == 200, nack.text
        job = (await client.get(f"{V1}/jobs/{job_id}")).json()["job"]
        assert job["state"] == "retryable"
        assert job.get("checkpoint") is None
        assert job["errors"][-1]["code"] == "boom"
