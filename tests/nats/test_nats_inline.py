"""Reply subscriptions handled inline (``ojs_nats.inline``), on a real nats-server: the
backend's reply inboxes take the inline path with the pinned nats-py, every message reaches
the handler in order with nothing left pending, and a failing handler does not stop the
connection's reader."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.msg import Msg

import nats
from ojs_core import JobService
from ojs_nats.backend import NatsBackend
from ojs_nats.inline import is_inline, subscribe_inline
from ojs_nats.jetstream import replies
from ojs_nats.pulls import _POOLS

BackendFactory = Callable[[], Awaitable[NatsBackend]]


async def test_the_backends_reply_inboxes_are_inline(new_backend: BackendFactory) -> None:
    backend = await new_backend()
    svc = JobService(backend)
    await svc.enqueue(
        {"type": "inline.t", "args": [1]}
    )  # a pipelined write: the acknowledgement inbox
    assert await svc.fetch(["default"], 1, "w") != []  # a pull, and a batched read
    pipe_sub = backend.conn.pipe._sub
    assert pipe_sub is not None
    assert is_inline(pipe_sub)
    reply_sub = replies(backend.nc)._sub
    assert reply_sub is not None
    assert is_inline(reply_sub)
    inboxes = [inbox for pool in _POOLS[backend.nc].values() for inbox in pool]
    assert inboxes
    assert all(inbox.sub is not None and is_inline(inbox.sub) for inbox in inboxes)


async def test_every_message_is_handled_in_order_with_nothing_pending(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    got: list[bytes] = []
    all_in = asyncio.Event()

    def handler(msg: Msg) -> None:
        got.append(msg.data)
        if len(got) == 1000:
            all_in.set()

    sub = await subscribe_inline(nc, "inline.order", handler)
    for i in range(1000):
        await nc.publish("inline.order", str(i).encode() * 100)
    await nc.flush()
    await asyncio.wait_for(all_in.wait(), 10)
    assert got == [str(i).encode() * 100 for i in range(1000)]
    assert sub.pending_bytes == 0
    assert sub.pending_msgs == 0
    await sub.unsubscribe()
    await nc.close()


async def test_a_failing_handler_is_logged_and_the_reader_goes_on(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await nats.connect(nats_url)
    seen: list[Msg] = []

    def handler(msg: Msg) -> None:
        seen.append(msg)
        raise RuntimeError("a bug in a handler")

    await subscribe_inline(nc, "inline.bad", handler)

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe("inline.echo", cb=echo)
    with caplog.at_level(logging.ERROR, logger="ojs.nats"):
        await nc.publish("inline.bad", b"x")
        answer = await nc.request("inline.echo", b"still reading", timeout=5)
    assert answer.data == b"still reading"
    assert len(seen) == 1
    assert "a bug in a handler" in caplog.text
    await nc.close()
