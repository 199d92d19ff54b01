"""Stored records: their one storage format, and the store that reads and swaps them.

Every record kind (job, workflow, cron entry, worker, queue) is encoded and decoded by one
:class:`Codec` here, with the core's cattrs converter and :mod:`ojs_core.jsonio`. A job record
is ``{"e": epoch, "j": job}`` (the job's wire form less its fields at their defaults: see
:func:`stored_form`): the epoch counts the job's entries into ``available``, so a
ready hint can tell the entry it announces from a later one.

:class:`RecordStore` owns the KV buckets and the version cache of recently written or read
jobs, and applies changes by compare-and-swap on a key's revision.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Generic, TypeVar

import attrs
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from ojs_core import jsonio
from ojs_core.codec import converter, job_from_dict, job_to_wire
from ojs_core.errors import BackendUnavailableError, ConflictError, NotFoundError
from ojs_core.model import Backpressure, CronJob, Job, QueueInfo, WorkerInfo, Workflow
from ojs_core.timeutil import parse_ts

from . import names
from .connection import Connection
from .jetstream import (
    UNKNOWN_OUTCOME,
    Op,
    WrongSequenceError,
    check_size,
    direct_get_batch,
    last_values,
    settle,
)

__all__ = [
    "CRON",
    "QUEUE",
    "TOMBSTONE_TTL",
    "WORKER",
    "WORKFLOW",
    "Codec",
    "JobRecord",
    "QueueRecord",
    "RecordStore",
    "decode_job",
    "encode_job",
    "stored_form",
]

log = logging.getLogger("ojs.nats")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: Compare-and-swap attempts before a change is refused as too contended (409).
CAS_ATTEMPTS = 64
#: Job versions kept for the next compare-and-swap on them (ack after claim, mostly).
CACHE_SIZE = 10_000
#: How long a version read by the timer pass stands in for a read (:meth:`RecordStore.take_fresh`).
FRESH_S = 0.5
#: Keys per batched direct get.
MULTI_GET = 256
#: How long a batched direct get waits for each of its answers.
_MULTI_GET_WAIT_S = 5.0
#: How long a key listing waits for each page.
_KEYS_WAIT_S = 10.0
#: ``KV-Operation`` values of a deleted key's marker.
_DELETED = ("DEL", "PURGE")
#: Reads of a record while deciding a write whose outcome is unknown.
_SETTLE_ATTEMPTS = 4
#: How long the deletion marker of a removed record stays (``Nats-TTL``). It fences a write of
#: the old record still on its way (seconds at most; a removed job has been terminal for its
#: whole retention, so nothing but a conditional write can target it) and then goes, so that
#: removals leave nothing behind. A write expecting the old revision fails even after.
TOMBSTONE_TTL = "60s"


@attrs.frozen
class JobRecord:
    """A job as stored: the job, its epoch, and the revision to compare-and-swap against.

    ``birth`` orders listings: the sequence of the job's birth entry in the index stream,
    stored in the record (``"b"``). ``entry`` is the sequence of the index entry of this
    version's state, queue and type, stored in the record too (``"x"``): the write that
    replaces the version removes that entry by its sequence, and a listing keeps an entry only
    if the record names it. Both are 0 in records written before the index had its stream."""

    job: Job
    epoch: int
    revision: int
    birth: int = 0
    entry: int = 0


def _sorted_priorities(values: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(set(values), reverse=True))


def _sorted_lanes(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


def _lane_levels(entries: Sequence[str]) -> dict[int, list[str]]:
    """Lane entries (``"<priority> <lane>"``) by priority."""
    out: dict[int, list[str]] = {}
    for entry in entries:
        priority, _, lane = entry.partition(" ")
        out.setdefault(int(priority), []).append(lane)
    return out


@attrs.frozen
class QueueRecord:
    """What ``OJS_QUEUES`` holds per queue: the pause flag, the priority levels in use
    (highest first; each has a ready consumer), when the queue was first seen, and its bound
    (backpressure extension; watched by every replica, as the pause flag is)."""

    paused: bool = False
    priorities: tuple[int, ...] = attrs.field(default=(), converter=_sorted_priorities)
    created_at: str | None = None
    backpressure: Backpressure | None = None
    #: Version lanes in use (job versioning), as ``"<priority> <type>@<major>.<minor>"``: each
    #: has its own ready consumer, so a fetch pulls only the lanes its worker accepts.
    lanes: tuple[str, ...] = attrs.field(default=(), converter=_sorted_lanes)
    #: Tenant shards (multi-tenancy): tenant id -> the priority levels it has used (each
    #: has a ready consumer of its own).
    shards: dict[str, list[int]] = attrs.field(factory=dict)
    #: Version lanes of tenant shards (both extensions at once): tenant id -> its lanes in
    #: use, as in :attr:`lanes` (each with a ready consumer of its own).
    shard_lanes: dict[str, list[str]] = attrs.field(factory=dict)

    def lane_levels(self) -> dict[int, list[str]]:
        """The lanes (of jobs without a tenant) by priority."""
        return _lane_levels(self.lanes)

    def ready_levels(self) -> dict[int, list[tuple[str | None, str]]]:
        """Every ready consumer of the queue by priority, as ``(lane, shard)``: ``None`` for
        the unversioned lane, ``""`` for the jobs without a tenant."""
        out: dict[int, list[tuple[str | None, str]]] = {}
        for priority in self.priorities:
            out.setdefault(priority, []).append((None, ""))
        for priority, lanes in self.lane_levels().items():
            out.setdefault(priority, []).extend((lane, "") for lane in lanes)
        for shard, levels in self.shards.items():
            for priority in levels:
                out.setdefault(priority, []).append((None, shard))
        for shard, entries in self.shard_lanes.items():
            for priority, lanes in _lane_levels(entries).items():
                out.setdefault(priority, []).extend((lane, shard) for lane in lanes)
        return out

    def info(self, name: str) -> QueueInfo:
        """The queue as listed."""
        return QueueInfo(
            name=name,
            paused=self.paused,
            created_at=parse_ts(self.created_at) if self.created_at else None,
        )


class Codec(Generic[T_co]):
    """The storage format of one record kind: JSON of the core converter's wire form."""

    def __init__(self, cls: type[T_co]) -> None:
        self.cls = cls

    def encode(self, value: object) -> bytes:
        """``value`` (of this codec's class) as stored bytes."""
        return jsonio.dumps(converter.unstructure(value, self.cls))

    def decode(self, data: bytes) -> T_co:
        """Stored bytes as a value."""
        return converter.structure(jsonio.loads(data), self.cls)


