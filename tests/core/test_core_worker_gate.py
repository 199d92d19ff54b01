"""``ojs_core.shutdown.WorkerGate``: a fetch reads a worker's record at most once per TTL, and
what this process writes applies at once."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs

from ojs_core.model import WorkerInfo
from ojs_core.shutdown import WorkerGate


async def test_reads_once_per_ttl_and_notes_apply_at_once() -> None:
    now = [0.0]
    reads: list[str] = []
    stored = {"w": WorkerInfo(worker_id="w", last_seen=datetime.now(UTC))}

    async def read(worker_id: str) -> WorkerInfo | None:
        reads.append(worker_id)
        return stored.get(worker_id)

    gate = WorkerGate(read, ttl_s=1.0, monotonic=lambda: now[0])
    assert await gate.accepts("w")
    assert await gate.accepts("w")
    assert reads == ["w"]  # the second answer came from memory
    stored["w"] = attrs.evolve(stored["w"], directive="quiet")  # written by another replica
    assert await gate.accepts("w")  # not seen yet: within the TTL
    now[0] = 1.5
    assert not await gate.accepts("w")
    assert reads == ["w", "w"]
    gate.note(attrs.evolve(stored["w"], directive="running", state="running"))
    assert await gate.accepts("w")  # this process's own write: at once
    assert await gate.accepts("unknown")  # an unknown worker may fetch


async def test_memory_stays_bounded() -> None:
    async def read(worker_id: str) -> WorkerInfo | None:
        return None

    gate = WorkerGate(read, max_workers=10)
    for i in range(25):
        await gate.accepts(f"w{i}")
    assert len(gate._seen) <= 10
