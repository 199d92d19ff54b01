"""Thin helpers over nats-py for the JetStream features it does not wrap (yet).

* :func:`pull_now` asks a pull consumer for up to ``batch`` messages with ``no_wait`` and
  returns at once, leaving no lingering pull request behind on the server (a lingering request
  would capture the next message for a client that is no longer waiting).
* :func:`commit` writes one or more KV-style messages with per-subject expected sequences; more
  than one goes as an atomic batch (nats-server 2.12, ``allow_atomic``), all or nothing.
* :class:`Pipeline` keeps many single publishes in flight, each acknowledged on its own.
* :func:`settle` retries a call while a stream cannot answer yet (just created, or electing a
  leader), the one bounded "retry while nobody answers" policy of the backend.
* :func:`guard` maps NATS connectivity errors to :class:`BackendUnavailableError` at the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import PubAck
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from ojs_core import jsonio
from ojs_core.errors import BackendUnavailableError, OJSError, PayloadTooLargeError
from ojs_core.tasks import cancel_and_wait

from . import names
from .inline import subscribe_inline

__all__ = [
    "MAX_BATCH",
    "RECONNECT_WAIT_S",
    "SETTLE_ATTEMPTS",
    "SETTLE_DELAY_S",
    "SETTLE_MAX_DELAY_S",
    "SETTLE_WAIT_S",
    "UNKNOWN_OUTCOME",
    "ConsumerGoneError",
    "Op",
    "Pipeline",
    "Replies",
    "WrongSequenceError",
    "backend_error",
    "check_size",
    "closed_transport",
    "commit",
    "direct_get_batch",
    "guard",
    "last_values",
    "publish",
    "replies",
    "settle",
]

#: The server's limit on messages in one atomic batch.
MAX_BATCH = 1000
_WRONG_LAST_SEQUENCE = 10071
#: nats-server's "atomic publish batch is incomplete": the batch was refused, nothing stored.
_INCOMPLETE_BATCH = 10176

Op = tuple[str, bytes, dict[str, str]]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: How long :func:`settle` keeps trying a call that no stream answers, and how far apart: the
#: first tries 50 ms apart (a just-created stream answers within a few), then backing off to
#: half a second. The bound covers a leader election on a cluster: nats-server's Raft followers
#: campaign 4-9 s after the leader's last heartbeat, and a killed stream leader was replaced
#: 4-9 s after the kill on loopback (tests/nats/test_nats_cluster.py). A request that no stream
#: answered was stored nowhere, so trying it again is always safe; a write whose answer timed
#: out is never retried here (``UNKNOWN_OUTCOME``: the callers re-read and fence it).
SETTLE_WAIT_S = 15.0
SETTLE_DELAY_S = 0.05
SETTLE_MAX_DELAY_S = 0.5
#: The fixed count of tries of the former policy (20 tries 50 ms apart), still accepted by
#: :func:`settle` as ``attempts=`` for callers that want a count instead of a time bound.
SETTLE_ATTEMPTS = 20

#: How long a call made while the connection is down waits for nats-py to reconnect before it
#: fails (:func:`guard`). Reconnecting to a surviving node of a cluster took 4 ms on loopback;
#: a lone server that is down costs each call this long instead of failing at once.
RECONNECT_WAIT_S = 2.0
_RECONNECT_POLL_S = 0.02

#: What means "NATS cannot be reached right now" rather than "the request was wrong".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionDrainingError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    nats.errors.OutboundBufferLimitError,
    TimeoutError,
    ConnectionError,
)


#: A write that raised one of these may or may not have been stored: its acknowledgement never
#: came (it timed out, or the connection closed while waiting for it).
UNKNOWN_OUTCOME: tuple[type[BaseException], ...] = (
    TimeoutError,
    nats.errors.ConnectionClosedError,
)


async def settle(
    call: Callable[[], Awaitable[T]],
    retry_on: Callable[[BaseException], bool],
    *,
    attempts: int | None = None,
    delay_s: float = SETTLE_DELAY_S,
    within_s: float = SETTLE_WAIT_S,
) -> T:
    """``await call()``, tried again while it raises what ``retry_on`` accepts; the last
    failure is raised.

    By default the tries go on for ``within_s`` seconds in all (no new try starts later),
    ``delay_s`` apart at first and backing off to ``SETTLE_MAX_DELAY_S``. With ``attempts``,
    at most that many tries, ``delay_s`` apart, instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    delay = delay_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            if not retry_on(exc):
                raise
            if attempts is not None:
                if attempt >= attempts:
                    raise
            elif loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        if attempts is None and attempt >= SETTLE_ATTEMPTS // 2:
            delay = min(delay * 2, SETTLE_MAX_DELAY_S)


