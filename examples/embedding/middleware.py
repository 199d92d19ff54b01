"""Enqueue and execution middleware, and the five chain operations.

Run it with ``uv run python examples/embedding/middleware.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ojs_core import Client, JobContext, JobService, Worker
from ojs_core.client import Envelope, job
from ojs_memory import MemoryBackend

NextEnqueue = Callable[[Envelope], Awaitable[Envelope | None]]
NextExecute = Callable[[JobContext], Awaitable[Any]]


async def add_trace_id(envelope: Envelope, call_next: NextEnqueue) -> Envelope | None:
    """Enqueue middleware: stamp every job with the caller's trace id."""
    envelope.setdefault("meta", {})["trace_id"] = "trace-42"
    return await call_next(envelope)


async def drop_test_jobs(envelope: Envelope, call_next: NextEnqueue) -> Envelope | None:
    """Enqueue middleware: silently drop jobs whose type starts with ``test.``."""
    if envelope["type"].startswith("test."):
        return None  # the caller gets None back; nothing is stored
    return await call_next(envelope)


async def main() -> dict[str, Any]:
    """Enqueue three jobs through the enqueue chain and run them through the execution chain."""
    backend = MemoryBackend()
    service = JobService(backend)
    client = Client(service)
    client.middleware.add(add_trace_id)
    client.middleware.prepend(drop_test_jobs)  # runs first
    assert client.middleware.names == ["drop_test_jobs", "add_trace_id"]

    worker = Worker(service, concurrency=2)
    calls: list[str] = []
    timings: dict[str, float] = {}

    @worker.middleware.add
    async def timing(ctx: JobContext, call_next: NextExecute) -> Any:
        """Execution middleware: measure each handler (the outermost wrapper)."""
        started = time.perf_counter()
        try:
            return await call_next(ctx)
        finally:
            timings[ctx.job_id] = time.perf_counter() - started

    @worker.middleware.add
    async def audit(ctx: JobContext, call_next: NextExecute) -> Any:
        """Execution middleware: record which job runs with which trace id."""
        calls.append(f"{ctx.type} trace={ctx.meta.get('trace_id')}")
        return await call_next(ctx)

    async def uppercase_result(ctx: JobContext, call_next: NextExecute) -> Any:
        """Execution middleware inserted between the two above."""
        result = await call_next(ctx)
        return result.upper() if isinstance(result, str) else result

    worker.middleware.insert_after("timing", uppercase_result)
    worker.middleware.insert_before("audit", audit, name="audit-twice")
    worker.middleware.remove("audit-twice")  # chains are edited by name
    assert worker.middleware.names == ["timing", "uppercase_result", "audit"]

    done = asyncio.Event()

    @worker.handler("greet.user")
    async def greet(ctx: JobContext) -> str:
        if len(calls) == 2:
            done.set()
        return f"hello {ctx.args[0]}"

    stored = await client.enqueue_many([job("greet.user", ["ada"]), job("test.greet", ["x"])])
    single = await client.enqueue("greet.user", ["bob"])
    assert single is not None
    worker.start()
    await asyncio.wait_for(done.wait(), timeout=10)
    await worker.stop()
    result = await client.get(single.id)
    return {
        "stored": [j.type if j else None for j in stored],
        "calls": sorted(calls),
        "result": result.result,
        "meta": result.meta,
        "timed": len(timings),
    }


if __name__ == "__main__":
    print(asyncio.run(main()))
