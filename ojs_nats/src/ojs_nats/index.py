"""The listing index: two entries per job in the jobs bucket.

A *birth entry* ``y.<queue>.<type>.<id>`` is written once, before the job's first record,
and never rewritten: its sequence is the job's *birth* (the record keeps it as ``b``), so
birth entries are in enqueue order, and listings without a state filter read them. An
*index entry* ``x.<state>.<queue>.<type>.<id>`` says "this job may be in this state, queue and
type" (its value is the birth); listings by state read them. The record is the truth, an
entry a hint:

* An entry is published **before** the record write it announces, pipelined on the same
  connection into the same stream, so the stream stores it first: a record in a state always
  has an entry for it (a crash in between leaves an entry that points at a job in another
  state, which listings skip).
* The entry of the version a write replaced is removed **after** the write, off the hot path,
  by a deletion marker that expects the entry's sequence and expires a second later: it
  cannot remove a newer entry of the same key. A crash or a lost removal
  leaves a stale entry: listings skip it and remove it then (:meth:`Index.page`).
* Listings read entries newest first from the stream (server-side subject filters, batched
  direct gets), read the records of a page in one batched get, and keep the entries whose
  record matches. Order is by birth (insertion order, like the memory backend): every job
  born after sequence ``S`` has its current entry after ``S``, so scanning back to ``S``
  finds all of them (see ``docs/nats-design.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import attrs
from nats.aio.msg import Msg

from ojs_core.model import Job
from ojs_core.states import JobState

from . import names
from .connection import Connection
from .jetstream import Op, direct_get_batch
from .records import RecordStore

__all__ = ["Index", "birth_key_of", "index_key_of", "listable"]

log = logging.getLogger("ojs.nats")

#: Entries read per batched direct get while scanning back.
SCAN_BATCH = 512
#: The first window scanned back is this many times the entries wanted (then it doubles).
_FIRST_WINDOW = 4
#: An entry whose record is in another state, but older than its record's version is
#: unknown, is left alone this long: the write it announces may still be on its way.
GRACE = timedelta(minutes=2)
#: How long the marker that removes an entry stays (listings skip markers).
MARKER_TTL = "1s"
_STREAM = names.kv_stream(names.JOBS_BUCKET)
_PREFIX = names.kv_subject(names.JOBS_BUCKET, "")


def index_key_of(job: Job) -> str:
    """The key of ``job``'s index entry."""
    return names.index_key(job.state.value, job.queue, job.type, job.id)


def birth_key_of(job: Job) -> str:
    """The key of ``job``'s birth entry."""
    return names.birth_key(job.queue, job.type, job.id)


@attrs.define
class _Entry:
    """An entry read by a listing."""

    key: str
    seq: int
    birth: int
    stamp: datetime | None


@attrs.frozen
class _Check:
    """How a listing checks a record against an entry: the key the record's job has, and
    whether the listing keeps the job."""

    key_of: Callable[[Job], str]
    keep: Callable[[Job], bool]


@attrs.define
class _Found:
    """Per job: its entries seen so far, and its record once read."""

    entries: list[_Entry] = attrs.field(factory=list)
    read: bool = False
    job: Job | None = None
    birth: int = 0


