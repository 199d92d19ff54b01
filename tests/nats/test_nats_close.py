"""Closing a backend is bounded: a process asked to stop (SIGTERM) stops promptly whatever
its NATS subscriptions hold."""

from __future__ import annotations

import asyncio
import time

from ojs_nats import connection
from ojs_nats.backend import NatsBackend


async def test_close_is_bounded_when_a_subscription_holds_unread_messages(
    nats_url: str,
) -> None:
    # A request's reply inbox whose reader gave up (cancelled, timed out) before reading what
    # arrived: nats-py's drain waits for every queued message to be read, up to its 30 s
    # drain timeout, and then raises CancelledError out of ``drain()``.
    backend = NatsBackend(nats_url)
    await backend.open()
    nc = backend.conn.nc
    inbox = nc.new_inbox()
    await nc.subscribe(inbox)
    await nc.publish(inbox, b"never read")
    await nc.flush()

    started = time.monotonic()
    await asyncio.wait_for(backend.close(), connection.CLOSE_DRAIN_S + 10)
    assert time.monotonic() - started < connection.CLOSE_DRAIN_S + 5
    assert nc.is_closed
    assert not backend.conn.is_open
