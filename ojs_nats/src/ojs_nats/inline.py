"""Reply subscriptions handled inline, as nats-py reads each message.

nats-py hands every message of a callback subscription to a queue, which a task of the
subscription empties by awaiting the callback: per message a queue put, a future, a task step
and a coroutine. For the replies the backend waits on (publish acknowledgements, batched reads,
pulled messages), whose handling only completes a future, that hop is most of their cost on
the client: measured on the worker of ``benchmarks/deployment.py``, several microseconds per
message at about ten messages per job.

:func:`subscribe_inline` subscribes with an ordinary callback, then, where this nats-py has the
queue it expects, puts a stand-in in the queue's place that calls the handler at once (and
stops the subscription's task, which has nothing left to read). Where it does not, the ordinary
callback path stays: same behaviour, one hop slower. ``tests/nats/test_nats_inline.py`` checks
the inline path is taken with the nats-py this project pins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["is_inline", "subscribe_inline"]

log = logging.getLogger("ojs.nats")

#: A handler: plain (not async), quick, and it must not raise (what it raises is logged).
Handler = Callable[[Msg], None]


class _Inline:
    """Stands in for a subscription's pending queue: each message put is handled at once."""

    __slots__ = ("handler", "sub")

    def __init__(self, sub: Subscription, handler: Handler) -> None:
        self.sub = sub
        self.handler = handler

    def put_nowait(self, msg: Msg) -> None:
        # nats-py counted the bytes as pending before the put; nothing stays pending here.
        self.sub._pending_size -= len(msg.data)
        try:
            self.handler(msg)
        except Exception:  # the reader must go on: a handler's bug is logged, not raised
            log.exception("handling a message on %s failed", msg.subject)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        return None

    async def join(self) -> None:
        return None


async def subscribe_inline(nc: Client, subject: str, handler: Handler) -> Subscription:
    """Subscribe to ``subject`` with ``handler`` called for each message as it is read."""

    async def deliver(msg: Msg) -> None:  # the ordinary path, where inlining is not possible
        handler(msg)

    sub = await nc.subscribe(subject, cb=deliver)
    task = getattr(sub, "_wait_for_msgs_task", None)
    if (
        isinstance(getattr(sub, "_pending_queue", None), asyncio.Queue)
        and isinstance(task, asyncio.Task)
        and isinstance(getattr(sub, "_pending_size", None), int)
    ):
        # Nothing was sent to this new subject yet: the queue is empty and stays unread.
        task.cancel()
        sub._pending_queue = _Inline(sub, handler)  # type: ignore[assignment]
    return sub


def is_inline(sub: Subscription) -> bool:
    """Whether ``sub``'s messages are handled inline."""
    return isinstance(getattr(sub, "_pending_queue", None), _Inline)