class Index:
    """Index entries: written with each record write, removed after, read by listings."""

    def __init__(self, conn: Connection, store: RecordStore) -> None:
        self.conn = conn
        self.store = store
        #: Entries to remove: (key, sequence or 0 when unknown, revision that replaced them).
        self._unlinks: list[tuple[str, int, int]] = []
        self._task: asyncio.Task[None] | None = None

    # -- writing ---------------------------------------------------------------------------

    @staticmethod
    def entry_op(job: Job, birth: int) -> Op:
        """The write of ``job``'s entry (``birth`` 0: this is its first entry)."""
        subject = names.kv_subject(names.JOBS_BUCKET, index_key_of(job))
        return subject, str(birth).encode() if birth else b"", {}

    async def add_new(self, jobs: Sequence[Job]) -> list[tuple[int, int]]:
        """The birth entry and the first index entry of each new job, pipelined in order;
        per job the sequences of both (the first is the birth the record keeps)."""
        ops: list[Op] = []
        for job in jobs:
            ops.append((names.kv_subject(names.JOBS_BUCKET, birth_key_of(job)), b"", {}))
            ops.append(self.entry_op(job, 0))
        seqs: list[int] = []
        for outcome in await self.conn.pipe.publish_each(ops):
            if isinstance(outcome, BaseException):
                raise outcome
            seqs.append(outcome)
        return list(zip(seqs[0::2], seqs[1::2], strict=True))

    def unlink_birth(self, job: Job, birth: int) -> None:
        """Remove a deleted job's birth entry soon (if it is still the one of ``birth``)."""
        if birth:
            self._unlinks.append((birth_key_of(job), birth, 0))
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._drain())

    def unlink(self, job: Job, entry: int, revision: int) -> None:
        """Remove ``job``'s entry (sequence ``entry``, 0 if unknown) soon: the version it
        indexes was replaced by the write stored at ``revision`` (or removed by it)."""
        self._unlinks.append((index_key_of(job), entry, revision))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._unlinks:
            batch, self._unlinks = self._unlinks, []
            with contextlib.suppress(Exception):
                unknown = [u for u in batch if not u[1]]
                known = [(key, entry) for key, entry, _ in batch if entry]
                if unknown:
                    known += await self._current(unknown)
                # Without acknowledgement (a lost removal leaves a stale entry, which listings
                # repair): a marker that finds a newer entry (or none) is refused, unseen.
                nc = self.conn.nc
                for key, seq in known:
                    subject, data, headers = _removal(key, seq)
                    await nc.publish(subject, data, headers=headers)

    async def _current(self, unlinks: Sequence[tuple[str, int, int]]) -> list[tuple[str, int]]:
        """For entries of unknown sequence: the entry stored now, if it is older than the
        write that replaced it (a newer one was published by a later write of the same
        state, and stays)."""
        got = await asyncio.gather(
            *(self.store.entry(names.JOBS_BUCKET, key) for key, _, _ in unlinks)
        )
        return [
            (key, seq)
            for (key, _, revision), (_, seq) in zip(unlinks, got, strict=True)
            if seq and seq < revision
        ]

    async def remove(self, key: str, seq: int) -> None:
        """Remove the entry ``key`` if its sequence is still ``seq`` (a newer entry of the key
        stays): :func:`_removal`, published."""
        with contextlib.suppress(Exception):  # WrongSequenceError: replaced or gone already
            await self.conn.pipe.publish(*_removal(key, seq))

    def forget_all(self) -> None:
        """Drop pending removals (after a reset)."""
        self._unlinks.clear()

    # -- reading ---------------------------------------------------------------------------

    async def page(
        self,
        state: str | None,
        queue: str | None,
        job_type: str | None,
        keep: Callable[[Job], bool],
        offset: int,
        limit: int,
    ) -> list[Job]:
        """Jobs ``offset .. offset + limit`` of the listing, newest (latest birth) first.

        Scans entries back from the end of the stream in windows that double, reading the
        records of the candidates as they become eligible, until ``offset + limit`` matching
        jobs born inside the scanned range are known (or the start is reached)."""
        if state is None:  # birth entries: in birth order already, never rewritten
            subject, key_of = names.birth_filter(queue, job_type), birth_key_of
        else:
            subject, key_of = names.index_filter(state, queue, job_type), index_key_of
        if subject is None or not listable(state, queue, job_type) or limit <= 0:
            return []
        need = offset + limit
        subject = _PREFIX + subject
        top = await self._last_seq(subject)
        found: dict[str, _Found] = {}
        stop = top + 1
        width = max(_FIRST_WINDOW * need, SCAN_BATCH)
        while stop > 1:
            start = max(1, stop - width)
            for msg in await self._scan(subject, start, stop):
                entry = _parse(msg)
                if entry is not None:
                    found.setdefault(entry[0], _Found()).entries.append(entry[1])
            frontier = start if start > 1 else 0
            listed = await self._settle(found, frontier, need, _Check(key_of, keep))
            if listed >= need:
                break
            stop = start
            width *= 2
        live = [f for f in found.values() if f.job is not None]
        live.sort(key=lambda f: f.birth, reverse=True)
        return [f.job for f in live[offset:need] if f.job is not None]

    async def _last_seq(self, subject: str) -> int:
        """The sequence of the newest message matching ``subject`` (0: none), so that the
        scan starts there rather than at the end of the stream (past every later write)."""
        try:
            reply = await self.conn.nc.request(
                names.direct_get_subject(_STREAM),
                json.dumps({"last_by_subj": subject}).encode(),
                timeout=5.0,
            )
        except Exception:
            log.debug("last_by_subj failed; scanning from the end", exc_info=True)
            info = await self.conn.js.stream_info(_STREAM)
            return int(info.state.last_seq or 0)
        headers = reply.headers or {}
        if headers.get(names.STATUS):
            return 0  # 404: no entry matches
        return int(headers.get(names.DIRECT_SEQUENCE, "0"))

    async def _scan(self, subject: str, start: int, stop: int) -> list[Msg]:
        """Entries matching ``subject`` with sequences in ``[start, stop)``, oldest first."""
        out: list[Msg] = []
        seq = start
        while seq < stop:
            batch = min(SCAN_BATCH, stop - seq)
            msgs = await direct_get_batch(
                self.conn.nc, _STREAM, {"seq": seq, "next_by_subj": subject, "batch": batch}
            )
            for msg in msgs:
                got = int((msg.headers or {}).get(names.DIRECT_SEQUENCE, "0"))
                if got >= stop:
                    return out
                out.append(msg)
                seq = got + 1
            if len(msgs) < batch:
                break
        return out

    async def _settle(
        self, found: dict[str, _Found], frontier: int, need: int, check: _Check
    ) -> int:
        """How many listed jobs born at or after ``frontier`` are known, up to ``need``.

        Walks the candidates born since ``frontier`` newest first and reads the records of
        those not read yet, only as far as ``need`` listed jobs reach: an early page reads
        about a page of records however many entries the window held."""
        while True:
            pool = [
                (f.birth if f.read else max(e.birth for e in f.entries), job_id, f)
                for job_id, f in found.items()
                if (f.job is not None and f.birth >= frontier)
                or (not f.read and max(e.birth for e in f.entries) >= frontier)
            ]
            pool.sort(key=lambda p: p[0], reverse=True)
            listed = 0
            unread: list[str] = []
            for _, job_id, f in pool:
                if f.read:
                    listed += 1
                else:
                    unread.append(job_id)
                if listed + len(unread) >= need:
                    break
            if not unread:
                return listed
            await self._read(found, unread, check)

    async def _read(self, found: dict[str, _Found], ids: list[str], check: _Check) -> None:
        """Read the records of ``ids``; keep each job whose record matches one of its
        entries; remove stale entries."""
        recs = await self.store.read_jobs(ids)
        stale: list[_Entry] = []
        missing: list[str] = []
        for job_id, rec in zip(ids, recs, strict=True):
            f = found[job_id]
            f.read = True
            if rec is None:
                missing.append(job_id)
                continue
            key = check.key_of(rec.job)
            for entry in f.entries:
                if entry.key == key:
                    if check.keep(rec.job):
                        f.job = rec.job
                        f.birth = rec.birth or entry.birth
                elif _stale(entry, rec.revision):
                    stale.append(entry)
        if missing:
            # Deleted (a deletion marker newer than the entry), or an insert on its way.
            got = await asyncio.gather(
                *(self.store.entry(names.JOBS_BUCKET, names.job_key(j)) for j in missing)
            )
            for job_id, (_, revision) in zip(missing, got, strict=True):
                stale.extend(e for e in found[job_id].entries if _stale(e, revision))
        if stale:
            await asyncio.gather(*(self.remove(e.key, e.seq) for e in stale))


