"""Reads that decide writes go to the stream leader on a replicated store (issue 11, finding 6).

A direct get (``allow_direct``, which the jobs bucket has for cheap batched reads) may be
answered by any replica, and a follower answers with what it has applied, not necessarily the
latest write. On ``--nats-replicas 3`` every read that decides a write (a claim's, an ack's, a
heartbeat's, a timer's, a get) must therefore go to the stream leader. Stale answers from a
lagging follower cannot be produced on demand, so the test watches the wire: it counts the
direct gets of the jobs stream that a replicated backend sends through a whole lifecycle and
a listing (none allowed), and proves the watcher sees one when it is sent.

Marked ``cluster``: it starts a 3-node cluster (``pytest -m cluster``, its own CI step).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from fault_support import NatsCluster
from nats.aio.msg import Msg
from nats_support import eventually

import nats
from ojs_core.backend import JobFilter
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_nats import names
from ojs_nats.backend import NatsBackend

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.deadline(180)]

JOBS_STREAM = names.kv_stream(names.JOBS_BUCKET)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster")
    try:
        await nodes.start()
        yield nodes
    finally:
        await asyncio.to_thread(nodes.stop)


async def test_a_replicated_store_decides_writes_on_leader_reads_only(
    cluster: NatsCluster,
) -> None:
    backend = NatsBackend(cluster.urls, replicas=3)
    await backend.open()
    watcher = await nats.connect(cluster.urls.split(","))
    direct: list[str] = []
    try:
        svc = JobService(backend)
        # Direct gets of the jobs stream: ``$JS.API.DIRECT.GET.<stream>`` (a JSON request)
        # and ``$JS.API.DIRECT.GET.<stream>.<subject>`` (a key in the subject).
        for subject in (f"$JS.API.DIRECT.GET.{JOBS_STREAM}", f"$JS.API.DIRECT.GET.{JOBS_STREAM}.>"):
            await watcher.subscribe(subject, cb=_note(direct))
        await watcher.flush()

        job = (await svc.enqueue({"type": "leader.read", "args": [1]})).job
        fetched = await svc.fetch(["default"], worker_id="w1")
        assert [j.id for j in fetched] == [job.id]
        beat = await svc.heartbeat("w1", [job.id], 30_000)
        assert beat.extended == [job.id]
        await svc.ack(job.id, {"ok": True}, worker_id="w1")
        assert (await svc.get(job.id)).state is JobState.COMPLETED
        doomed = (await svc.enqueue({"type": "leader.read", "args": [2]})).job
        await svc.cancel(doomed.id)
        await svc.run_timers()
        await watcher.flush()
        assert direct == [], f"reads that decide writes went to followers: {direct[:5]}"

        # A listing decides nothing: it reads its own stream (the index), then the records of
        # the page, through the leader here too.
        page = await backend.list_jobs(JobFilter(state="completed", limit=10))
        assert [j.id for j in page.items] == [job.id]
        await watcher.flush()
        assert direct == []

        # The watcher does see a direct get of the jobs stream when one is sent.
        assert (await backend.store.jobs.get(names.job_key(job.id))).value

        async def seen() -> bool:
            await watcher.flush()
            return bool(direct)

        await eventually(seen, what="a direct get of the jobs stream seen by the watcher")
    finally:
        await watcher.close()
        await backend.close()


def _note(out: list[str]) -> Callable[[Msg], Awaitable[None]]:
    """A subscription callback that notes each message's subject in ``out``."""

    async def handler(msg: Msg) -> None:
        out.append(msg.subject)

    return handler
