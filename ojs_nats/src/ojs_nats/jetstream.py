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

__all__ = ["MAX_BATCH", "GroupCommitter", "Op", "WrongSequenceError", "commit", "pull_now"]

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


class GroupCommitter:
    """Merges the commits that concurrent callers make into shared atomic batches.

    Each caller still gets exactly the semantics of :func:`commit` for its own ops: all of them
    or none, the new sequences, :class:`WrongSequenceError` when one of *its* expectations
    fails. Ops for one stream that are waiting while ``max_inflight`` batches are in flight go
    out together as the next batch, so under load a hundred acks or enqueues cost one
    acknowledged request instead of a hundred (group commit). When a merged batch fails on an
    expected sequence, the callers' ops are retried separately, so that one caller's lost race
    never fails another caller.
    """

    def __init__(self, nc: Client, js: JetStreamContext, max_inflight: int = 2) -> None:
        self.nc = nc
        self.js = js
        self.max_inflight = max_inflight
        self._waiting: dict[str, list[tuple[Sequence[Op], asyncio.Future[list[int]]]]] = {}
        self._inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Batches sent so far (each is one acknowledged request): for tests and metrics.
        self.batches_sent = 0

    async def commit(self, stream: str, ops: Sequence[Op]) -> list[int]:
        """Write ``ops`` (all on ``stream``) atomically, possibly together with other callers'."""
        if not ops:
            return []
        if len(ops) > MAX_BATCH:
            raise ValueError(f"an atomic batch holds at most {MAX_BATCH} messages, got {len(ops)}")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(stream, []).append((ops, future))
        self._pump(stream)
        return await future

    def _pump(self, stream: str) -> None:
        waiting = self._waiting.get(stream)
        while waiting and self._inflight.get(stream, 0) < self.max_inflight:
            group: list[tuple[Sequence[Op], asyncio.Future[list[int]]]] = []
            subjects: set[str] = set()
            size = 0
            rest: list[tuple[Sequence[Op], asyncio.Future[list[int]]]] = []
            for item in waiting:
                ops = item[0]
                touched = {op[0] for op in ops}
                # One subject at most once per batch: two expectations on one key cannot both
                # hold, and the second caller must see the first one's write.
                if group and (size + len(ops) > MAX_BATCH or touched & subjects):
                    rest.append(item)
                    continue
                group.append(item)
                subjects |= touched
                size += len(ops)
            waiting[:] = rest
            self.batches_sent += 1
            self._inflight[stream] = self._inflight.get(stream, 0) + 1
            task = asyncio.get_running_loop().create_task(self._run(stream, group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(
        self, stream: str, group: list[tuple[Sequence[Op], asyncio.Future[list[int]]]]
    ) -> None:
        try:
            if len(group) == 1:
                await self._settle(*group[0])
                return
            merged = [op for ops, _ in group for op in ops]
            try:
                seqs = await commit(self.nc, self.js, merged)
            except WrongSequenceError:
                # Someone's expectation failed: find out whose by committing each on its own.
                await asyncio.gather(*(self._settle(ops, fut) for ops, fut in group))
                return
            except BaseException as exc:
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            start = 0
            for ops, fut in group:
                if not fut.done():
                    fut.set_result(seqs[start : start + len(ops)])
                start += len(ops)
        finally:
            self._inflight[stream] -= 1
            self._pump(stream)

    async def _settle(self, ops: Sequence[Op], fut: asyncio.Future[list[int]]) -> None:
        try:
            result = await commit(self.nc, self.js, ops)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not fut.done():
            fut.set_result(result)