_STATES = frozenset(s.value for s in JobState)


def listable(state: str | None, queue: str | None, job_type: str | None) -> bool:
    """Whether a stored job can have these values (a value from a URL may be anything)."""
    if state is not None and state not in _STATES:
        return False
    return names.index_filter(state, queue, job_type) is not None


def _parse(msg: Msg) -> tuple[str, _Entry] | None:
    """``(job id, entry)`` of a scanned message; ``None`` for a deletion marker."""
    headers = msg.headers or {}
    if headers.get(names.KV_OPERATION):
        return None
    parsed = names.parse_index_key(headers.get(names.DIRECT_SUBJECT, "")[len(_PREFIX) :])
    if parsed is None:
        return None
    seq = int(headers.get(names.DIRECT_SEQUENCE, "0"))
    stamp = _stamp(headers.get(names.DIRECT_TIMESTAMP, ""))
    data = msg.data or b""
    birth = int(data) if data.isdigit() else seq
    return parsed[1], _Entry(key=f"{parsed[0]}.{parsed[1]}", seq=seq, birth=birth, stamp=stamp)


def _removal(key: str, seq: int) -> Op:
    """A deletion marker of entry ``key`` that expects its sequence ``seq`` and expires a
    second later (:data:`MARKER_TTL`): a plain pipelined publish. (A purge of the subject
    below ``seq + 1`` would leave nothing at all, but a JetStream API request costs the
    server several times a publish; key-value streams deny deleting a message by sequence.)"""
    headers = {
        names.KV_OPERATION: "DEL",
        names.MSG_TTL: MARKER_TTL,
        names.EXPECTED_SUBJECT_SEQUENCE: str(seq),
    }
    return _PREFIX + key, b"", headers


def _stamp(text: str) -> datetime | None:
    """The time of a direct-get answer (RFC 3339 with nanoseconds), to the microsecond."""
    head, dot, frac = text.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(head + (dot + frac[:6] if dot else "")).replace(tzinfo=UTC)
    except ValueError:
        return None


def _stale(entry: _Entry, revision: int) -> bool:
    """Whether an entry whose record does not match it can go: the record (or its deletion
    marker) was written after the entry, so no write announced by the entry can still land;
    or the entry is older than :data:`GRACE`."""
    if revision > entry.seq:
        return True
    return entry.stamp is not None and datetime.now(UTC) - entry.stamp > GRACE
