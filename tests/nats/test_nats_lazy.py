"""Messages nobody waits for (``ojs_nats.lazy``), on a real nats-server: they leave with the
connection's next write, in order, or on their own within ``LAZY_S``; a message too large is
refused as a publish refuses it; and the backend sends hint acknowledgements, index removals
and events this way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from nats.aio.msg import Msg
from nats.errors import BadSubjectError, MaxPayloadError

import nats
from ojs_core import JobService
from ojs_nats.backend import NatsBackend
from ojs_nats.lazy import LAZY_S, LazyPublisher

BackendFactory = Callable[[], Awaitable[NatsBackend]]


@dataclass
class Heard:
    """What a second connection heard on a subject, and a lazy publisher on the first."""

    nc: nats.NATS
    lazy: LazyPublisher
    got: list[bytes] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def heard_on(url: str, subject: str) -> AsyncIterator[Heard]:
    listener = await nats.connect(url)
    nc = await nats.connect(url)
    heard = Heard(nc, LazyPublisher(nc))

    async def on_msg(msg: Msg) -> None:
        heard.got.append(msg.data)
        heard.arrived.set()

    await listener.subscribe(subject, cb=on_msg)
    await listener.flush()
    try:
        yield heard
    finally:
        heard.lazy.close()
        await nc.close()
        await listener.close()


async def test_a_lazy_message_leaves_with_the_next_write_in_order(nats_url: str) -> None:
    async with heard_on(nats_url, "lazy.order") as heard:
        nc = heard.nc
        await heard.lazy.publish("lazy.order", b"first")
        assert b"".join(nc._pending).endswith(b"first\r\n")  # queued, not written yet
        await nc.publish("lazy.order", b"second")  # a write that is sent at once...
        await nc.flush()
        for _ in range(100):
            if len(heard.got) == 2:
                break
            await asyncio.sleep(0.01)
        assert heard.got == [b"first", b"second"]  # ... takes the lazy one along, before it


async def test_a_lazy_message_alone_leaves_within_its_delay(nats_url: str) -> None:
    async with heard_on(nats_url, "lazy.alone") as heard:
        await heard.lazy.publish("lazy.alone", b"alone")
        await asyncio.wait_for(heard.arrived.wait(), 100 * LAZY_S + 5)
        assert heard.got == [b"alone"]
        assert heard.nc._pending_data_size == 0


async def test_a_message_too_large_is_refused_as_a_publish_refuses_it(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    lazy = LazyPublisher(nc)
    try:
        with pytest.raises(MaxPayloadError):
            await lazy.publish("lazy.big", b"x" * (nc.max_payload + 1))
        assert nc._pending_data_size == 0
    finally:
        lazy.close()
        await nc.close()


async def test_a_subject_a_publish_refuses_is_refused(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    lazy = LazyPublisher(nc)
    try:
        for subject in ("lazy bad", "lazy.bad\r\nPUB x 1", "lazy\tbad"):
            with pytest.raises(BadSubjectError):
                await lazy.publish(subject, b"x")
        assert nc._pending_data_size == 0  # nothing raw reached the protocol stream
    finally:
        lazy.close()
        await nc.close()


async def test_the_backend_sends_what_nobody_waits_for_lazily(
    new_backend: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await new_backend()
    svc = JobService(backend)
    sent: list[str] = []
    publish = LazyPublisher.publish

    async def recorded(self: LazyPublisher, subject: str, data: bytes = b"") -> None:
        sent.append(subject)
        await publish(self, subject, data)

    monkeypatch.setattr(LazyPublisher, "publish", recorded)
    job = (await svc.enqueue({"type": "lazy.t", "args": [], "options": {"queue": "lz"}})).job
    [claimed] = await svc.fetch(["lz"], 1, "w")
    await svc.ack(claimed.id, None)
    for _ in range(200):  # index removals are sent by a background task
        if any(s.startswith("$JS.API.STREAM.MSG.DELETE") for s in sent):
            break
        await asyncio.sleep(0.01)
    assert any(s.startswith("$JS.ACK.") for s in sent)  # the claimed hint's acknowledgement
    assert any(s.startswith("$JS.API.STREAM.MSG.DELETE") for s in sent)  # an index removal
    assert "ojs.events.job.completed" in sent
    assert (await svc.get(job.id)).state.value == "completed"
