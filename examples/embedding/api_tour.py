"""The reference snippets of docs/embedding.md and docs/security.md, as one program that runs.

Every option the docs list is spelled out here with its default, so the docs cannot drift from
the real signatures: ``tests/embedding/test_embed_examples.py`` runs this file, and
``tests/docs/test_docs_code.py`` checks that each snippet in the docs is an excerpt of it.

Run it with ``uv run python examples/embedding/api_tour.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from ojs_core import Client, JobContext, JobService, MiddlewareChain, Scheduler, Worker
from ojs_core.client import group, job
from ojs_memory import MemoryBackend


async def main() -> dict[str, Any]:
    """Build a client, a fully spelled-out worker, a workflow, a middleware chain and an app."""
    backend = MemoryBackend()
    await backend.open()
    service = JobService(backend)
    scheduler = Scheduler(service)

    client = Client(service)  # or Client(backend)

    worker = Worker(
        service,  # or a backend
        ["critical", "default"],  # queues, tried left to right
        concurrency=10,  # handlers running at once
        fetch_batch=None,  # cap per fetch (default: concurrency)
        visibility_timeout_ms=None,  # asked at fetch and on each heartbeat (None: the job's)
        heartbeat_interval=5.0,  # seconds
        handler_timeout=None,  # seconds; a job's timeout_ms also caps its handler
        grace_period=25.0,  # seconds stop() lets running handlers finish
        poll_wait=2.0,  # long-poll length when the queues are empty
        worker_id=None,  # default: host-pid-random
        labels=None,  # reported in heartbeats
        clock=None,  # default: the service's clock
    )
    seen: list[tuple[str, int, str]] = []
    all_steps = asyncio.Event()

    @worker.handler("email.send")  # or worker.register("email.send", fn)
    async def send(ctx: JobContext) -> Any:
        # ctx.job, ctx.args, ctx.meta, ctx.attempt, ctx.parent_results, ctx.worker_id
        await ctx.heartbeat()  # optional, for long handlers
        return {"ok": True, "to": ctx.args[0]}  # stored as the job's result

    async def step(ctx: JobContext) -> str:
        seen.append((ctx.job.type, ctx.attempt, ",".join(map(str, ctx.args))))
        if len(seen) == 6:
            all_steps.set()
        return f"{ctx.job.type}:{','.join(map(str, ctx.args))}"

    for name in ("img.resize", "video.fetch", "video.encode", "video.publish"):
        worker.register(name, step)

    await client.enqueue_many([job("img.resize", [1]), job("img.resize", [2], priority="high")])
    await client.chain(
        job("video.fetch", ["intro"]),
        group(job("video.encode", ["720p"]), job("video.encode", ["1080p"])),
        job("video.publish"),
    )
    sent = await client.enqueue("email.send", ["ada@example.com"])
    assert sent is not None

    scheduler.start()
    worker.start()
    done = await asyncio.wait_for(client.wait(sent.id), 10)
    await asyncio.wait_for(all_steps.wait(), 10)
    await worker.stop(grace=5)
    await scheduler.stop()

    chain: MiddlewareChain[Any, Any] = MiddlewareChain()

    async def audit(value: Any, call_next: Any) -> Any:
        return await call_next(value)

    async def mw(value: Any, call_next: Any) -> Any:
        return await call_next(value)

    chain.add(audit)
    chain.add(mw)  # last, i.e. innermost; usable as @chain.add
    chain.remove("mw")
    chain.prepend(mw)  # first, i.e. outermost
    chain.remove("mw")
    chain.insert_before("audit", mw)
    chain.insert_after("audit", mw, name="audit-2")
    chain.remove("audit")  # returns the middleware
    names = chain.names  # ["...", ...], outermost first

    app = await build_app_with_sessions(backend)
    await backend.close()
    return {
        "email": (done.state.value, done.result),
        "steps": sorted(t for t, _, _ in seen),
        "middleware": names,
        "auth": app.state.authenticate is not None,
    }


class _Sessions:
    """A host application's session store (a stand-in for yours)."""

    def lookup(self, sid: str | None) -> Any:
        return None


my_sessions = _Sessions()


async def build_app_with_sessions(backend: MemoryBackend) -> Any:
    """The host's own sessions decide who may call the OJS API (docs/security.md)."""
    from ojs_http import create_app
    from ojs_http.auth import ApiKeys, first_of

    def from_session(request: Request) -> str | None:
        user = my_sessions.lookup(request.cookies.get("sid"))
        return "admin" if user and user.is_staff else None

    app = create_app(backend, auth=first_of(ApiKeys.from_environ(), from_session))
    return app


if __name__ == "__main__":
    print(asyncio.run(main()))
