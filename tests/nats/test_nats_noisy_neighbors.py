"""Noisy-neighbour detection across replicas on a real nats-server: the jobs go through one
replica, the detector runs on the other and sees them, through the per-tenant counters and
the event log both replicas share."""

from __future__ import annotations

import attrs
from nats_support import eventually
from noisy_scenarios import NO_DEPTH, assess_until, events_of, push, run_to_failure, signals_of

from ojs_core.noisy_neighbors import DETECTED, NoisyNeighbors
from ojs_core.service import JobService


async def test_the_other_replica_detects_every_signal(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    depth = NoisyNeighbors(b)
    await push(a, "acme", "nn-q", 25)
    await push(a, "beta", "nn-q", 1)
    # Counters and the event log lag their writes a little on NATS: both signals awaited.
    both = {"queue_depth_ratio", "enqueue_rate_ratio"}
    found = await assess_until(depth, lambda f: both <= set(signals_of(f, "acme")))
    assert signals_of(found, "beta") == []
    # Published by b, in the log a reads (events are stored just after the call returns).
    events = await eventually(lambda: events_of(a, DETECTED))
    assert [e.data["tenant_id"] for e in events] == ["acme"]
    rates = NoisyNeighbors(b, attrs.evolve(NO_DEPTH, enqueue_ratio=1e9))
    await run_to_failure(a, "gamma", "nn-e", 10, fail=True)
    await run_to_failure(a, "delta", "nn-e", 10, fail=False)
    found = await assess_until(rates, lambda f: signals_of(f, "gamma") == ["error_rate_ratio"])
    assert signals_of(found, "delta") == []
