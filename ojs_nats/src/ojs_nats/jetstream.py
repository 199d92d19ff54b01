"""Thin helpers over nats-py for the JetStream features it does not wrap (yet).

* :func:`pull_now` asks a pull consumer for up to ``batch`` messages with ``no_wait`` and
  returns at once, leaving no lingering pull request behind on the server (a lingering request
  would capture the next message for a client that is no longer waiting).
* :func:`commit` writes one or more KV-style messages with per-subject expected sequences; more
  than one goes as an atomic batch (nats-server 2.12, ``allow_atomic``), all or nothing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.api import PubAck
from nats.js.client import JetStreamContext
from nats.js.errors import APIError

__all__ = ["MAX_BATCH", "Op", "WrongSequenceError", "commit", "pull_now"]

#: The server's limit on messages in one atomic batch.
MAX_BATCH = 1000
_WRONG_LAST_SEQUENCE = 10071

Op = tuple[str, bytes, dict[str, str]]


class WrongSequenceError(Exception):
    """A compare-and-swap lost: some subject's last sequence was not the one expected."""


async def pull_now(
    nc: Client, stream: str, consumer: str, batch: int, wait_s: float = 2.0
) -> list[Msg]:
    """Up to ``batch`` messages that are ready now (``no_wait``); ``[]`` when there are none."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    msgs: list[Msg] = []
    try:
        await nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            json.dumps({"batch": batch, "no_wait": True}).encode(),
            reply=inbox,
        )
        while len(msgs) < batch:
            try:
                msg = await sub.next_msg(timeout=wait_s)
            except TimeoutError:
                break
            if msg.headers and msg.headers.get("Status"):
                break  # 404 no messages, 408 request expired, 409 consumer gone ...
            msgs.append(msg)
    finally:
        await sub.unsubscribe()
    return msgs


async def publish(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    headers: dict[str, str] | None = None,
    wait_s: float = 5.0,
) -> PubAck:
    """``js.publish`` that rides out a stream's brief unavailability (just created, or a
    leader election in a cluster): *no responders* is retried for up to about a second."""
    for attempt in range(20):
        try:
            return await js.publish(subject, data, timeout=wait_s, headers=headers or None)
        except NoRespondersError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")  # pragma: no cover


async def _request(
    nc: Client, subject: str, data: bytes, headers: dict[str, str], wait_s: float
) -> Msg:
    for attempt in range(20):
        try:
            return await nc.request(subject, data, timeout=wait_s, headers=headers)
        except NoRespondersError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")  # pragma: no cover


def _is_wrong_sequence(err: APIError) -> bool:
    return err.err_code == _WRONG_LAST_SEQUENCE or "wrong last sequence" in (err.description or "")


async def commit(
    nc: Client, js: JetStreamContext, ops: Sequence[Op], wait_s: float = 5.0
) -> list[int]:
    """Write ``ops`` (subject, payload, headers); atomically when there are several.

    Returns the stream sequence of each message (a KV key's new revision). Raises
    :class:`WrongSequenceError` when an expected-sequence check fails (nothing written).
    """
    if not ops:
        return []
    if len(ops) == 1:
        subject, data, headers = ops[0]
        try:
            ack = await publish(js, subject, data, headers, wait_s)
        except APIError as err:
            if _is_wrong_sequence(err):
                raise WrongSequenceError(str(err)) from None
            raise
        return [ack.seq]
    if len(ops) > MAX_BATCH:
        raise ValueError(f"an atomic batch holds at most {MAX_BATCH} messages, got {len(ops)}")
    batch_id = uuid.uuid4().hex
    last = len(ops)
    for i, (subject, data, headers) in enumerate(ops, 1):
        h = dict(headers)
        h["Nats-Batch-Id"] = batch_id
        h["Nats-Batch-Sequence"] = str(i)
        if i < last:
            await nc.publish(subject, data, headers=h)
            continue
        h["Nats-Batch-Commit"] = "1"
        reply = await _request(nc, subject, data, h, wait_s)
        body = json.loads(reply.data or b"{}")
        error = body.get("error")
        if error:
            if error.get("err_code") == _WRONG_LAST_SEQUENCE or "wrong last sequence" in str(
                error.get("description", "")
            ):
                raise WrongSequenceError(str(error))
            raise APIError(
                code=error.get("code"),
                err_code=error.get("err_code"),
                description=error.get("description"),
            )
        last_seq = int(body.get("seq", 0))
        return list(range(last_seq - last + 1, last_seq + 1))
    return []  # pragma: no cover - the loop always returns on the last op