WORKFLOW = Codec(Workflow)
CRON = Codec(CronJob)
WORKER = Codec(WorkerInfo)
QUEUE = Codec(QueueRecord)


#: Fields of a job's wire form, and keys of its retry policy, that a record leaves out while
#: they hold the model's defaults: decoding gives them back, in this version and in every
#: earlier one (the same codec; a partial retry policy is completed from its defaults), and
#: ``max_attempts`` is derived from the policy. A plain job's record is ~37 % smaller for it
#: (648 → 411 bytes for a no-op job): fewer bytes written, stored and read per transition.
_FIELD_DEFAULTS: dict[str, Any] = {"meta": {}, "priority": 0, "specversion": "1.0", "tags": []}
_RETRY_DEFAULTS: dict[str, Any] = job_to_wire(Job(id="-", type="-"))["retry"]


def stored_form(job: Job) -> dict[str, Any]:
    """The job as its record holds it: the wire form less what holds the defaults."""
    wire = job_to_wire(job)
    del wire["max_attempts"]
    for key, default in _FIELD_DEFAULTS.items():
        if wire[key] == default:
            del wire[key]
    retry = wire["retry"]
    for key, default in _RETRY_DEFAULTS.items():
        if retry[key] == default:
            del retry[key]
    if not retry:
        del wire["retry"]
    return wire


def encode_job(job: Job, epoch: int, birth: int = 0, entry: int = 0) -> bytes:
    """A job record's bytes (the job's hand-written wire encoder: it is the hot path)."""
    if birth or entry:
        return jsonio.dumps({"e": epoch, "b": birth, "x": entry, "j": stored_form(job)})
    return jsonio.dumps({"e": epoch, "j": stored_form(job)})


