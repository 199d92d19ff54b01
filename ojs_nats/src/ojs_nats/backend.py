"""The OJS backend on NATS JetStream.

Storage layout (details and the crash-safety argument in ``docs/nats-design.md``):

* KV bucket ``OJS_JOBS`` (atomic batches allowed): ``j.<id>`` job records ``{"e": epoch,
  "j": job}``, ``u.<sha256>`` unique-key holders, ``w.<id>`` workflows, ``d.<id>`` dead-letter
  markers. Every state change is a compare-and-swap on the record's revision.
* Stream ``OJS_READY`` (work queue): one subject and one durable pull consumer per queue and
  priority; each message is a *hint* ``"<id> <epoch>"`` that a job became available. Hints are
  published before the record write they announce, so a crash can leave a stale hint (dropped
  when read) but never an available job without one.
* Stream ``OJS_TIMERS`` (work queue, message schedules): one schedule per job
  (``ojs.tsched.<id>``, ``@at`` its timer deadline) that fires into ``ojs.tfire.<id>``; a shared
  durable consumer hands fired timers to whichever replica pulls first. Also published before
  the write, and re-armed whenever a fired timer finds the deadline moved.
* KV ``OJS_QUEUES`` (pause flag, priorities in use), ``OJS_CRON``, ``OJS_WORKERS``; stream
  ``OJS_COUNTERS`` (per-queue, per-state counters for stats); stream ``OJS_EVENTS`` captures
  ``ojs.events.<type>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

import nats
from ojs_core import jsonio
from ojs_core.backend import (
    ActivateFn,
    BackendHealth,
    ConflictFn,
    EventFilter,
    JobFilter,
    JobFn,
    Page,
    UniqueConflict,
)
from ojs_core.codec import converter, job_from_dict, job_to_wire
from ojs_core.errors import (
    BackendUnavailableError,
    ConflictError,
    DuplicateJobError,
    NotFoundError,
    OJSError,
    PayloadTooLargeError,
)
from ojs_core.lifecycle import timer_deadline
from ojs_core.model import CronJob, Event, Job, QueueInfo, QueueStats, WorkerInfo, Workflow
from ojs_core.states import JobState
from ojs_core.timeutil import format_ts, parse_ts

from . import names
from .embedded import EmbeddedNatsServer
from .jetstream import MAX_BATCH, Op, Pipeline, WrongSequenceError, commit, pull_now
from .jetstream import publish as _publish

__all__ = ["MIN_SERVER_VERSION", "NatsBackend"]

log = logging.getLogger("ojs.nats")
S = JobState
MIN_SERVER_VERSION = (2, 12)
_EXPECT = "Nats-Expected-Last-Subject-Sequence"
#: A hint whose record write has not landed after this long never will (the writer died).
_HINT_GRACE = timedelta(seconds=30)
_CAS_ATTEMPTS = 64
#: Job versions kept for the next compare-and-swap on them (ack after claim, mostly).
_CACHE_SIZE = 10_000
_CONTROL_RESET = "ojs.control.reset"
_KEY_SAFE = re.compile(r"[-_=.A-Za-z0-9]{1,200}")
_KV_KEY = re.compile(r"[-/_=.A-Za-z0-9]{1,512}")
#: Deadlines closer than this are also kept in a local heap (bounded) for precision.
_SOON_HORIZON_S = 60.0
_SOON_MAX = 100_000
_MAX_PULLS = 32
#: How long a timer pass that has local deadlines to apply waits for the server's fired timers.
_TIMER_PULL_WAIT_S = 0.02
#: Subjects per batched direct get.
_MULTI_GET = 256

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_UNAVAILABLE = (
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


def _guard(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn NATS connectivity errors into :class:`BackendUnavailableError` (HTTP 503)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        nc = getattr(args[0], "_nc", None) if args else None
        if nc is not None and not nc.is_connected and fn.__name__ != "health":
            # Fail at once rather than after a publish timeout: clients get 503 + Retry-After.
            raise BackendUnavailableError("NATS is unreachable (reconnecting)")
        try:
            return await fn(*args, **kwargs)
        except OJSError:
            raise
        except _UNAVAILABLE as exc:
            raise BackendUnavailableError(f"NATS unavailable: {exc!r}") from exc

    return wrapper


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background task's outcome as seen (a dropped one may still fail)."""
    if not task.cancelled():
        task.exception()


def _encode_record(record: Any) -> bytes:
    return jsonio.dumps(converter.unstructure(record))


def _decode_workflow(data: bytes) -> Workflow:
    return converter.structure(jsonio.loads(data), Workflow)


def _decode_worker(data: bytes) -> WorkerInfo:
    return converter.structure(jsonio.loads(data), WorkerInfo)


def _encode_job(job: Job, epoch: int) -> bytes:
    return jsonio.dumps({"e": epoch, "j": job_to_wire(job)})


def _decode_job(data: bytes) -> tuple[Job, int]:
    raw = jsonio.loads(data)
    return job_from_dict(raw["j"]), int(raw["e"])


def _dead(job: Job) -> bool:
    return job.dead_letter and job.state is S.DISCARDED


