"""The bounded in-server retries of ``ojs_nats.jetstream``: ``settle``, ``guard``, ``commit``.

A leader election on a cluster leaves a stream without a leader for 4-9 s (measured by
``test_nats_cluster.py``): requests to it get "no responders" meanwhile, which ``settle`` retries
for up to ``SETTLE_WAIT_S``; a call made while the connection is down waits up to
``RECONNECT_WAIT_S`` for the reconnection. Here the same situations are made on the session's
single nats-server: a stream that appears only after the first tries.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import pytest
from nats.errors import NoRespondersError
from nats.js.api import StreamConfig

from ojs_core.errors import BackendUnavailableError
from ojs_nats import jetstream
from ojs_nats.backend import NatsBackend
from ojs_nats.jetstream import commit, guard, settle

BackendFactory = Callable[[], Awaitable[NatsBackend]]


async def test_settle_retries_for_its_time_bound_backing_off_then_raises() -> None:
    tries: list[float] = []

    async def unanswered() -> None:
        tries.append(time.monotonic())
        raise NoRespondersError

    started = time.monotonic()
    with pytest.raises(NoRespondersError):
        await settle(unanswered, lambda exc: isinstance(exc, NoRespondersError), within_s=1.5)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed <= 2.0
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert gaps[0] < 0.15  # quick at first (a just-created stream)
    assert gaps[-1] > 0.15  # then backing off
    assert len(tries) < 30


async def test_settle_with_attempts_tries_that_many_times() -> None:
    tries = 0

    async def unanswered() -> None:
        nonlocal tries
        tries += 1
        raise NoRespondersError

    with pytest.raises(NoRespondersError):
        await settle(unanswered, lambda exc: True, attempts=3, delay_s=0.01)
    assert tries == 3


async def test_settle_does_not_retry_what_it_is_not_told_to() -> None:
    tries = 0

    async def failing() -> None:
        nonlocal tries
        tries += 1
        raise TimeoutError  # e.g. a write whose outcome is unknown: never retried here

    with pytest.raises(TimeoutError):
        await settle(failing, lambda exc: isinstance(exc, NoRespondersError))
    assert tries == 1


class Flaky:
    """An object with a ``connected`` property, as ``guard`` expects of a backend."""

    def __init__(self, down_for: float | None) -> None:
        self.up_at = None if down_for is None else time.monotonic() + down_for

    @property
    def connected(self) -> bool:
        return self.up_at is not None and time.monotonic() >= self.up_at

    @guard
    async def call(self) -> str:
        return "done"


async def test_guard_waits_briefly_for_a_reconnection() -> None:
    assert await Flaky(down_for=0.3).call() == "done"


async def test_guard_gives_up_after_its_reconnect_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetstream, "RECONNECT_WAIT_S", 0.3)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="reconnecting"):
        await Flaky(down_for=None).call()
    assert 0.3 <= time.monotonic() - started < 2.0


async def test_an_atomic_batch_nobody_answered_is_sent_again_whole(
    new_backend: BackendFactory,
) -> None:
    """While no stream captures the subjects (a leader election, or a stream still being
    created) every message of a batch is dropped; once one does, the whole batch must go again
    under a new batch id: the commit alone would be refused as an incomplete batch."""
    backend = await new_backend()
    js, nc = backend.js, backend.nc
    stream = "OJS_TEST_LATE"
    ops = [(f"ojs.test.late.{i}", f"m{i}".encode(), {}) for i in range(3)]

    async def create_later() -> None:
        await asyncio.sleep(0.5)
        await js.add_stream(
            StreamConfig(name=stream, subjects=["ojs.test.late.>"], allow_atomic=True)
        )

    creating = asyncio.ensure_future(create_later())
    try:
        seqs = await asyncio.wait_for(commit(nc, js, ops), 10)
        await creating
        assert seqs == [1, 2, 3]
        info = await js.stream_info(stream)
        assert info.state.messages == 3
    finally:
        creating.cancel()
        await js.delete_stream(stream)


def test_the_retry_bound_covers_a_leader_election() -> None:
    # nats-server's Raft followers campaign 4-9 s after the leader's last heartbeat.
    assert jetstream.SETTLE_WAIT_S >= 10


async def test_a_write_on_a_socket_closed_under_nats_py_is_a_503_not_a_500() -> None:
    """A cut connection makes nats-py's write raise RuntimeError (uvloop: "the handler is
    closed"); that is NATS being unreachable, not a bug (tests/nats/test_nats_partition.py
    met it as a 500). Any other RuntimeError still propagates."""

    class Owner:
        connected = True

    @guard
    async def cut(owner: Owner) -> None:
        raise RuntimeError(
            "unable to perform operation on <TCPTransport closed=True>; the handler is closed"
        )

    @guard
    async def bug(owner: Owner) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(BackendUnavailableError, match="connection lost"):
        await cut(Owner())
    with pytest.raises(RuntimeError, match="a bug"):
        await bug(Owner())
