"""Pulls from JetStream consumers over reusable reply subscriptions.

A pull's messages arrive under their stream subjects, not under the pull's reply subject, so
the shared :class:`~ojs_nats.jetstream.Replies` inbox cannot tell which pull they answer: a
pull needs a subscription of its own. Subscribing and unsubscribing for every pull cost two
protocol messages, a new inbox and nats-py's per-message ``next_msg`` machinery (a uuid and a
task each). Here a pull borrows an idle subscription of its consumer from a pool (one per
consumer and connection, as many as pulls ever ran at once) and gives it back once its answer
is complete; messages are collected as they are read (:mod:`ojs_nats.inline`).

A subscription goes back to the pool only after a pull that ended cleanly (its batch filled,
or a status such as ``404 No Messages`` ended it): nothing more is sent to it then. After a
pull that gave up waiting it is unsubscribed, so a late message can never be taken for the
answer to the next pull (the server redelivers such a message after its ack wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import names
from .inline import subscribe_inline
from .jetstream import ConsumerGoneError

__all__ = ["pull_held", "pull_now"]


class _PullInbox:
    """One reply subscription, serving one pull at a time."""

    __slots__ = ("done", "msgs", "status", "sub", "subject", "want")

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.sub: Subscription | None = None
        self.msgs: list[Msg] = []
        self.want = 0
        self.status: str | None = None
        self.done: asyncio.Future[None] | None = None

    def on_msg(self, msg: Msg) -> None:
        done = self.done
        if done is None or done.done():
            return  # a pull that gave up: this subscription is being closed
        status = msg.headers.get(names.STATUS) if msg.headers else None
        if status:  # 404 no messages, 408 request expired, 409 consumer gone, 503 ...
            self.status = status
            done.set_result(None)
            return
        self.msgs.append(msg)
        if len(self.msgs) >= self.want:
            done.set_result(None)

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
            self.sub = None


_POOLS: weakref.WeakKeyDictionary[Client, dict[tuple[str, str], list[_PullInbox]]] = (
    weakref.WeakKeyDictionary()
)


async def _borrow(nc: Client, key: tuple[str, str]) -> tuple[_PullInbox, list[_PullInbox]]:
    pool = _POOLS.setdefault(nc, {}).setdefault(key, [])
    if pool:
        return pool.pop(), pool
    inbox = _PullInbox(nc.new_inbox())
    inbox.sub = await subscribe_inline(nc, inbox.subject, inbox.on_msg)
    return inbox, pool


async def pull_now(
    nc: Client, stream: str, consumer: str, batch: int, wait_s: float = 2.0
) -> list[Msg]:
    """Up to ``batch`` messages that are ready now (``no_wait``); ``[]`` when there are none.
    :class:`~ojs_nats.jetstream.ConsumerGoneError` when the consumer does not exist."""
    request = json.dumps({"batch": batch, "no_wait": True}).encode()
    return await _pull(nc, stream, consumer, request, batch, wait_s)


async def pull_held(nc: Client, stream: str, consumer: str, hold_s: float) -> list[Msg]:
    """The next message, held by the server until one is there or ``hold_s`` passed (then
    ``[]``): a waiting pull that costs one request, however long it waits."""
    request = json.dumps({"batch": 1, "expires": int(hold_s * 1e9)}).encode()
    return await _pull(nc, stream, consumer, request, 1, hold_s + _HOLD_MARGIN_S)


#: How long past its expiry a held pull waits for the server's ``408`` before giving up.
_HOLD_MARGIN_S = 5.0


async def _pull(
    nc: Client, stream: str, consumer: str, request: bytes, batch: int, wait_s: float
) -> list[Msg]:
    inbox, pool = await _borrow(nc, (stream, consumer))
    reusable = False
    loop = asyncio.get_running_loop()
    inbox.msgs, inbox.want, inbox.status = [], batch, None
    done = inbox.done = loop.create_future()
    try:
        await nc.publish(
            names.consumer_next_subject(stream, consumer), request, reply=inbox.subject
        )
        try:
            await asyncio.wait_for(asyncio.shield(done), wait_s)
        except TimeoutError:
            pass  # what arrived so far; this subscription is not used again
        else:
            reusable = True
        msgs = inbox.msgs
        if inbox.status == "503" and not msgs:
            raise ConsumerGoneError(f"{stream} has no consumer {consumer}")
        return msgs
    finally:
        inbox.done, inbox.msgs = None, []
        if not done.done():
            done.cancel()
        if reusable:
            pool.append(inbox)
        else:
            await inbox.close()