class _QueueRecord:
    __slots__ = ("created_at", "paused", "priorities")

    def __init__(
        self, paused: bool = False, priorities: Sequence[int] = (), created_at: str | None = None
    ) -> None:
        self.paused = paused
        self.priorities = sorted(set(priorities), reverse=True)
        self.created_at = created_at

    def encode(self) -> bytes:
        return json.dumps(
            {"paused": self.paused, "priorities": self.priorities, "created_at": self.created_at}
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> _QueueRecord:
        raw = json.loads(data)
        return cls(bool(raw.get("paused")), raw.get("priorities") or [], raw.get("created_at"))

    def info(self, name: str) -> QueueInfo:
        return QueueInfo(
            name=name,
            paused=self.paused,
            created_at=parse_ts(self.created_at) if self.created_at else None,
        )


class NatsBackend:
    """OJS storage on NATS JetStream; any number of server replicas may share one NATS."""

    name = "nats"

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        replicas: int = 1,
        ack_wait_s: float = 30.0,
        embedded: EmbeddedNatsServer | None = None,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(servers, str):
            servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.servers = [s if "://" in s else f"nats://{s}" for s in servers]
        self.replicas = replicas
        self.ack_wait_s = ack_wait_s
        self.embedded = embedded
        self.connect_options = connect_options or {}
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._pipe: Pipeline | None = None
        self._kv: dict[str, KeyValue] = {}
        self._queues: dict[str, _QueueRecord] = {}
        self._ready_ok: set[tuple[str, int]] = set()
        self._timer_inflight: dict[str, Msg] = {}
        self._timer_pull: asyncio.Task[list[Msg]] | None = None
        #: Set by :meth:`_soon_add`: a timer pass waiting for the server wakes for a new
        #: local deadline, which may be due before the server answers.
        self._soon_changed = asyncio.Event()
        self._closing = False
        #: name -> (entry, revision); ``None`` marks a deletion, so that a watcher running
        #: behind this replica's own writes cannot bring an older version back.
        self._crons: dict[str, tuple[CronJob | None, int]] = {}
        self._crons_synced = asyncio.Event()
        self._watch_tasks: list[asyncio.Task[None]] = []
        self._watch_lock = asyncio.Lock()
        #: Tells this replica's own control messages from other replicas'.
        self._instance = uuid.uuid4().hex.encode()
        self._background: set[asyncio.Future[Any]] = set()
        self._cache: OrderedDict[str, tuple[Job, int, int]] = OrderedDict()
        self._deltas: dict[str, int] = {}
        self._soon: list[tuple[datetime, str]] = []
        self._flush_task: asyncio.Task[None] | None = None

    # -- connection -----------------------------------------------------------------------

    @property
    def nc(self) -> Client:
        """The live NATS connection."""
        if self._nc is None:
            raise BackendUnavailableError("NATS backend is not open")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context."""
        if self._js is None:
            raise BackendUnavailableError("NATS backend is not open")
        return self._js

    @property
    def pipe(self) -> Pipeline:
        """Pipelined publishes on the live connection."""
        if self._pipe is None:
            raise BackendUnavailableError("NATS backend is not open")
        return self._pipe

    async def _commit(self, ops: Sequence[Op]) -> list[int]:
        """:func:`commit`: one op pipelined, several as one atomic batch."""
        return await self.pipe.commit(ops)

    async def _publish_all(self, ops: Sequence[Op]) -> None:
        """Store every op (each on its own, all in flight together); raise if any failed."""
        for outcome in await self.pipe.publish_each(ops):
            if isinstance(outcome, BaseException):
                raise outcome

    async def open(self) -> None:
        """Connect (starting the embedded server first, if any) and create streams and buckets."""
        if self._nc is not None:
            return
        if self.embedded is not None:
            self.servers = [await self.embedded.start()]
        options: dict[str, Any] = {
            "name": "ojs-python",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "allow_reconnect": True,
            "connect_timeout": 5,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        options.update(self.connect_options)
        self._nc = await nats.connect(servers=self.servers, **options)
        version = self._nc.connected_server_version
        if (version.major, version.minor) < MIN_SERVER_VERSION:
            await self._nc.close()
            self._nc = None
            raise RuntimeError(
                f"nats-server {version} is too old: ojs-nats needs nats-server >= "
                f"{MIN_SERVER_VERSION[0]}.{MIN_SERVER_VERSION[1]} (atomic batches, message "
                "schedules, counters)"
            )
        self._js = self._nc.jetstream(timeout=10)
        self._pipe = Pipeline(self._nc, self._js)
        await self._provision()
        self._closing = False
        await self._nc.subscribe(_CONTROL_RESET, cb=self._on_control)
        self._start_watch()

    async def close(self) -> None:
        """Drain the connection and stop the embedded server, if any."""
        self._closing = True  # a reset announced meanwhile must not start watchers again
        await self._stop_watch()
        self._drop_timer_pull()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()  # in-flight publishes get their acknowledgements
            self._nc = None
            self._js = None
        if self._pipe is not None:
            await self._pipe.close()
            self._pipe = None
        if self.embedded is not None:
            await self.embedded.stop()

    async def _stream(self, config: StreamConfig) -> None:
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            # It exists with another configuration (an older version, or other replicas):
            # bring the mutable settings up to date.
            try:
                await self.js.update_stream(config)
            except nats.js.errors.BadRequestError:
                log.warning("stream %s exists with an incompatible configuration", config.name)

    async def _bucket(self, name: str, *, atomic: bool = False) -> KeyValue:
        try:
            kv = await self.js.key_value(name)
        except nats.js.errors.BucketNotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):
                await self.js.create_key_value(
                    KeyValueConfig(
                        bucket=name, history=1, storage=StorageType.FILE, replicas=self.replicas
                    )
                )
            info = await self.js.stream_info(f"KV_{name}")
            cfg = info.config
            if not cfg.allow_direct or (atomic and not cfg.allow_atomic):
                cfg.allow_direct = True
                if atomic:
                    cfg.allow_atomic = True
                await self.js.update_stream(cfg)
            kv = await self.js.key_value(name)
        return kv

    async def _provision(self) -> None:
        r = self.replicas
        await self._stream(
            StreamConfig(
                name=names.READY_STREAM,
                subjects=["ojs.ready.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=r,
                allow_atomic=True,
            )
        )
        await self._stream(
            StreamConfig(
                name=names.TIMER_STREAM,
                subjects=["ojs.tsched.*", "ojs.tfire.*"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=r,
                max_msgs_per_subject=1,
                allow_msg_schedules=True,
                allow_atomic=True,
            )
        )
        await self._stream(
            StreamConfig(
                name=names.EVENTS_STREAM,
                subjects=[f"{names.EVENT_PREFIX}.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=r,
                max_age=86_400,
                max_msgs=1_000_000,
                discard=DiscardPolicy.OLD,
            )
        )
        await self._stream(
            StreamConfig(
                name=names.COUNTER_STREAM,
                subjects=["ojs.count.>"],
                storage=StorageType.FILE,
                num_replicas=r,
                allow_msg_counter=True,
            )
        )
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await self.js.add_consumer(
                names.TIMER_STREAM,
                ConsumerConfig(
                    durable_name=names.TIMER_CONSUMER,
                    filter_subject="ojs.tfire.*",
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait_s,
                    max_ack_pending=-1,
                ),
            )
        self._kv = {
            names.JOBS_BUCKET: await self._bucket(names.JOBS_BUCKET, atomic=True),
            names.QUEUES_BUCKET: await self._bucket(names.QUEUES_BUCKET),
            names.CRON_BUCKET: await self._bucket(names.CRON_BUCKET),
            names.WORKERS_BUCKET: await self._bucket(names.WORKERS_BUCKET),
        }

    async def _on_error(self, exc: Exception) -> None:
        # nats-py reports, among others, ordered consumers it cannot recreate after a reset
        # deleted their stream; the watcher restarts by itself.
        # While closing, a connection-closed report is the close itself.
        if isinstance(exc, nats.js.errors.NotFoundError) or (
            self._closing and isinstance(exc, nats.errors.ConnectionClosedError)
        ):
            log.debug("nats: %r", exc)
        else:
            log.warning("nats: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._closing:
            log.debug("disconnected from NATS (closing)")
        else:
            log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")

    def _forget_all(self) -> None:
        self._queues.clear()
        self._ready_ok.clear()
        self._timer_inflight.clear()
        self._cache.clear()
        self._soon.clear()
        self._drop_timer_pull()

    async def _on_control(self, msg: Msg) -> None:
        # The resetting replica has already forgotten everything; doing it again when its own
        # announcement comes back would drop what the next requests cached meanwhile (a
        # retry's local deadline, a queue's ready consumer).
        if msg.subject == _CONTROL_RESET and msg.data != self._instance:
            self._forget_all()
            # The watchers' consumers followed the deleted streams: start them afresh, or they
            # would resume at the old sequences and miss the new buckets' entries.
            await self._restart_watch()

    def _start_watch(self) -> None:
        # Every replica keeps the small buckets (pause flags and priorities, cron entries) in
        # memory, current within milliseconds, so that no fetch or cron pass has to read them.
        loop = asyncio.get_running_loop()
        self._crons_synced.clear()
        self._watch_tasks = [
            loop.create_task(self._watch(names.QUEUES_BUCKET, self._on_queue_entry, None)),
            loop.create_task(
                self._watch(names.CRON_BUCKET, self._on_cron_entry, self._crons_synced)
            ),
        ]

    def _on_queue_entry(self, key: str, value: bytes | None, revision: int) -> None:
        if value:
            self._queues[key] = _QueueRecord.decode(value)
        else:
            self._queues.pop(key, None)

    def _on_cron_entry(self, key: str, value: bytes | None, revision: int) -> None:
        held = self._crons.get(key)
        if held is None or held[1] < revision:
            try:
                cron = self._decode_cron(value) if value else None
            except Exception:  # one bad entry must not stop the watcher for all the others
                log.exception("cron entry %r (revision %d) cannot be read; skipped", key, revision)
                return
            self._hold_cron(key, cron, revision)

    def _hold_cron(self, name: str, cron: CronJob | None, revision: int) -> None:
        held = self._crons.get(name)
        if held is None or held[1] < revision:  # never replace a newer version with an older
            self._crons[name] = (cron, revision)

    async def _watch(
        self,
        bucket: str,
        apply: Callable[[str, bytes | None, int], None],
        synced: asyncio.Event | None,
    ) -> None:
        while True:
            try:
                watcher = await self._kv[bucket].watchall()
                async for entry in watcher:
                    if entry is None:  # the initial values have all been delivered
                        if synced is not None:
                            synced.set()
                        continue
                    apply(entry.key, entry.value or None, entry.revision or 0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("%s watcher restarting", bucket, exc_info=True)
                await asyncio.sleep(0.2)

    @_guard
    async def health(self) -> BackendHealth:
        """Round-trip to the server."""
        if self._nc is None or not self._nc.is_connected:
            return BackendHealth(ok=False, name=self.name, error="not connected to NATS")
        started = time.perf_counter()
        try:
            await self._nc.flush(timeout=2)
        except Exception as exc:
            return BackendHealth(ok=False, name=self.name, error=repr(exc))
        return BackendHealth(
            ok=True,
            name=self.name,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            details={
                "server": str(self._nc.connected_url.netloc if self._nc.connected_url else "")
            },
        )

    @_guard
    async def reset(self) -> None:
        """Delete every stream and bucket, then provision them again."""
        for stream in (
            names.READY_STREAM,
            names.TIMER_STREAM,
            names.EVENTS_STREAM,
            names.COUNTER_STREAM,
            *(f"KV_{b}" for b in self._kv),
        ):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_stream(stream)
        self._forget_all()
        for attempt in range(40):
            try:
                await self._provision()
                break
            except nats.js.errors.ServerError as exc:
                # With every stream deleted, nats-server removes the account's store directory
                # in the background; a stream created meanwhile fails with 10049 ("error
                # creating store for stream"). Provisioning is idempotent: try again shortly.
                if exc.err_code != 10049 or attempt == 39:
                    raise
                await asyncio.sleep(0.05)
        # Other replicas drop what they cached about the old streams (consumers, queues, jobs).
        await self.nc.publish(_CONTROL_RESET, self._instance)
        # Once more: what this replica's background work (a timer pass, say) cached about the
        # old streams while they were being recreated must go too.
        self._forget_all()
        await self._restart_watch()

    async def _restart_watch(self) -> None:
        # Serialised: a reset and the control message it sends to this very replica both
        # restart the watchers, and neither may leave a watcher running untracked.
        async with self._watch_lock:
            await self._stop_watch_now()
            self._crons.clear()
            if not self._closing:
                self._start_watch()

    async def _stop_watch(self) -> None:
        async with self._watch_lock:
            await self._stop_watch_now()

    async def _stop_watch_now(self) -> None:
        tasks, self._watch_tasks = self._watch_tasks, []
        for task in tasks:
            await self._cancel(task)

    @staticmethod
    async def _cancel(task: asyncio.Task[None]) -> None:
        # Cancel until it is done: on Python 3.11, asyncio.wait_for (which nats-py's watch and
        # request use) returns normally, swallowing the cancellation, when the awaited reply
        # lands in the same loop iteration; a single cancel() then leaves the watcher waiting
        # for the next update forever, and close() with it.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    # -- records --------------------------------------------------------------------------

    @property
    def _jobs(self) -> KeyValue:
        return self._kv[names.JOBS_BUCKET]

    async def _get(self, kv: KeyValue, key: str) -> tuple[bytes, int] | None:
        if not _KV_KEY.fullmatch(key):
            return None  # a name from a URL that no stored record can have
        for attempt in range(20):
            try:
                entry = await kv.get(key)
                break
            except nats.js.errors.KeyNotFoundError:
                return None
            except nats.errors.NoRespondersError:
                # A just-created bucket's direct-get responders may not be up yet.
                if attempt == 19:
                    raise
                await asyncio.sleep(0.05)
        if entry.value is None:
            return None
        return entry.value, entry.revision or 0

    async def _read(self, job_id: str, *, cached: bool = False) -> tuple[Job, int, int] | None:
        """``(job, epoch, revision)``; with ``cached`` the last version this process wrote or
        read may be returned. A stale one is harmless: the compare-and-swap that follows fails
        and the caller re-reads."""
        if not _KEY_SAFE.fullmatch(job_id):
            return None  # not an id this backend could have stored (and not a valid KV key)
        if cached:
            hit = self._cache.get(job_id)
            if hit is not None:
                return hit
        got = await self._get(self._jobs, f"j.{job_id}")
        if got is None:
            self._cache.pop(job_id, None)
            return None
        job, epoch = _decode_job(got[0])
        rec = (job, epoch, got[1])
        self._remember(rec)
        return rec

    async def _read_many(
        self, job_ids: Sequence[str], *, cached: bool = False
    ) -> list[tuple[Job, int, int] | None]:
        """:meth:`_read` for many jobs with one batched direct get (``multi_last``) instead of a
        request per job; falls back to single reads if the server cannot answer it."""
        out: list[tuple[Job, int, int] | None] = [None] * len(job_ids)
        wanted: dict[str, list[int]] = {}
        for i, job_id in enumerate(job_ids):
            if not _KEY_SAFE.fullmatch(job_id):
                continue
            hit = self._cache.get(job_id) if cached else None
            if hit is not None:
                out[i] = hit
            else:
                wanted.setdefault(job_id, []).append(i)
        if len(wanted) == 1:
            ((job_id, places),) = wanted.items()
            rec = await self._read(job_id)
            for i in places:
                out[i] = rec
            return out
        ids = list(wanted)
        for start in range(0, len(ids), _MULTI_GET):
            chunk = ids[start : start + _MULTI_GET]
            try:
                found = await self._multi_get(chunk)
            except Exception:
                log.debug("batched direct get failed; reading one by one", exc_info=True)
                recs = await asyncio.gather(*(self._read(j) for j in chunk))
                found = {j: r for j, r in zip(chunk, recs, strict=True) if r is not None}
            for job_id in chunk:
                rec = found.get(job_id)
                if rec is None:
                    self._cache.pop(job_id, None)
                for i in wanted[job_id]:
                    out[i] = rec
        return out

    async def _multi_get(self, job_ids: Sequence[str]) -> dict[str, tuple[Job, int, int]]:
        prefix = f"$KV.{names.JOBS_BUCKET}.j."
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        found: dict[str, tuple[Job, int, int]] = {}
        try:
            await self.nc.publish(
                f"$JS.API.DIRECT.GET.KV_{names.JOBS_BUCKET}",
                json.dumps(
                    {"multi_last": [prefix + j for j in job_ids], "batch": len(job_ids)}
                ).encode(),
                reply=inbox,
            )
            while True:
                msg = await sub.next_msg(timeout=5)
                headers = msg.headers or {}
                status = headers.get("Status")
                if status in ("204", "404"):  # end of batch; nothing (more) found
                    return found
                if status:
                    raise RuntimeError(f"direct get answered {status}")
                if headers.get("KV-Operation") or not msg.data:
                    continue  # deleted or purged
                job_id = headers.get("Nats-Subject", "")[len(prefix) :]
                job, epoch = _decode_job(msg.data)
                rec = (job, epoch, int(headers.get("Nats-Sequence", "0")))
                self._remember(rec)
                found[job_id] = rec
        finally:
            await sub.unsubscribe()

    def _remember(self, rec: tuple[Job, int, int]) -> None:
        cache = self._cache
        job_id = rec[0].id
        if rec[0].state.terminal:
            cache.pop(job_id, None)  # nothing more will happen to it here
            return
        cache[job_id] = rec
        cache.move_to_end(job_id)
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)

    async def _keys(self, bucket: str, pattern: str = ">") -> list[str]:
        """Keys of ``bucket`` matching ``pattern``, deleted ones included (callers read each).

        Asks the stream for its subjects (one request per page, filtered by the server) rather
        than running a watcher: nats-py's watcher can report the end of the initial values
        before a value delivered in the same instant, which makes ``kv.keys()`` miss keys.
        """
        prefix = f"$KV.{bucket}."
        keys: list[str] = []
        offset = 0
        while True:
            reply = await self.nc.request(
                f"$JS.API.STREAM.INFO.KV_{bucket}",
                json.dumps({"subjects_filter": prefix + pattern, "offset": offset}).encode(),
                timeout=10,
            )
            body = json.loads(reply.data)
            if "error" in body:
                raise nats.js.errors.APIError.from_error(body["error"])
            subjects = (body.get("state") or {}).get("subjects") or {}
            keys.extend(subject[len(prefix) :] for subject in subjects)
            offset += len(subjects)
            if not subjects or offset >= int(body.get("total") or 0):
                return keys

    @staticmethod
    def _subject(bucket: str, key: str) -> str:
        return f"$KV.{bucket}.{key}"

    def _job_op(self, job: Job, epoch: int, expect: int) -> Op:
        return (
            self._subject(names.JOBS_BUCKET, f"j.{job.id}"),
            _encode_job(job, epoch),
            {_EXPECT: str(expect)},
        )

    async def _announce(self, before: Job | None, after: Job, epoch: int, new_epoch: int) -> None:
        """Publish what a write makes true *before* the write: ready hints and timers."""
        pubs: list[Awaitable[Any]] = []
        if new_epoch != epoch:
            await self._ensure_ready(after.queue, after.priority)
            hint: Op = (
                names.ready_subject(after.queue, after.priority),
                f"{after.id} {new_epoch}".encode(),
                {},
            )
            pubs.append(self._commit([hint]))
        deadline = timer_deadline(after)
        if deadline is not None and (before is None or deadline != timer_deadline(before)):
            pubs.append(self._schedule(after.id, deadline))
            self._soon_add(after.id, deadline)
        if len(pubs) == 1:
            await pubs[0]
        elif pubs:
            await asyncio.gather(*pubs)

    def _soon_add(self, job_id: str, deadline: datetime) -> None:
        """Remember a near deadline locally: the server's scheduler fires up to ~250 ms late,
        this replica's timer loop is precise to its interval. The stored schedule stays the
        durable backstop (any replica, after a crash)."""
        if (
            len(self._soon) < _SOON_MAX
            and (deadline - datetime.now(UTC)).total_seconds() < _SOON_HORIZON_S
        ):
            heapq.heappush(self._soon, (deadline, job_id))
            self._soon_changed.set()

    async def _announce_new(self, jobs: Sequence[Job]) -> None:
        """Hints and timers for new jobs, written in order, a batch per stream (pipelined)."""
        for queue, priority in dict.fromkeys(
            (j.queue, j.priority) for j in jobs if j.state is S.AVAILABLE
        ):
            await self._ensure_ready(queue, priority)
        hints: list[Op] = [
            (names.ready_subject(j.queue, j.priority), f"{j.id} 1".encode(), {})
            for j in jobs
            if j.state is S.AVAILABLE
        ]
        timers: list[Op] = []
        for job in jobs:
            deadline = timer_deadline(job)
            if deadline is not None:
                timers.append(self._schedule_op(job.id, deadline))
                self._soon_add(job.id, deadline)
        # Not atomic (an atomic batch costs the server ~1.7 ms): a hint or timer written for a
        # job whose record then is not written is harmless, and the records wait for all.
        await self._publish_all([*hints, *timers])

    @staticmethod
    def _schedule_op(job_id: str, deadline: datetime) -> Op:
        at = deadline.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return (
            f"ojs.tsched.{job_id}",
            format_ts(deadline).encode(),
            {"Nats-Schedule": f"@at {at}", "Nats-Schedule-Target": f"ojs.tfire.{job_id}"},
        )

    def _schedule(self, job_id: str, deadline: datetime) -> Awaitable[list[int]]:
        return self._commit([self._schedule_op(job_id, deadline)])

    async def _count(self, before: Job | None, after: Job | None) -> None:
        """Account a transition in the per-queue, per-state counters (for stats).

        Deltas are summed in memory and flushed as one increment per counter a few
        milliseconds later, so a burst of transitions costs a handful of publishes.
        """
        if (
            before is not None
            and after is not None
            and before.state is after.state
            and before.queue == after.queue
        ):
            return
        deltas = self._deltas
        if before is not None:
            key = names.counter_subject(before.queue, before.state.value)
            deltas[key] = deltas.get(key, 0) - 1
        if after is not None:
            key = names.counter_subject(after.queue, after.state.value)
            deltas[key] = deltas.get(key, 0) + 1
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_counts())

    async def _flush_counts(self, *, wait: bool = False) -> None:
        if not wait:
            await asyncio.sleep(0.005)
        deltas, self._deltas = self._deltas, {}
        with contextlib.suppress(Exception):
            for subject, delta in deltas.items():
                if not delta:
                    continue
                headers = {"Nats-Incr": f"{delta:+d}"}
                if wait:  # acknowledged: a read that follows sees it
                    await _publish(self.js, subject, b"", headers=headers)
                else:
                    await self.nc.publish(subject, b"", headers=headers)

    # -- queues ---------------------------------------------------------------------------

    async def _queue_record(self, queue: str) -> tuple[_QueueRecord, int] | None:
        got = await self._get(self._kv[names.QUEUES_BUCKET], queue)
        if got is None:
            return None
        return _QueueRecord.decode(got[0]), got[1]

    async def _swap(
        self,
        bucket: str,
        key: str,
        codec: tuple[Callable[[bytes], T], Callable[[Any], bytes]],
        change: Callable[[T | None], T | None],
        what: str,
    ) -> tuple[T | None, T | None, int]:
        """Read-modify-write of one KV entry by compare-and-swap, retried on contention.

        ``change`` gets the current value (``None`` when there is none) and returns the new
        one; returning ``None`` or the value itself writes nothing. Returns ``(before, after,
        revision)``. Raises :class:`ConflictError` when the swap keeps losing.
        """
        decode, encode = codec
        kv = self._kv[bucket]
        unanswered = 0
        for _ in range(_CAS_ATTEMPTS):
            got = await self._get(kv, key)
            current = decode(got[0]) if got else None
            new = change(current)
            if new is None or new is current:
                return current, current, got[1] if got else 0
            try:
                if got is None:
                    revision = await kv.create(key, encode(new))
                else:
                    revision = await kv.update(key, encode(new), last=got[1])
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            except nats.js.errors.NoStreamResponseError:
                # A just-created bucket, or a leader election: wait up to about a second.
                unanswered += 1
                if unanswered >= 20:
                    raise
                await asyncio.sleep(0.05)
                continue
            return current, new, revision
        raise ConflictError(f"{what} is being changed concurrently; try again")

    async def _update_queue(
        self, queue: str, change: Callable[[_QueueRecord], _QueueRecord | None]
    ) -> _QueueRecord:
        created = _QueueRecord(created_at=format_ts(datetime.now(UTC)))

        def step(record: _QueueRecord | None) -> _QueueRecord | None:
            return change(record or created)

        _, after, _ = await self._swap(
            names.QUEUES_BUCKET,
            queue,
            (_QueueRecord.decode, _QueueRecord.encode),
            step,
            f"queue {queue!r}",
        )
        if after is None:
            return change(created) or created  # nothing stored, nothing to store
        self._queues[queue] = after
        return after

    async def _ensure_ready(self, queue: str, priority: int) -> None:
        if (queue, priority) in self._ready_ok:
            return

        def add(r: _QueueRecord) -> _QueueRecord | None:
            if priority in r.priorities:
                return None
            return _QueueRecord(r.paused, [*r.priorities, priority], r.created_at)

        await self._update_queue(queue, add)
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await self.js.add_consumer(
                names.READY_STREAM,
                ConsumerConfig(
                    durable_name=names.ready_consumer(queue, priority),
                    filter_subject=names.ready_subject(queue, priority),
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait_s,
                    max_ack_pending=-1,
                    max_deliver=-1,
                ),
            )
        self._ready_ok.add((queue, priority))

    @_guard
    async def list_queues(self) -> list[QueueInfo]:
        """Queues that have held a job or been paused, plus ``default``."""
        keys = await self._keys(names.QUEUES_BUCKET)
        out = {"default": QueueInfo(name="default")}
        for key, rec in zip(
            keys, await asyncio.gather(*(self._queue_record(k) for k in keys)), strict=True
        ):
            if rec is not None:
                out[key] = rec[0].info(key)
        return [out[k] for k in sorted(out)]

    @_guard
    async def set_queue_paused(self, queue: str, paused: bool) -> QueueInfo:
        """Flip the pause flag; every replica's watcher sees it within milliseconds."""
        record = await self._update_queue(
            queue,
            lambda r: (
                None
                if r.paused == paused and r.created_at
                else _QueueRecord(paused, r.priorities, r.created_at)
            ),
        )
        return record.info(queue)

    @_guard
    async def queue_stats(self, queue: str) -> QueueStats:
        """Counts from the counter stream: one direct read per state, no scan."""
        if self._deltas:
            await self._flush_counts(wait=True)  # this process's own writes are visible

        async def read(state: JobState) -> int:
            try:
                msg = await self.js.get_last_msg(
                    names.COUNTER_STREAM, names.counter_subject(queue, state.value)
                )
            except nats.js.errors.NotFoundError:
                return 0
            return max(0, int(json.loads(msg.data or b"{}").get("val", "0")))

        values = await asyncio.gather(*(read(s) for s in S))
        record = self._queues.get(queue)
        return QueueStats(
            name=queue,
            paused=bool(record and record.paused),
            counts=dict(zip(S, values, strict=True)),
        )

    # -- jobs -----------------------------------------------------------------------------

    @_guard
    async def insert_jobs(
        self, jobs: Sequence[Job], is_conflict: ConflictFn | None = None
    ) -> list[UniqueConflict]:
        """All or nothing, as one atomic batch: records, plus unique-key holders."""
        seen: set[str] = set()
        for job in jobs:
            if job.id in seen:  # would fail every compare-and-swap below: refuse before writing
                raise DuplicateJobError(
                    f"A job with id '{job.id}' appears twice in the batch",
                    details={"job_id": job.id},
                )
            seen.add(job.id)
        for _ in range(_CAS_ATTEMPTS):
            keys = list(dict.fromkeys(j.unique_key for j in jobs if j.unique_key))
            holders: dict[str, tuple[Job | None, int]] = {}
            for key, got in zip(
                keys,
                await asyncio.gather(*(self._get(self._jobs, f"u.{k}") for k in keys)),
                strict=True,
            ):
                if got is None:
                    holders[key] = (None, 0)
                    continue
                rec = await self._read(got[0].decode())
                holders[key] = (rec[0] if rec else None, got[1])
            conflicts: list[UniqueConflict] = []
            local: dict[str, Job] = {}
            for i, job in enumerate(jobs):
                ukey = job.unique_key
                if ukey is None:
                    continue
                holder = local.get(ukey) or holders[ukey][0]
                if holder is not None and is_conflict is not None and is_conflict(job, holder):
                    conflicts.append(UniqueConflict(index=i, existing=holder))
                local[ukey] = job
            if conflicts:
                return conflicts
            ops: list[Op] = []
            for job in jobs:
                epoch = 1 if job.state is S.AVAILABLE else 0
                ops.append(self._job_op(job, epoch, 0))
            for key in keys:
                ops.append(
                    (
                        self._subject(names.JOBS_BUCKET, f"u.{key}"),
                        local[key].id.encode(),
                        {_EXPECT: str(holders[key][1])},
                    )
                )
            if len(ops) > MAX_BATCH:
                raise PayloadTooLargeError(
                    f"an atomic enqueue on NATS holds at most {MAX_BATCH} records "
                    f"(jobs plus unique keys); this one needs {len(ops)}"
                )
            await self._announce_new(jobs)
            try:
                seqs = await self._commit(ops)
            except WrongSequenceError:
                existing = await asyncio.gather(*(self._read(j.id) for j in jobs))
                for job, rec in zip(jobs, existing, strict=True):
                    if rec is not None:
                        raise DuplicateJobError(
                            f"A job with id '{job.id}' already exists", details={"job_id": job.id}
                        ) from None
                continue  # a unique-key holder changed meanwhile: decide again
            for job, seq in zip(jobs, seqs, strict=False):
                self._remember((job, 1 if job.state is S.AVAILABLE else 0, seq))
                await self._count(None, job)
            return []
        raise ConflictError("enqueue lost too many races on unique keys; try again")

    @_guard
    async def get_job(self, job_id: str) -> Job | None:
        """The current version (direct get)."""
        rec = await self._read(job_id)
        return rec[0] if rec else None

    @_guard
    async def get_jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Several jobs, read concurrently."""
        recs = await self._read_many(job_ids)
        return [r[0] if r else None for r in recs]

    async def _write(self, before: Job, after: Job, epoch: int, rev: int) -> None:
        new_epoch = (
            epoch + 1 if after.state is S.AVAILABLE and before.state is not S.AVAILABLE else epoch
        )
        await self._announce(before, after, epoch, new_epoch)
        ops = [self._job_op(after, new_epoch, rev)]
        if _dead(before) != _dead(after):
            subject = self._subject(names.JOBS_BUCKET, f"d.{after.id}")
            if _dead(after):
                ops.append((subject, b"1", {}))
            else:
                ops.append((subject, b"", {"KV-Operation": "DEL"}))
        try:
            seqs = await self._commit(ops)
        except WrongSequenceError:
            self._cache.pop(after.id, None)
            raise
        self._remember((after, new_epoch, seqs[0]))
        await self._count(before, after)

    @_guard
    async def update_job(self, job_id: str, fn: JobFn) -> tuple[Job, Job]:
        """Compare-and-swap on the record's revision, retried on contention."""
        cached = True
        for _ in range(_CAS_ATTEMPTS):
            rec = await self._read(job_id, cached=cached)
            if rec is None:
                raise NotFoundError("job", job_id)
            before, epoch, rev = rec
            try:
                after = fn(before)
            except OJSError:
                if cached and job_id in self._cache:
                    cached = False  # judge on the stored version, not a cached one
                    continue
                raise
            cached = False
            if after is before:
                self._timer_done(job_id)
                return before, after
            try:
                await self._write(before, after, epoch, rev)
            except WrongSequenceError:
                continue
            self._timer_done(job_id)
            return before, after
        raise ConflictError(f"job {job_id} is being changed concurrently; try again")

    async def _claim_one(self, msg: Msg, activate: ActivateFn) -> Job | None:
        try:
            job_id, hint_epoch_text = msg.data.decode().split(" ", 1)
            hint_epoch = int(hint_epoch_text)
        except ValueError:
            await msg.term()
            return None
        age = (
            datetime.now(UTC) - msg.metadata.timestamp.replace(tzinfo=UTC)
            if msg.metadata.timestamp
            else timedelta(0)
        )
        for _ in range(8):
            rec = await self._read(job_id)  # fresh: this is the careful path
            if rec is None or rec[1] < hint_epoch:
                # The write this hint announces has not landed yet, or never will.
                if age < _HINT_GRACE:
                    await msg.nak(delay=0.2)
                else:
                    await msg.ack()
                return None
            job, epoch, rev = rec
            if job.state is not S.AVAILABLE or epoch != hint_epoch:
                await msg.ack()  # stale: the job moved on
                return None
            after = activate(job)
            if after is None:
                await msg.nak(delay=0.1)  # not admitted now (rate limit): try again shortly
                return None
            try:
                await self._write(job, after, epoch, rev)
            except WrongSequenceError:
                continue
            # The claim is stored: it must reach the caller even if the hint's ack cannot be
            # sent (the hint then comes back later and is found stale).
            with contextlib.suppress(Exception):
                await msg.ack()
            return after
        await msg.nak(delay=0.1)
        return None

    async def _claim_batch(self, msgs: Sequence[Msg], activate: ActivateFn, out: list[Job]) -> int:
        """Claim the jobs of many hints with one read each (often cached), pipelined timers,
        then one compare-and-swap per job, all in flight together; a hint that cannot be
        claimed that way is decided carefully, one by one. Every job this changes is appended
        to ``out`` as soon as it is stored; returns how many of them are now ``active``."""
        parsed: list[tuple[Msg, str, int]] = []
        for msg in msgs:
            try:
                job_id, hint_epoch_text = msg.data.decode().split(" ", 1)
                parsed.append((msg, job_id, int(hint_epoch_text)))
            except ValueError:
                await msg.term()
        recs = await self._read_many([p[1] for p in parsed], cached=True)
        writes: list[tuple[Msg, Job, Job, int, int]] = []
        slow: list[Msg] = []
        batched: set[str] = set()
        for (msg, job_id, hint_epoch), rec in zip(parsed, recs, strict=True):
            if (
                rec is None
                or rec[1] != hint_epoch
                or rec[0].state is not S.AVAILABLE
                or job_id in batched  # a duplicate hint: one key may be in a batch only once
            ):
                slow.append(msg)  # unknown, in flight or stale: decide carefully, one by one
                continue
            batched.add(job_id)
            job, epoch, rev = rec
            after = activate(job)
            if after is None:
                await msg.nak(delay=0.1)
                continue
            writes.append((msg, job, after, epoch, rev))
        claimed: list[Job] = []
        if writes:
            timers = []
            for _, _, after, _, _ in writes:
                deadline = timer_deadline(after)
                if deadline is not None:
                    timers.append(self._schedule_op(after.id, deadline))
                    self._soon_add(after.id, deadline)
            ops = [self._job_op(after, epoch, rev) for _, _, after, epoch, rev in writes]
            # Timers first (a visibility deadline must exist before the claim it guards), then
            # each claim as its own compare-and-swap, all in flight together: a lost race costs
            # only its own job a careful retry.
            await self._publish_all(timers)
            outcomes = await self.pipe.publish_each(ops)
            done: list[Msg] = []
            for (msg, job, after, epoch, _), outcome in zip(writes, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    self._cache.pop(job.id, None)
                    slow.append(msg)
                    continue
                self._remember((after, epoch, outcome))
                claimed.append(after)
                out.append(after)
                done.append(msg)
                await self._count(job, after)
            for msg in done:
                # A hint left un-acked is redelivered later and then found stale: harmless.
                with contextlib.suppress(Exception):
                    await msg.ack()
        if slow:
            results = await asyncio.gather(
                *(self._claim_one(m, activate) for m in slow), return_exceptions=True
            )
            for result in results:
                if isinstance(result, Job):
                    claimed.append(result)
                    out.append(result)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors and not claimed:
                raise errors[0]
            for err in errors:  # the hint comes back after the ack wait
                log.warning("claim failed: %r", err, exc_info=err)
        return sum(1 for job in claimed if job.state is S.ACTIVE)

    @_guard
    async def claim_jobs(
        self, queues: Sequence[str], count: int, activate: ActivateFn
    ) -> list[Job]:
        """Pull hints per queue, highest priority first; claim each by compare-and-swap.

        Jobs already claimed are returned even if a later pull or claim fails: they are
        ``active`` in the store, and dropping them would leave them to the visibility timeout
        at the cost of an attempt. The failure is raised only when nothing was claimed."""
        out: list[Job] = []
        try:
            await self._claim_into(out, queues, count, activate)
        except Exception:
            if not out:
                raise
            log.warning("fetch ended early after %d claims", len(out), exc_info=True)
        return out

    async def _claim_into(
        self, out: list[Job], queues: Sequence[str], count: int, activate: ActivateFn
    ) -> None:
        claimed = 0
        for queue in dict.fromkeys(queues):
            record = self._queues.get(queue)
            if record is None:
                got = await self._queue_record(queue)
                if got is None:
                    continue
                record = self._queues[queue] = got[0]
            if record.paused:
                continue
            for priority in record.priorities:
                # Pull again only to move past hints that could not be claimed (stale, in
                # flight, rate-limited: set aside with a delay), or when the pull was full and
                # more may be waiting; bounded per call. Never to wait for jobs trickling in:
                # the ones claimed would wait with it (a fetch of 50 at 1k jobs/s took 45 ms).
                for _ in range(_MAX_PULLS):
                    if claimed >= count:
                        break
                    wanted = count - claimed
                    try:
                        msgs = await pull_now(
                            self.nc,
                            names.READY_STREAM,
                            names.ready_consumer(queue, priority),
                            wanted,
                        )
                    except nats.errors.TimeoutError:
                        msgs = []
                    if not msgs:
                        break
                    gained = await self._claim_batch(msgs, activate, out)
                    claimed += gained
                    if gained and len(msgs) < wanted:
                        break  # drained for now
                if claimed >= count:
                    return

    def _spawn(self, aw: Awaitable[Any]) -> None:
        """Run a fire-and-forget operation, keeping a reference until it finishes."""
        task = asyncio.ensure_future(aw)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_retrieve)

    def _timer_done(self, job_id: str) -> None:
        msg = self._timer_inflight.pop(job_id, None)
        if msg is not None:
            self._spawn(msg.ack())

    @_guard
    async def due_jobs(self, now: datetime, limit: int) -> list[str]:
        """Jobs whose schedule fired; their timer message is acked once they are updated."""
        for msg in self._timer_inflight.values():
            with contextlib.suppress(Exception):
                await msg.nak()
        self._timer_inflight.clear()
        due: list[str] = []
        soon = self._soon
        while soon and soon[0][0] <= now and len(due) < limit:
            job_id = heapq.heappop(soon)[1]
            if job_id not in due:
                due.append(job_id)  # a stale entry is harmless: on_timer finds nothing due
        if len(due) >= limit:
            return due
        if due:
            wait_s: float | None = _TIMER_PULL_WAIT_S
        else:
            wait_s = (soon[0][0] - now).total_seconds() if soon else None
        for msg in await self._fired_timers(limit - len(due), wait_s):
            job_id = msg.subject.rsplit(".", 1)[-1]
            rec = await self._read(job_id)
            deadline = timer_deadline(rec[0]) if rec else None
            if deadline is None:
                await msg.ack()
            elif deadline <= now:
                if job_id in self._timer_inflight:
                    await msg.ack()
                else:
                    # Acked by update_job (_timer_done), not here: if the update never lands,
                    # the fired timer is redelivered, even for a job the local heap reported.
                    self._timer_inflight[job_id] = msg
                    if job_id not in due:
                        due.append(job_id)
            else:
                # Fired early (clock skew) or the deadline moved: re-arm for the current one.
                await self._schedule(job_id, deadline)
                await msg.ack()
        return due

    async def _fired_timers(self, batch: int, wait_s: float | None) -> list[Msg]:
        """The server's fired timers, waiting for them at most ``wait_s`` (``None``: as long as
        the pull takes), and never past the moment a new local deadline is added.

        The pull runs as a task of its own that a later pass picks up if this one stops
        waiting. Its answer normally takes well under a millisecond, but one may never come
        (its consumer deleted by a reset while the request was in flight, a reply lost in a
        reconnect) and then the pull lasts its whole timeout: local deadlines due meanwhile must
        not wait for it.
        """
        task = self._timer_pull
        if task is None:
            task = asyncio.ensure_future(
                pull_now(self.nc, names.TIMER_STREAM, names.TIMER_CONSUMER, batch)
            )
            task.add_done_callback(_retrieve)
            self._timer_pull = task
        if not task.done():
            self._soon_changed.clear()
            waiters: set[asyncio.Future[Any]] = {
                task,
                asyncio.ensure_future(self._soon_changed.wait()),
            }
            try:
                await asyncio.wait(
                    waiters,
                    timeout=None if wait_s is None else max(wait_s, 0.0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in waiters - {task}:
                    waiter.cancel()
        if not task.done() or self._timer_pull is not task:
            return []  # still running, or taken by a concurrent pass (or dropped by a reset)
        self._timer_pull = None
        if task.cancelled():
            return []
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, nats.errors.TimeoutError):
                log.debug("timer pull failed: %r", exc)
            return []
        return task.result()

    def _drop_timer_pull(self) -> None:
        task, self._timer_pull = self._timer_pull, None
        if task is None:
            return
        if not task.done():
            task.cancel()  # what it would have received is redelivered after the ack wait
        elif not task.cancelled() and task.exception() is None:
            for msg in task.result():  # received, never looked at: give them back now
                self._spawn(msg.nak())

    @_guard
    async def list_jobs(self, flt: JobFilter) -> Page:
        """Dead-letter listing from the ``d.`` markers (other listings are not indexed)."""
        if not flt.dead_letter:
            return Page(items=[], total=0)
        keys = await self._keys(names.JOBS_BUCKET, "d.>")
        jobs = [j for j in await self.get_jobs([k[2:] for k in keys]) if j is not None and _dead(j)]
        jobs = [j for j in jobs if flt.queue is None or j.queue == flt.queue]
        jobs.sort(key=lambda j: j.discarded_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return Page(items=jobs[flt.offset : flt.offset + flt.limit], total=len(jobs))

    @_guard
    async def delete_job(self, job_id: str) -> bool:
        """Purge a job's record and its dead-letter marker."""
        rec = await self._read(job_id)
        if rec is None:
            return False
        await self._jobs.purge(f"j.{job_id}")
        with contextlib.suppress(Exception):
            await self._jobs.purge(f"d.{job_id}")
        await self._count(rec[0], None)
        self._cache.pop(job_id, None)
        return True

    # -- workflows ------------------------------------------------------------------------

    def _wf_op(self, workflow: Workflow, expect: int) -> Op:
        return (
            self._subject(names.JOBS_BUCKET, f"w.{workflow.id}"),
            _encode_record(workflow),
            {_EXPECT: str(expect)},
        )

    @_guard
    async def insert_workflow(self, workflow: Workflow, jobs: Sequence[Job]) -> None:
        """The workflow record and all its jobs in one atomic batch."""
        ops = [self._wf_op(workflow, 0)]
        ops.extend(self._job_op(j, 1 if j.state is S.AVAILABLE else 0, 0) for j in jobs)
        if len(ops) > MAX_BATCH:
            raise PayloadTooLargeError(f"a workflow on NATS holds at most {MAX_BATCH - 1} jobs")
        await self._announce_new(jobs)
        try:
            await commit(self.nc, self.js, ops)
        except WrongSequenceError:
            raise DuplicateJobError("a job or workflow with one of these ids exists") from None
        for job in jobs:
            await self._count(None, job)

    async def _read_workflow(self, workflow_id: str) -> tuple[Workflow, int] | None:
        got = await self._get(self._jobs, f"w.{workflow_id}")
        if got is None:
            return None
        return _decode_workflow(got[0]), got[1]

    @_guard
    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """The record or ``None``."""
        rec = await self._read_workflow(workflow_id)
        return rec[0] if rec else None

    @_guard
    async def update_workflow(
        self, workflow_id: str, fn: Callable[[Workflow], Workflow]
    ) -> tuple[Workflow, Workflow]:
        """Compare-and-swap on the workflow record."""

        def change(workflow: Workflow | None) -> Workflow | None:
            if workflow is None:
                raise NotFoundError("workflow", workflow_id)
            return fn(workflow)

        before, after, _ = await self._swap(
            names.JOBS_BUCKET,
            f"w.{workflow_id}",
            (_decode_workflow, _encode_record),
            change,
            f"workflow {workflow_id}",
        )
        assert before is not None
        assert after is not None
        return before, after

    # -- cron -----------------------------------------------------------------------------

    async def _read_cron(self, name: str) -> tuple[CronJob, int] | None:
        got = await self._get(self._kv[names.CRON_BUCKET], name)
        if got is None:
            return None
        rec = self._decode_cron(got[0]), got[1]
        self._on_cron_entry(name, got[0], got[1])
        return rec

    @staticmethod
    def _decode_cron(data: bytes) -> CronJob:
        return converter.structure(json.loads(data), CronJob)

    @staticmethod
    def _cron_bytes(cron: CronJob) -> bytes:
        return _encode_record(cron)

    @_guard
    async def put_cron(self, cron: CronJob) -> bool:
        """Upsert."""
        existed = await self._read_cron(cron.name) is not None
        revision = await self._kv[names.CRON_BUCKET].put(cron.name, self._cron_bytes(cron))
        self._hold_cron(cron.name, cron, revision)
        return not existed

    @_guard
    async def get_cron(self, name: str) -> CronJob | None:
        """The entry or ``None``."""
        rec = await self._read_cron(name)
        return rec[0] if rec else None

    @_guard
    async def list_crons(self) -> list[CronJob]:
        """Every entry, by name, from this replica's watched copy of the cron bucket (no
        reads): its own writes at once, other replicas' within milliseconds."""
        await asyncio.wait_for(self._crons_synced.wait(), 10)
        return [cron for _, (cron, _) in sorted(self._crons.items()) if cron is not None]

    @_guard
    async def delete_cron(self, name: str) -> CronJob | None:
        """Remove and return."""
        rec = await self._read_cron(name)
        if rec is None:
            return None
        (revision,) = await commit(
            self.nc,
            self.js,
            [
                (
                    self._subject(names.CRON_BUCKET, name),
                    b"",
                    {"KV-Operation": "PURGE", "Nats-Rollup": "sub"},
                )
            ],
        )
        self._hold_cron(name, None, revision)
        return rec[0]

    @_guard
    async def update_cron(
        self, name: str, fn: Callable[[CronJob], CronJob]
    ) -> tuple[CronJob, CronJob]:
        """Compare-and-swap; of several replicas firing one tick, one swap wins."""

        def change(cron: CronJob | None) -> CronJob | None:
            if cron is None:
                raise NotFoundError("cron job", name)
            return fn(cron)

        before, after, revision = await self._swap(
            names.CRON_BUCKET, name, (self._decode_cron, _encode_record), change, f"cron {name!r}"
        )
        assert before is not None
        assert after is not None
        self._hold_cron(name, after, revision)
        return before, after

    # -- workers and events ---------------------------------------------------------------

    @_guard
    async def upsert_worker(self, fn: Callable[[WorkerInfo | None], WorkerInfo]) -> WorkerInfo:
        """Create or update a worker record by compare-and-swap."""
        key = names.hex_key(fn(None).worker_id)
        _, after, _ = await self._swap(
            names.WORKERS_BUCKET, key, (_decode_worker, _encode_record), fn, "worker record"
        )
        assert after is not None
        return after

    @_guard
    async def get_worker(self, worker_id: str) -> WorkerInfo | None:
        """The record or ``None``."""
        got = await self._get(self._kv[names.WORKERS_BUCKET], names.hex_key(worker_id))
        return _decode_worker(got[0]) if got else None

    @_guard
    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker seen."""
        kv = self._kv[names.WORKERS_BUCKET]
        keys = await self._keys(names.WORKERS_BUCKET)
        return [
            _decode_worker(got[0])
            for got in await asyncio.gather(*(self._get(kv, k) for k in keys))
            if got is not None
        ]

    @_guard
    async def publish_events(self, events: Sequence[Event]) -> None:
        """Core-NATS publish to ``ojs.events.<type>`` (the events stream keeps them a day)."""
        for event in events:
            body = {
                "id": event.id,
                "type": event.type,
                "time": format_ts(event.time),
                "subject": event.subject,
                "data": event.data,
            }
            await self.nc.publish(
                f"{names.EVENT_PREFIX}.{event.type}",
                jsonio.dumps(body, default=str),
            )

    @_guard
    async def read_events(self, flt: EventFilter) -> list[Event]:
        """Read the events stream from ``after`` with an ephemeral consumer."""
        subjects = [f"{names.EVENT_PREFIX}.{t}" for t in flt.types] or [f"{names.EVENT_PREFIX}.>"]
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if flt.after else DeliverPolicy.ALL,
            opt_start_seq=flt.after + 1 if flt.after else None,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=10.0,
            filter_subjects=subjects if len(subjects) > 1 else None,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
        )
        info = await self.js.add_consumer(names.EVENTS_STREAM, config)
        out: list[Event] = []
        try:
            scanned = 0
            while len(out) < flt.limit and scanned < 20_000:
                msgs = await pull_now(self.nc, names.EVENTS_STREAM, info.name, 500)
                if not msgs:
                    break
                scanned += len(msgs)
                for msg in msgs:
                    raw = json.loads(msg.data)
                    data = raw.get("data") or {}
                    if flt.queues and data.get("queue") not in flt.queues:
                        continue
                    if flt.job_id and data.get("job_id") != flt.job_id:
                        continue
                    out.append(
                        Event(
                            id=raw["id"],
                            type=raw["type"],
                            time=parse_ts(raw["time"]),
                            subject=raw.get("subject"),
                            data=data,
                            seq=msg.metadata.sequence.stream,
                        )
                    )
                    if len(out) >= flt.limit:
                        break
        finally:
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(names.EVENTS_STREAM, info.name)
        return out
