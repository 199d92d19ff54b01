"""Queue names the spec allows but a NATS KV key cannot hold (found by the API fuzzer).

``^[a-z0-9][a-z0-9.-]*$`` admits ``a.`` and ``a..b``; as raw KV keys the first raised
InvalidKeyError (a 500) and the second addressed no subject (a misleading 503).
"""

from __future__ import annotations

import pytest

from ojs_core.service import JobService
from ojs_nats import names


@pytest.mark.parametrize("queue", ["a.", "a..b", "a.b.", "x"])
async def test_every_spec_valid_queue_name_works(svc: JobService, queue: str) -> None:
    created = await svc.enqueue({"type": "t.job", "args": [], "queue": queue})
    assert created.job.queue == queue
    await svc.set_paused(queue, True)
    assert await svc.fetch([queue], 1) == []
    await svc.set_paused(queue, False)
    [job] = await svc.fetch([queue], 1, "w1")
    assert job.id == created.job.id
    assert queue in [q.name for q in await svc.queues()]
    assert (await svc.queue_stats(queue)).name == queue


@pytest.mark.parametrize("queue", ["a.", "a..b", "default", "a.b-c"])
def test_queue_keys_round_trip(queue: str) -> None:
    key = names.name_key(queue)
    assert names.key_name(key) == queue
    assert not key.endswith(".")
    assert ".." not in key
