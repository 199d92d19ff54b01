"""Progress and checkpoints from an in-process handler (``JobContext``) over a MemoryBackend.

Retry back-off runs on the harness's ManualClock; every wait is on an observable condition.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from embed_support import Harness, eventually

from ojs_core import JobContext
from ojs_core.errors import ConflictError, ValidationError
from ojs_core.model import Checkpoint
from ojs_core.states import JobState

S = JobState
RETRY = {"max_attempts": 3, "initial_interval_ms": 1000, "jitter": False}


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


async def test_a_handler_resumes_from_its_checkpoint(harness: Harness) -> None:
    h = harness
    worker = h.worker()
    seen: list[tuple[int, Checkpoint | None, bool]] = []

    @worker.handler("rows.import")
    async def handle(ctx: JobContext) -> dict[str, Any]:
        start = ctx.last_checkpoint.state["next"] if ctx.last_checkpoint else 0
        cursor: dict[str, Any] = {"next": start}
        for row in range(start, 10):
            stored = await ctx.report_progress((row + 1) / 10, data={"row": row})
            cursor["next"] = row + 1
            await ctx.checkpoint(cursor)
            cursor["next"] = -1  # the saved checkpoint is a copy: this changes nothing stored
            if ctx.attempt == 1 and row == 3:
                seen.append((ctx.attempt, ctx.last_checkpoint, stored))
                raise RuntimeError("crash at row 3")
        seen.append((ctx.attempt, ctx.last_checkpoint, True))
        return {"from": start}

    job = await h.client.enqueue("rows.import", retry=RETRY)
    assert job is not None
    worker.start()
    done = await h.wait_state(job.id, S.COMPLETED, tick=1)
    assert done.result == {"from": 4}
    (first_attempt, first_cp, stored), (second_attempt, second_cp, _) = seen
    assert (first_attempt, first_cp, stored) == (1, None, True)
    assert second_attempt == 2
    assert second_cp is not None
    assert (second_cp.state, second_cp.sequence, second_cp.attempt) == ({"next": 4}, 4, 1)
    assert done.progress is not None
    assert (done.progress.value, done.progress.data) == (1.0, {"row": 9})
    assert done.checkpoint is None
    assert done.checkpoint_seq == 10


async def test_stale_or_invalid_calls_are_refused(harness: Harness) -> None:
    h = harness
    worker = h.worker()
    outcomes: list[Any] = []

    @worker.handler("rows.stale")
    async def handle(ctx: JobContext) -> None:
        await h.service.cancel(ctx.job_id)  # the job is taken away mid-run
        outcomes.append(await ctx.report_progress(0.5))
        try:
            await ctx.checkpoint({"n": 1})
        except ConflictError as exc:
            outcomes.append(exc.details["current_state"])
        try:
            await ctx.checkpoint({"when": object()})
        except ValidationError as exc:
            outcomes.append(exc.path)
        outcomes.append(await ctx.clear_checkpoint())

    job = await h.client.enqueue("rows.stale")
    assert job is not None
    worker.start()
    await h.wait_state(job.id, S.CANCELLED)

    async def all_seen() -> bool:
        return len(outcomes) == 4

    await eventually(all_seen, what="the handler's four calls")
    assert outcomes == [False, "cancelled", "state", False]
