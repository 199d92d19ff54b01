"""Middleware chains: the five chain operations, snapshots, and both chains in use.

The enqueue chain runs in the Client (per job, before persistence); the execution chain wraps
handlers in the Worker (nested, errors propagating outwards).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from embed_support import Harness

from ojs_core import MiddlewareChain, ValidationError
from ojs_core.client import Envelope, job
from ojs_core.states import JobState
from ojs_core.worker import JobContext

Next = Callable[[Any], Awaitable[Any]]


def recorder(log: list[str], name: str) -> Callable[[Any, Next], Awaitable[Any]]:
    """A middleware that logs when it is entered and left."""

    async def mw(value: Any, nxt: Next) -> Any:
        log.append(f"{name}>")
        result = await nxt(value)
        log.append(f"<{name}")
        return result

    mw.__name__ = name
    return mw


async def identity(value: Any) -> Any:
    return value


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


# -- the chain itself ---------------------------------------------------------------------


async def test_all_five_chain_operations_order_the_run() -> None:
    log: list[str] = []
    chain: MiddlewareChain[str, str] = MiddlewareChain()
    chain.add(recorder(log, "b"))
    chain.add(recorder(log, "d"))
    chain.prepend(recorder(log, "a"))
    chain.insert_before("d", recorder(log, "c"))
    chain.insert_after("d", recorder(log, "e"))
    chain.add(recorder(log, "gone"))
    removed = chain.remove("gone")
    assert removed.__name__ == "gone"
    assert chain.names == ["a", "b", "c", "d", "e"]
    assert len(chain) == 5
    assert "c" in chain
    assert "gone" not in chain

    async def terminal(value: str) -> str:
        log.append("terminal")
        return value.upper()

    assert await chain.run("x", terminal) == "X"
    assert log == ["a>", "b>", "c>", "d>", "e>", "terminal", "<e", "<d", "<c", "<b", "<a"]


async def test_names_default_and_must_be_unique() -> None:
    chain: MiddlewareChain[int, int] = MiddlewareChain()

    @chain.add
    async def first(value: int, nxt: Next) -> Any:
        return await nxt(value + 1)

    class Named:
        name = "explicit"

        async def __call__(self, value: int, nxt: Next) -> Any:
            return await nxt(value * 10)

    chain.add(Named())
    chain.add(first, name="first-again")
    assert chain.names == ["first", "explicit", "first-again"]
    with pytest.raises(ValueError, match="already in the chain"):
        chain.add(first)
    with pytest.raises(KeyError, match="nope"):
        chain.insert_before("nope", first, name="x")
    with pytest.raises(KeyError, match="nope"):
        chain.insert_after("nope", first, name="x")
    with pytest.raises(KeyError, match="nope"):
        chain.remove("nope")
    assert await chain.run(1, identity) == 21  # (1 + 1) * 10 + 1
    chain.clear()
    assert await chain.run(1, identity) == 1


async def test_a_run_uses_the_chain_as_it_was_when_it_started() -> None:
    log: list[str] = []
    chain: MiddlewareChain[str, str] = MiddlewareChain()

    async def editor(value: str, nxt: Next) -> Any:
        log.append("editor")
        chain.remove("editor")
        chain.add(recorder(log, "late"))
        return await nxt(value)

    chain.add(editor)
    chain.add(recorder(log, "kept"))
    await chain.run("x", identity)
    assert log == ["editor", "kept>", "<kept"]  # "late" was added mid-run: not in this run
    log.clear()
    await chain.run("x", identity)
    assert log == ["kept>", "late>", "<late", "<kept"]


async def test_middleware_can_short_circuit_and_observe_errors() -> None:
    chain: MiddlewareChain[int, int] = MiddlewareChain()
    seen: list[str] = []

    async def guard(value: int, nxt: Next) -> Any:
        if value < 0:
            return 0  # never reaches the terminal
        try:
            return await nxt(value)
        except ZeroDivisionError as exc:
            seen.append(type(exc).__name__)
            raise

    chain.add(guard)

    async def invert(value: int) -> int:
        return 100 // value

    assert await chain.run(-5, invert) == 0
    assert await chain.run(4, invert) == 25
    with pytest.raises(ZeroDivisionError):
        await chain.run(0, invert)
    assert seen == ["ZeroDivisionError"]


# -- the enqueue chain (Client) -----------------------------------------------------------


async def test_enqueue_chain_runs_in_order_and_its_changes_are_stored(harness: Harness) -> None:
    log: list[str] = []
    client = harness.client
    client.middleware.add(recorder(log, "outer"))

    @client.middleware.add
    async def stamp(job: Envelope, nxt: Next) -> Any:
        log.append(f"stamp sees {job['type']} with id {bool(job['id'])}")
        job.setdefault("meta", {})["trace"] = "t-1"
        job["queue"] = "stamped"
        return await nxt(job)

    client.middleware.insert_before("stamp", recorder(log, "middle"))
    enqueued = await client.enqueue("report.build", [1], meta={"caller": "test"})
    assert enqueued is not None
    assert log == ["outer>", "middle>", "stamp sees report.build with id True", "<middle", "<outer"]
    stored = await harness.job(enqueued.id)
    assert stored.meta == {"caller": "test", "trace": "t-1"}
    assert stored.queue == "stamped"


async def test_enqueue_middleware_returning_none_drops_the_job(harness: Harness) -> None:
    client = harness.client

    @client.middleware.add
    async def drop_test_jobs(job: Envelope, nxt: Next) -> Any:
        if job["type"].startswith("test."):
            return None
        return await nxt(job)

    assert await client.enqueue("test.ignored") is None
    kept = await client.enqueue("real.job")
    assert kept is not None
    stats = await client.queue_stats("default")
    assert stats.counts[JobState.AVAILABLE] == 1
    results = await client.enqueue_many([job("real.a"), job("test.b"), job("real.c", [3])])
    assert [j.type if j else None for j in results] == ["real.a", None, "real.c"]
    assert (await client.queue_stats("default")).counts[JobState.AVAILABLE] == 3
    assert await client.enqueue_many([job("test.only")]) == [None]
    with pytest.raises(ValidationError) as info:  # positions name the caller's list
        await client.enqueue_many([job("test.x"), job("real.y"), job("real.z", queue="BAD")])
    assert info.value.path == "jobs[2].queue"
    assert info.value.details["index"] == 2
    assert (await client.queue_stats("default")).counts[JobState.AVAILABLE] == 3


async def test_enqueue_middleware_raising_aborts_and_stores_nothing(harness: Harness) -> None:
    client = harness.client

    class Refused(Exception):
        pass

    @client.middleware.add
    async def refuse_big(job: Envelope, nxt: Next) -> Any:
        if len(job["args"]) > 2:
            raise Refused("too many args")
        return await nxt(job)

    with pytest.raises(Refused):
        await client.enqueue("a.job", [1, 2, 3])
    with pytest.raises(Refused):  # a batch is all or nothing
        await client.enqueue_many(
            [{"type": "a.job", "args": [1]}, {"type": "a.job", "args": [1] * 3}]
        )
    assert (await client.queue_stats("default")).counts[JobState.AVAILABLE] == 0


async def test_enqueue_middleware_must_not_change_the_id(harness: Harness) -> None:
    client = harness.client

    @client.middleware.add
    async def rename(job: Envelope, nxt: Next) -> Any:
        job["id"] = "019b76da-a800-7231-ba09-a38ab6db3851"
        return await nxt(job)

    with pytest.raises(ValidationError) as info:
        await client.enqueue("a.job")
    assert info.value.path == "id"
    assert (await client.queue_stats("default")).counts[JobState.AVAILABLE] == 0


async def test_enqueue_middleware_output_is_validated_like_any_request(harness: Harness) -> None:
    client = harness.client

    @client.middleware.add
    async def break_queue(job: Envelope, nxt: Next) -> Any:
        job["queue"] = "Not A Queue"
        return await nxt(job)

    with pytest.raises(ValidationError) as info:
        await client.enqueue("a.job")
    assert info.value.path == "queue"


async def test_enqueue_middleware_does_not_mutate_the_callers_spec(harness: Harness) -> None:
    client = harness.client

    @client.middleware.add
    async def stamp(job: Envelope, nxt: Next) -> Any:
        job.setdefault("meta", {})["n"] = job["meta"].get("n", 0) + 1
        return await nxt(job)

    spec: dict[str, Any] = {"type": "a.job", "args": [], "meta": {"owner": "me"}}
    jobs = await client.enqueue_many([spec, spec])
    assert spec == {"type": "a.job", "args": [], "meta": {"owner": "me"}}
    assert [j.meta if j else None for j in jobs] == [{"owner": "me", "n": 1}] * 2
    assert len({j.id for j in jobs if j is not None}) == 2


# -- the execution chain (Worker) ---------------------------------------------------------


async def test_execution_chain_wraps_the_handler_in_order(harness: Harness) -> None:
    log: list[str] = []
    worker = harness.worker()
    worker.middleware.add(recorder(log, "b"))
    worker.middleware.prepend(recorder(log, "a"))
    worker.middleware.add(recorder(log, "d"))
    worker.middleware.insert_after("b", recorder(log, "c"))
    worker.middleware.insert_before("a", recorder(log, "removed"))
    worker.middleware.remove("removed")

    @worker.middleware.add
    async def double(ctx: JobContext, nxt: Next) -> Any:
        result = await nxt(ctx)
        return result * 2

    @worker.handler("math.square")
    async def square(ctx: JobContext) -> int:
        log.append(f"handler attempt {ctx.attempt}")
        value: int = ctx.args[0]
        return value * value

    job = await harness.client.enqueue("math.square", [3])
    assert job is not None
    worker.start()
    done = await harness.wait_state(job.id, JobState.COMPLETED)
    assert done.result == 18
    assert log == ["a>", "b>", "c>", "d>", "handler attempt 1", "<d", "<c", "<b", "<a"]


async def test_execution_errors_propagate_outwards_then_retry_applies(harness: Harness) -> None:
    seen: list[str] = []
    worker = harness.worker()

    @worker.middleware.add
    async def observe(ctx: JobContext, nxt: Next) -> Any:
        try:
            return await nxt(ctx)
        except Exception as exc:
            seen.append(f"{type(exc).__name__} on attempt {ctx.attempt}")
            raise

    @worker.middleware.add
    async def translate(ctx: JobContext, nxt: Next) -> Any:
        try:
            return await nxt(ctx)
        except KeyError as exc:
            raise LookupError(f"missing {exc}") from exc

    @worker.handler("lookup.user")
    async def lookup(ctx: JobContext) -> Any:
        users: dict[str, Any] = {}
        return users["user"]

    job = await harness.client.enqueue(
        "lookup.user", retry={"max_attempts": 2, "initial_interval_ms": 1000, "jitter": False}
    )
    assert job is not None
    worker.start()
    failed = await harness.wait_state(job.id, JobState.DISCARDED, tick=1)
    assert seen == ["LookupError on attempt 1", "LookupError on attempt 2"]
    assert [e.type for e in failed.errors] == ["LookupError", "LookupError"]
    assert failed.errors[0].message == "missing 'user'"


async def test_execution_middleware_edits_mid_run_apply_to_later_jobs(harness: Harness) -> None:
    log: list[str] = []
    worker = harness.worker(concurrency=1)
    release = asyncio.Event()

    @worker.middleware.add
    async def first(ctx: JobContext, nxt: Next) -> Any:
        log.append(f"first {ctx.args[0]}")
        return await nxt(ctx)

    @worker.handler("step.run")
    async def run(ctx: JobContext) -> None:
        if ctx.args[0] == 1:
            await release.wait()

    one = await harness.client.enqueue("step.run", [1])
    assert one is not None
    worker.start()
    await harness.wait_state(one.id, JobState.ACTIVE)
    worker.middleware.add(recorder(log, "added"))
    release.set()
    await harness.wait_state(one.id, JobState.COMPLETED)
    two = await harness.client.enqueue("step.run", [2])
    assert two is not None
    await harness.wait_state(two.id, JobState.COMPLETED)
    assert log == ["first 1", "first 2", "added>", "<added"]


async def test_job_context_has_the_queue_and_a_per_execution_metadata_store(
    harness: Harness,
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    worker = harness.worker("mail")

    @worker.middleware.add
    async def trace(ctx: JobContext, nxt: Next) -> Any:
        assert ctx.metadata == {}  # fresh for every execution
        ctx.metadata["span"] = f"span-{ctx.args[0]}"
        return await nxt(ctx)

    @worker.handler("mail.send")
    async def send(ctx: JobContext) -> None:
        seen.append((ctx.queue, dict(ctx.metadata)))

    ids = []
    for n in range(2):
        job = await harness.client.enqueue("mail.send", [n], queue="mail")
        assert job is not None
        ids.append(job.id)
    worker.start()
    for job_id in ids:
        await harness.wait_state(job_id, JobState.COMPLETED)
    assert sorted(seen, key=lambda s: s[1]["span"]) == [
        ("mail", {"span": "span-0"}),
        ("mail", {"span": "span-1"}),
    ]