def decode_job(data: bytes, revision: int) -> JobRecord:
    """A job record from its bytes and revision."""
    raw = jsonio.loads(data)
    return JobRecord(
        job_from_dict(raw["j"]), int(raw["e"]), revision, int(raw.get("b", 0)), int(raw.get("x", 0))
    )


class RecordStore:
    """The KV buckets, the job version cache, and compare-and-swap on keys."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        #: Buckets by name; replaced by each provisioning.
        self.kv: dict[str, KeyValue] = {}
        #: Read through the stream leader (set for replicated streams; see :meth:`entry`).
        self.leader_reads = False
        self._cache: OrderedDict[str, JobRecord] = OrderedDict()
        #: Records another process stored and announced (``Arrivals``), kept undecoded until a
        #: claim asks for one: most are claimed elsewhere. Oldest dropped first.
        self._heard: dict[str, tuple[int, bytes]] = {}
        #: Versions read a moment ago by the timer pass, handed to the update or removal that
        #: follows so it need not read again (each taken once; see :meth:`take_fresh`).
        self._fresh: dict[str, tuple[float, JobRecord]] = {}

    @property
    def jobs(self) -> KeyValue:
        """The ``OJS_JOBS`` bucket."""
        return self.kv[names.JOBS_BUCKET]

    # -- raw keys --------------------------------------------------------------------------

    async def get(self, bucket: str, key: str) -> tuple[bytes, int] | None:
        """The value and revision of ``key``, or ``None`` (missing, deleted, or not a key)."""
        if not names.is_kv_key(key):
            return None  # a name from a URL that no stored record can have
        value, revision = await self.entry(bucket, key)
        return None if value is None else (value, revision)

    async def entry(self, bucket: str, key: str) -> tuple[bytes | None, int]:
        """The value of ``key`` (``None`` when absent or deleted) and the revision a write of
        it must expect (0 when it was never written; a deletion marker's otherwise).

        With :attr:`leader_reads` (replicated streams) the stream leader answers: a direct
        get may be answered by a follower that has not seen the latest write, and these reads
        decide writes. A single server is always up to date, and direct gets are cheaper.
        """
        if self.leader_reads:
            return await self._leader_entry(bucket, key)
        kv = self.kv[bucket]
        try:
            # A just-created bucket's direct-get responders may not be up yet.
            got = await settle(
                lambda: kv.get(key), lambda exc: isinstance(exc, nats.errors.NoRespondersError)
            )
        except nats.js.errors.KeyNotFoundError as exc:
            marker = exc.entry
            return None, (marker.revision or 0) if marker is not None else 0
        return got.value or None, got.revision or 0

    async def _leader_entry(self, bucket: str, key: str) -> tuple[bytes | None, int]:
        js = self.conn.js
        stream, subject = names.kv_stream(bucket), names.kv_subject(bucket, key)
        try:
            msg = await settle(
                lambda: js.get_msg(stream, subject=subject),
                lambda exc: isinstance(exc, nats.errors.NoRespondersError),
            )
        except nats.js.errors.NotFoundError:
            return None, 0
        seq = msg.seq or 0
        if msg.headers and msg.headers.get(names.KV_OPERATION) in ("DEL", "PURGE"):
            return None, seq
        return msg.data or None, seq

    async def fence_job(self, job_id: str, expected: int | None) -> bool:
        """Make sure no write of the job that expects its current revision can land later.

        Rewrites what is stored (a deletion marker where nothing is) with the current revision
        expected, if that revision is ``expected`` (``None``: if the job does not exist). A
        write that was sent earlier and is still on its way (a timed-out one; one nats-py
        replays after a reconnect) then fails its compare-and-swap instead of landing. ``False``
        when the record is not as expected or changed meanwhile: look again.
        """
        key = names.job_key(job_id)
        value, revision = await self.entry(names.JOBS_BUCKET, key)
        if (value is not None) if expected is None else (revision != expected):
            return False
        headers = {names.EXPECTED_SUBJECT_SEQUENCE: str(revision)}
        if value is None:
            headers[names.KV_OPERATION] = "DEL"
        try:
            new_revision = await self.conn.pipe.publish(
                names.kv_subject(names.JOBS_BUCKET, key), value or b"", headers
            )
        except WrongSequenceError:
            return False
        if value is None:
            self.forget(job_id)
        else:
            self.remember(decode_job(value, new_revision))
        return True

    async def settle_unknown(self, job_id: str, data: bytes, expected: int) -> int | None:
        """Decide a job write whose outcome is unknown (its acknowledgement timed out).

        The revision it landed at, or ``None`` when it did not land and now never will (another
        write came first, or the record was fenced with :meth:`fence_job`).
        :class:`BackendUnavailableError` when NATS cannot be reached to tell."""
        if not self.conn.connected:
            raise BackendUnavailableError("NATS is unreachable; a write's outcome is unknown")
        key = names.job_key(job_id)
        for _ in range(_SETTLE_ATTEMPTS):
            value, revision = await self.entry(names.JOBS_BUCKET, key)
            if value == data:
                return revision  # it landed (or an identical write did: the same outcome)
            if revision != expected:
                return None  # something else was written: this write expects an older one
            if await self.fence_job(job_id, expected):
                return None
        return None

    async def remove(self, bucket: str, key: str, expected: int | None = None) -> int | None:
        """Delete ``key`` with a marker that expires by itself (:data:`TOMBSTONE_TTL`), if
        its revision is ``expected`` (any revision when ``None``). The marker's revision, or
        ``None`` when the key changed meanwhile. A timed-out write is settled by reading."""
        headers = {names.KV_OPERATION: "DEL", names.MSG_TTL: TOMBSTONE_TTL}
        if expected is not None:
            headers[names.EXPECTED_SUBJECT_SEQUENCE] = str(expected)
        try:
            return await self.conn.pipe.publish(names.kv_subject(bucket, key), b"", headers)
        except WrongSequenceError:
            return None
        except UNKNOWN_OUTCOME:
            value, revision = await self.entry(bucket, key)
            if value is None and revision > (expected or 0):
                return revision  # it landed
            raise

    async def values(self, bucket: str) -> list[bytes]:
        """Every live value of ``bucket`` (deleted keys left out): one batched read of the
        last values (``multi_last``), or with :attr:`leader_reads` a read of each key through
        the stream leader (a follower's batched answer may miss the latest writes)."""
        if self.leader_reads:
            keys = await self.keys(bucket)
            got = await asyncio.gather(*(self.get(bucket, k) for k in keys))
            return [g[0] for g in got if g is not None]
        msgs = await last_values(
            self.conn.nc, names.kv_stream(bucket), names.kv_subject(bucket, ">")
        )
        return [
            msg.data
            for msg in msgs
            if msg.data and (msg.headers or {}).get(names.KV_OPERATION) not in _DELETED
        ]

    async def keys(self, bucket: str, pattern: str = ">") -> list[str]:
        """Keys of ``bucket`` matching ``pattern``, deleted ones included (callers read each).

        Asks the stream for its subjects (one request per page, filtered by the server) rather
        than running a watcher: nats-py's watcher can report the end of the initial values
        before a value delivered in the same instant, which makes ``kv.keys()`` miss keys.
        """
        prefix = names.kv_subject(bucket, "")
        keys: list[str] = []
        offset = 0
        while True:
            reply = await self.conn.nc.request(
                names.stream_info_subject(names.kv_stream(bucket)),
                json.dumps({"subjects_filter": prefix + pattern, "offset": offset}).encode(),
                timeout=_KEYS_WAIT_S,
            )
            body = json.loads(reply.data)
            if "error" in body:
                raise nats.js.errors.APIError.from_error(body["error"])
            subjects = (body.get("state") or {}).get("subjects") or {}
            keys.extend(subject[len(prefix) :] for subject in subjects)
            offset += len(subjects)
            if not subjects or offset >= int(body.get("total") or 0):
                return keys

    async def swap(
        self,
        bucket: str,
        key: str,
        codec: Codec[T],
        change: Callable[[T | None], T | None],
        what: str,
    ) -> tuple[T | None, T | None, int]:
        """Read-modify-write of one key by compare-and-swap, retried on contention.

        ``change`` gets the current value (``None`` when there is none) and returns the new
        one; returning ``None`` or the value itself writes nothing. Returns ``(before, after,
        revision)``. Raises :class:`ConflictError` when the swap keeps losing.
        """
        kv = self.kv[bucket]
        for _ in range(CAS_ATTEMPTS):
            got = await self.get(bucket, key)
            current = codec.decode(got[0]) if got else None
            new = change(current)
            if new is None or new is current:
                return current, current, got[1] if got else 0
            data = codec.encode(new)
            check_size(
                self.conn.nc, data, {names.EXPECTED_SUBJECT_SEQUENCE: str(got[1] if got else 0)}
            )
            try:
                write = (
                    partial(kv.create, key, data)
                    if got is None
                    else partial(kv.update, key, data, last=got[1])
                )
                revision = await settle(write, _unanswered)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
                # KeyNotFound: kv.create lost to a concurrent create, and nats-py then read the
                # key from a follower that had not applied it yet (replicated buckets): again.
                continue
            return current, new, revision
        raise ConflictError(f"{what} is being changed concurrently; try again")

    async def swap_existing(
        self,
        bucket: str,
        key: str,
        codec: Codec[T],
        fn: Callable[[T], T],
        kind: str,
        name: str,
    ) -> tuple[T, T, int]:
        """:meth:`swap` of a record that must exist (:class:`NotFoundError` otherwise)."""

        def change(current: T | None) -> T:
            if current is None:
                raise NotFoundError(kind, name)
            return fn(current)

        before, after, revision = await self.swap(bucket, key, codec, change, f"{kind} {name!r}")
        assert before is not None
        assert after is not None
        return before, after, revision

    # -- job records -----------------------------------------------------------------------

    async def read_job(self, job_id: str, *, cached: bool = False) -> JobRecord | None:
        """The stored job; with ``cached`` the last version this process wrote or read may be
        returned. A stale one is harmless: the compare-and-swap that follows fails and the
        caller re-reads."""
        if not names.is_job_id(job_id):
            return None  # not an id this backend could have stored (and not a valid KV key)
        if cached:
            hit = self._cache.get(job_id)
            if hit is not None:
                return hit
        got = await self.get(names.JOBS_BUCKET, names.job_key(job_id))
        if got is None:
            self._cache.pop(job_id, None)
            return None
        rec = decode_job(*got)
        self.remember(rec)
        return rec

    async def read_jobs(
        self, job_ids: Sequence[str], *, cached: bool = False
    ) -> list[JobRecord | None]:
        """:meth:`read_job` for many jobs with one batched direct get (``multi_last``) instead
        of a request per job; falls back to single reads if the server cannot answer it."""
        out: list[JobRecord | None] = [None] * len(job_ids)
        wanted: dict[str, list[int]] = {}
        for i, job_id in enumerate(job_ids):
            if not names.is_job_id(job_id):
                continue
            hit = self._cache.get(job_id) if cached else None
            if hit is None and cached:
                hit = self._take_heard(job_id)
            if hit is not None:
                out[i] = hit
            else:
                wanted.setdefault(job_id, []).append(i)
        ids = list(wanted)
        found: dict[str, JobRecord] = {}
        if len(ids) == 1 or self.leader_reads:  # batched gets are direct: not for replicas
            recs = await asyncio.gather(*(self.read_job(j) for j in ids))
            found = {j: r for j, r in zip(ids, recs, strict=True) if r is not None}
        else:
            for start in range(0, len(ids), MULTI_GET):
                chunk = ids[start : start + MULTI_GET]
                try:
                    found.update(await self._multi_get(chunk))
                except Exception:
                    log.debug("batched direct get failed; reading one by one", exc_info=True)
                    recs = await asyncio.gather(*(self.read_job(j) for j in chunk))
                    found.update((j, r) for j, r in zip(chunk, recs, strict=True) if r)
        for job_id, places in wanted.items():
            rec = found.get(job_id)
            if rec is None:
                self._cache.pop(job_id, None)
            for i in places:
                out[i] = rec
        return out

    async def _multi_get(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        prefix = names.kv_subject(names.JOBS_BUCKET, names.JOB_PREFIX)
        msgs = await direct_get_batch(
            self.conn.nc,
            names.kv_stream(names.JOBS_BUCKET),
            {"multi_last": [prefix + j for j in job_ids], "batch": len(job_ids)},
            _MULTI_GET_WAIT_S,
        )
        found: dict[str, JobRecord] = {}
        for msg in msgs:
            headers = msg.headers or {}
            if headers.get(names.KV_OPERATION) or not msg.data:
                continue  # deleted or purged
            job_id = headers.get(names.DIRECT_SUBJECT, "")[len(prefix) :]
            rec = decode_job(msg.data, int(headers.get(names.DIRECT_SEQUENCE, "0")))
            self.remember(rec)
            found[job_id] = rec
        return found

    def job_op(self, job: Job, epoch: int, expect: int, birth: int = 0, entry: int = 0) -> Op:
        """The write of a job record, expecting revision ``expect`` (0: must not exist), with
        its birth and the sequence of its index entry (:class:`JobRecord`)."""
        return (
            names.kv_subject(names.JOBS_BUCKET, names.job_key(job.id)),
            encode_job(job, epoch, birth, entry),
            {names.EXPECTED_SUBJECT_SEQUENCE: str(expect)},
        )

    def remember(self, rec: JobRecord) -> None:
        """Keep a version for the next compare-and-swap (terminal jobs are dropped)."""
        cache = self._cache
        job_id = rec.job.id
        if rec.job.state.terminal:
            cache.pop(job_id, None)  # nothing more will happen to it here
            return
        cache[job_id] = rec
        cache.move_to_end(job_id)
        if len(cache) > CACHE_SIZE:
            cache.popitem(last=False)

    def hear(self, job_id: str, revision: int, data: bytes) -> None:
        """Keep a record another process just stored (carried by its arrival notification)
        for the claim that may follow; as good a guess as the version cache."""
        heard = self._heard
        heard.pop(job_id, None)
        heard[job_id] = (revision, data)
        if len(heard) > CACHE_SIZE:
            del heard[next(iter(heard))]

    def _take_heard(self, job_id: str) -> JobRecord | None:
        got = self._heard.pop(job_id, None)
        if got is None:
            return None
        try:
            rec = decode_job(got[1], got[0])
        except Exception:
            return None  # not a record: read the stored one
        if rec.job.id != job_id:
            return None
        self.remember(rec)
        return rec

    def put_fresh(self, rec: JobRecord) -> None:
        """Hand a version just read from the store to the next write of the same job."""
        if len(self._fresh) >= CACHE_SIZE:
            self._fresh.clear()
        self._fresh[rec.job.id] = (time.monotonic(), rec)

    def take_fresh(self, job_id: str) -> JobRecord | None:
        """The version :meth:`put_fresh` handed over less than :data:`FRESH_S` ago (once), or
        ``None``. As good as a read: a write expecting it fails if the record changed since,
        and a decision not to write taken on it is no older than a read's."""
        got = self._fresh.pop(job_id, None)
        if got is None or time.monotonic() - got[0] > FRESH_S:
            return None
        return got[1]

    def cached_job(self, job_id: str) -> JobRecord | None:
        """The cached version of a job, if any (it may be stale)."""
        return self._cache.get(job_id)

    def forget(self, job_id: str) -> None:
        """Drop the cached version (after a lost swap, say)."""
        self._cache.pop(job_id, None)
        self._fresh.pop(job_id, None)
        self._heard.pop(job_id, None)

    def forget_all(self) -> None:
        """Drop every cached version (after a reset)."""
        self._cache.clear()
        self._fresh.clear()
        self._heard.clear()


def _unanswered(exc: BaseException) -> bool:
    # A just-created bucket, or a leader election.
    return isinstance(exc, nats.js.errors.NoStreamResponseError)