def _unanswered(exc: BaseException) -> bool:
    """No stream answered: just created, or electing a leader (``js.publish`` raises the
    second for the first)."""
    return isinstance(exc, NoRespondersError | NoStreamResponseError)


def guard(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn NATS connectivity errors into :class:`BackendUnavailableError` (HTTP 503).

    For methods of an object with a ``connected`` property: while the connection is down they
    wait up to ``RECONNECT_WAIT_S`` for nats-py to reconnect (to another node of a cluster
    that takes milliseconds), then fail rather than wait for a publish timeout, so clients get
    503 + Retry-After.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if args and getattr(args[0], "connected", True) is False:
            await _await_reconnect(args[0])
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            mapped = backend_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    return wrapper


def backend_error(exc: BaseException) -> BaseException:
    """What :func:`guard` raises for ``exc``: a NATS connectivity error as
    :class:`BackendUnavailableError`, anything else (OJS errors included) as it is. For
    outcomes reported per item instead of raised."""
    if isinstance(exc, OJSError):
        return exc
    if isinstance(exc, UNAVAILABLE):
        mapped: BaseException = BackendUnavailableError(f"NATS unavailable: {exc!r}")
    elif closed_transport(exc):
        mapped = BackendUnavailableError(f"NATS connection lost: {exc!r}")
    else:
        return exc
    mapped.__cause__ = exc
    return mapped


def closed_transport(exc: BaseException) -> bool:
    """Whether ``exc`` is what a write on a socket that closed under nats-py raises (a cut
    connection: uvloop's "the handler is closed", asyncio's "closed transport")."""
    return isinstance(exc, RuntimeError) and "closed" in str(exc)


async def _await_reconnect(owner: object) -> None:
    """Return once ``owner.connected`` is true again; :class:`BackendUnavailableError` when it
    is still false after ``RECONNECT_WAIT_S``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECONNECT_WAIT_S
    while getattr(owner, "connected", True) is False:
        if loop.time() >= deadline:
            raise BackendUnavailableError("NATS is unreachable (reconnecting)")
        await asyncio.sleep(_RECONNECT_POLL_S)


_HEADER_LINE = len("NATS/1.0\r\n") + len("\r\n")


def check_size(nc: Client, data: bytes, headers: dict[str, str] | None) -> None:
    """Refuse (413) a message nats-server would refuse: it counts the headers against
    ``max_payload`` too, and closes the connection on a violation (nats-py checks only the
    payload), which would drop every other request of this replica in flight."""
    size = len(data)
    if headers:
        size += _HEADER_LINE + sum(len(k) + len(v) + 4 for k, v in headers.items())
    limit = nc.max_payload
    if limit and size > limit:
        raise PayloadTooLargeError(
            f"the record is {size} bytes stored; this NATS server's max_payload is {limit}",
            details={"size": size, "limit": limit},
        )


class WrongSequenceError(Exception):
    """A compare-and-swap lost: some subject's last sequence was not the one expected."""


class ConsumerGoneError(Exception):
    """A pull found no consumer (503 no responders): it was deleted, e.g. reaped when idle."""


class _Reply:
    """One request's replies as they arrive on the shared inbox."""

    __slots__ = ("collect", "done", "last")

    def __init__(self, collect: Callable[[Msg], bool], done: asyncio.Future[None], now: float):
        self.collect = collect
        self.done = done
        self.last = now


class Replies:
    """Replies of many multi-message requests (batched direct gets) on one wildcard inbox
    subscription per connection, each matched by its reply subject's token.

    A subscription per request cost two protocol messages (SUB, UNSUB) and a subscription
    object per read of a few records. Here each message is handed to its request's ``collect``
    callback in arrival order (one subscription, one reader task), and a request's only
    timer is its inactivity bound."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix: str | None = None
        self._sub: Subscription | None = None
        self._next = 0
        self._open: dict[str, _Reply] = {}

    async def _inbox(self) -> str:
        if self._prefix is None:
            # Set before subscribing (which may yield): concurrent first requests share it.
            prefix = self._prefix = self.nc.new_inbox() + "."
            self._sub = await subscribe_inline(self.nc, prefix + "*", self._on_msg)
        return self._prefix

    def _on_msg(self, msg: Msg) -> None:
        reply = self._open.get(msg.subject[len(self._prefix or "") :])
        if reply is None or reply.done.done():
            return  # the request gave up: a pulled message comes back after its ack wait
        reply.last = reply.done.get_loop().time()
        try:
            finished = reply.collect(msg)
        except Exception as exc:
            reply.done.set_exception(exc)
            return
        if finished:
            reply.done.set_result(None)

    async def request(
        self, subject: str, payload: bytes, collect: Callable[[Msg], bool], wait_s: float
    ) -> bool:
        """Send ``payload`` to ``subject`` and feed every reply to ``collect`` until it
        returns ``True`` (then ``True``), or until no reply came for ``wait_s`` (then
        ``False``). An exception ``collect`` raises is raised here."""
        prefix = await self._inbox()
        self._next += 1
        token = str(self._next)
        loop = asyncio.get_running_loop()
        reply = _Reply(collect, loop.create_future(), loop.time())
        self._open[token] = reply
        try:
            await self.nc.publish(subject, payload, reply=prefix + token)
            timeout = wait_s
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(reply.done), timeout)
                    return True
                except TimeoutError:
                    idle = loop.time() - reply.last
                    if idle >= wait_s:
                        return False
                    timeout = wait_s - idle
        finally:
            del self._open[token]
            if not reply.done.done():
                reply.done.cancel()


_REPLIES: weakref.WeakKeyDictionary[Client, Replies] = weakref.WeakKeyDictionary()


def replies(nc: Client) -> Replies:
    """The shared reply inbox of ``nc`` (created on first use; it lives as long as ``nc``,
    and nats-py restores its subscription after a reconnect)."""
    found = _REPLIES.get(nc)
    if found is None:
        found = _REPLIES[nc] = Replies(nc)
    return found


async def direct_get_batch(
    nc: Client, stream: str, request: dict[str, Any], wait_s: float = 5.0
) -> list[Msg]:
    """A batched direct get (``multi_last``, or ``seq`` + ``next_by_subj`` + ``batch``): the
    messages it returns, deletion markers included (callers look at ``KV-Operation``). No
    consumer is created. Raises ``RuntimeError`` for an error status (e.g. direct gets not
    allowed on the stream), ``nats.errors.TimeoutError`` when no answer came for ``wait_s``
    (after the last one)."""
    msgs: list[Msg] = []

    def collect(msg: Msg) -> bool:
        status = (msg.headers or {}).get(names.STATUS)
        if status in ("204", "404"):  # end of batch; nothing (more) found
            return True
        if status:
            raise RuntimeError(f"direct get on {stream} answered {status}")
        msgs.append(msg)
        return False

    subject = names.direct_get_subject(stream)
    if not await replies(nc).request(subject, json.dumps(request).encode(), collect, wait_s):
        raise nats.errors.TimeoutError
    return msgs


#: Subjects a ``multi_last`` direct get answers at a time.
_MULTI_LAST = 1000


async def last_values(nc: Client, stream: str, subject: str) -> list[Msg]:
    """The last message of each subject of ``stream`` matching ``subject`` (deletion markers
    included): batched ``multi_last`` direct gets, paged."""
    found: dict[str, Msg] = {}
    seq = 0
    while True:  # multi_last answers at most _MULTI_LAST subjects a time: page on
        request: dict[str, Any] = {"multi_last": [subject], "batch": _MULTI_LAST}
        if seq:
            request["seq"] = seq
        page = await direct_get_batch(nc, stream, request)
        before = len(found)
        for msg in page:
            found[(msg.headers or {}).get(names.DIRECT_SUBJECT, "")] = msg
        if len(page) < _MULTI_LAST or len(found) == before:
            return list(found.values())
        seq = int((page[-1].headers or {}).get(names.DIRECT_SEQUENCE, "0")) + 1


async def publish(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    headers: dict[str, str] | None = None,
    wait_s: float = 5.0,
) -> PubAck:
    """``js.publish`` that rides out a stream's brief unavailability (:func:`settle`)."""
    return await settle(
        lambda: js.publish(subject, data, timeout=wait_s, headers=headers or None), _unanswered
    )


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
    for _, data, headers in ops:
        check_size(nc, data, headers)
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
    last = len(ops)

    async def send_batch() -> dict[str, Any]:
        # A fresh batch id on every try. When no stream answered the commit, or the stream
        # answered that the batch is incomplete (it was electing a leader and dropped some of
        # the earlier messages), nothing of the batch was stored, and a batch is committed only
        # with all of its messages: so the whole batch is sent again.
        batch_id = uuid.uuid4().hex
        for i, (subject, data, headers) in enumerate(ops[:-1], 1):
            h = {**headers, names.BATCH_ID: batch_id, names.BATCH_SEQUENCE: str(i)}
            await nc.publish(subject, data, headers=h)
        subject, data, headers = ops[-1]
        h = {**headers, names.BATCH_ID: batch_id, names.BATCH_SEQUENCE: str(last)}
        h[names.BATCH_COMMIT] = "1"
        reply = await nc.request(subject, data, timeout=wait_s, headers=h)
        body: dict[str, Any] = json.loads(reply.data or b"{}")
        error = body.get("error")
        if error and error.get("err_code") == _INCOMPLETE_BATCH:
            raise ServiceUnavailableError(
                code=503, err_code=_INCOMPLETE_BATCH, description=error.get("description")
            )
        return body

    body = await settle(send_batch, _unstored_batch)
    error = body.get("error")
    if error:
        api_error = APIError(
            code=error.get("code"),
            err_code=error.get("err_code"),
            description=error.get("description"),
        )
        if _is_wrong_sequence(api_error):
            raise WrongSequenceError(str(error))
        raise api_error
    last_seq = int(body.get("seq", 0))
    return list(range(last_seq - last + 1, last_seq + 1))


def _unstored_batch(exc: BaseException) -> bool:
    """An atomic batch that was certainly not stored: nobody answered its commit, or the
    stream refused it as incomplete (nats-server stores nothing of a refused batch)."""
    return isinstance(exc, NoRespondersError) or (
        isinstance(exc, ServiceUnavailableError) and exc.err_code == _INCOMPLETE_BATCH
    )


class Pipeline:
    """Pipelined JetStream publishes: many in flight at once, each acknowledged on its own.

    Measured on nats-server 2.12-2.15, an atomic batch costs the server a fixed ~1.7 ms of CPU
    however small it is, while a plain publish costs ~20 µs; and an awaited ``js.publish`` costs
    the client a new future and a timeout wrapper per message. So a write that need not be
    atomic with another goes out here: published at once with its own expected-sequence
    header, its acknowledgement matched on one inbox subscription, and its timeout enforced by
    one sweeper for all of them instead of a timer each. (nats-py's ``publish_async`` would do
    the matching, but it loses API errors such as a failed expected sequence: the future then
    never completes.)
    """

    def __init__(self, nc: Client, js: JetStreamContext, wait_s: float = 5.0) -> None:
        self.nc = nc
        self.js = js
        self.wait_s = wait_s
        self._prefix: str | None = None
        self._next = 0
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._deadlines: deque[tuple[float, str]] = deque()
        self._sweeper: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    async def _inbox(self) -> str:
        if self._prefix is None:
            # Set before subscribing (which may yield): concurrent first sends share one
            # subscription. Replies cannot arrive before anything was sent on it.
            prefix = self._prefix = self.nc.new_inbox() + "."
            self._sub = await subscribe_inline(self.nc, prefix + "*", self._on_reply)
        return self._prefix

    def _on_reply(self, msg: Msg) -> None:
        prefix = self._prefix or ""
        future = self._pending.pop(msg.subject[len(prefix) :], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(names.STATUS) == "503":
            future.set_exception(NoRespondersError())
            return
        try:  # orjson when installed: an acknowledgement per stored message
            body = jsonio.loads(msg.data)
        except ValueError as exc:
            future.set_exception(exc)
            return
        error = body.get("error")
        if error:
            try:  # raises the specific class (ServiceUnavailableError for a 503, ...)
                APIError.from_error(error)
            except APIError as exc:
                future.set_exception(exc)
            else:  # pragma: no cover - from_error always raises
                future.set_exception(APIError(description=str(error)))
            return
        future.set_result(int(body.get("seq", 0)))

    async def _send(
        self, subject: str, data: bytes, headers: dict[str, str]
    ) -> asyncio.Future[int]:
        """Publish with a reply token; the future completes with the acknowledgement."""
        check_size(self.nc, data, headers)
        prefix = await self._inbox()
        self._next += 1
        token = str(self._next)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending[token] = future
        self._deadlines.append((loop.time() + self.wait_s, token))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep())
        try:
            await self.nc.publish(subject, data, reply=prefix + token, headers=headers or None)
        except RuntimeError as exc:
            # The socket closed under nats-py (a cut connection). nats-py keeps what it
            # buffered and may send it after reconnecting: the outcome is unknown, as for a
            # closed connection.
            self._pending.pop(token, None)
            if not closed_transport(exc):
                raise
            raise nats.errors.ConnectionClosedError from exc
        except BaseException:
            self._pending.pop(token, None)
            raise
        return future

    async def _outcome(self, op: Op, future: asyncio.Future[int]) -> int:
        try:
            return await future
        except NoRespondersError:
            # No stream answered: just created, or electing a leader. The awaited path waits.
            return (await commit(self.nc, self.js, [op], self.wait_s))[0]
        except APIError as err:
            if _is_wrong_sequence(err):
                raise WrongSequenceError(str(err)) from None
            raise

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> int:
        """Store one message; its stream sequence. :class:`WrongSequenceError` when its
        expected-sequence header does not hold; ``nats.errors.TimeoutError`` after ``wait_s``."""
        future = await self._send(subject, data, headers)
        return await self._outcome((subject, data, headers), future)

    async def commit(self, ops: Sequence[Op]) -> list[int]:
        """:func:`commit` semantics: one op goes pipelined, several as one atomic batch."""
        if len(ops) == 1:
            return [await self.publish(*ops[0])]
        return await commit(self.nc, self.js, ops, self.wait_s)

    async def publish_each(self, ops: Sequence[Op]) -> list[int | BaseException]:
        """Store each op on its own (not atomically), all in flight together, in order; per op
        its sequence or the exception that stopped it. (All are sent before any reply is
        awaited, with a future each and no task: a thousand cost little more than one.)"""
        sent: list[asyncio.Future[int] | Exception] = []
        for op in ops:
            try:
                sent.append(await self._send(*op))
            except Exception as exc:  # e.g. the connection closed: this op was not sent
                sent.append(exc)
        outcomes: list[int | BaseException] = []
        for op, future in zip(ops, sent, strict=True):
            if isinstance(future, Exception):
                outcomes.append(future)
                continue
            try:
                outcomes.append(await self._outcome(op, future))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def _sweep(self) -> None:
        # Deadlines are appended in time order: the oldest is always on the left.
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        while deadlines:
            now = loop.time()
            while deadlines and (deadlines[0][1] not in self._pending or deadlines[0][0] <= now):
                _, token = deadlines.popleft()
                future = self._pending.pop(token, None)
                if future is not None and not future.done():
                    future.set_exception(NatsTimeoutError())
            if deadlines:
                await asyncio.sleep(min(0.25, max(0.0, deadlines[0][0] - now)))

    async def close(self) -> None:
        """Stop the sweeper and the reply subscription; publishes still waiting for their
        acknowledgement fail with ``ConnectionClosedError`` (their outcome is unknown)."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionClosedError())
        self._pending.clear()
        self._deadlines.clear()
        if self._sweeper is not None:
            await cancel_and_wait(self._sweeper)
            self._sweeper = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
            self._prefix = None
