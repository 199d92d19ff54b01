"""The listing index: a stream of its own (``OJS_INDEX``) with few subjects.

A *birth entry* on ``ojs.ix.b.<queue>.<type>`` (data: the job id) is written once, before the
job's first record: its sequence is the job's *birth* (the record keeps it as ``b``), so birth
entries are in enqueue order, and listings without a state filter read them. An *index entry*
on ``ojs.ix.s.<state>.<queue>.<type>`` (data: the job id and its birth) says "this job is in
this state, queue and type"; the record keeps the sequence of its current one as ``x``, and
listings by state read them. One subject per state, queue and type, not per job: a listing's
wildcard filter matches few subjects, so the server answers it at the same cost with a
million stored jobs as with a thousand (per-job subjects made every wildcard request walk the
server's index of all matching subjects). The record is the truth, an entry a hint:

* An entry is published and **acknowledged before** the record write that names it, so a
  stored record always has its entry (a crash in between leaves an entry no record names,
  which listings skip and remove).
* The entry of the version a write replaced is removed **after** the write, off the hot path,
  by deleting its sequence (a JetStream API request sent without waiting for the answer). A
  crash or a lost removal leaves a stale entry: listings skip it and remove it then
  (:meth:`Index.page`). A write that lost its compare-and-swap removes the entry it added.
* Listings read entries newest first from the stream (server-side subject filters, batched
  direct gets), read the records of a page in one batched get, and keep the entries their
  record names. Order is by birth (insertion order, like the memory backend): every job born
  after sequence ``S`` has its current entry after ``S``, so scanning back to ``S`` finds all
  of them (see ``docs/nats-design.md``).
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
from .records import JobRecord, RecordStore

__all__ = ["Index", "listable", "moved"]

log = logging.getLogger("ojs.nats")

#: Entries read per batched direct get while scanning back.
SCAN_BATCH = 512
#: The first window scanned back is this many times the entries wanted (then it doubles).
_FIRST_WINDOW = 4
#: An entry that no record names, but which a write still on its way may yet name (it is
#: newer than the record's entry, or the record is missing), is left alone this long.
GRACE = timedelta(minutes=2)
#: Age classes of index entries: an entry written at least ``AGES[k]`` index sequences after
#: its job's birth (and less than ``AGES[k + 1]``) is of class ``k`` and goes on a subject of
#: its own. A listing by state that has covered every birth down to ``F`` needs the entries
#: of class ``k`` only from ``F + AGES[k]`` on: entries of old jobs that changed state
#: recently (a backlog worked off, a retry of old jobs) are not read for a page of young
#: ones. A job writes ~5 entries through its life, so the classes start at about 800,
#: 13,000 and 200,000 jobs' worth of activity.
AGES = (0, 4_096, 65_536, 1_048_576)
_STREAM = names.INDEX_STREAM
_DELETE = f"$JS.API.STREAM.MSG.DELETE.{_STREAM}"


def moved(before: Job, after: Job) -> bool:
    """Whether a write from ``before`` to ``after`` needs a new index entry."""
    return (before.state, before.queue, before.type) != (after.state, after.queue, after.type)


def _entry_data(job: Job, birth: int) -> bytes:
    return f"{job.id} {birth}".encode() if birth else job.id.encode()


@attrs.define
class _Entry:
    """An entry read by a listing."""

    seq: int
    #: The job's birth as the entry says (a first entry does not know it: its own sequence,
    #: a little later than the birth entry published just before it).
    birth: int
    birth_entry: bool
    stamp: datetime | None


@attrs.define
class _Found:
    """Per job: its entries seen so far, and its record once read."""

    entries: list[_Entry] = attrs.field(factory=list)
    read: bool = False
    job: Job | None = None
    birth: int = 0


@attrs.define
class _Scan:
    """A listing's scan back from the newest entries: what it reads (a subject filter and
    the age of each class), how far it got, what it found."""

    #: Per class: its subject filter, its age (:data:`AGES`), its newest entry's sequence.
    classes: list[tuple[str, int, int]]
    need: int
    keep: Callable[[Job], bool]
    found: dict[str, _Found] = attrs.field(factory=dict)
    #: Per class: its entries at sequences ``>= stops[k]`` were read.
    stops: list[int] = attrs.field(factory=list)
    #: Every job of the listing born at or above it is among :attr:`found`.
    frontier: int = 0
    width: int = 0

    def __attrs_post_init__(self) -> None:
        self.stops = [last + 1 for _, _, last in self.classes]
        # No job born after this can have an entry: its class's entries would be newer
        # than that class's newest.
        self.frontier = max((last - age + 1 for _, age, last in self.classes if last), default=0)
        self.width = max(_FIRST_WINDOW * self.need, SCAN_BATCH)

    def add(self, msg: Msg) -> None:
        """Note a scanned entry."""
        parsed = _parse(msg)
        if parsed is not None:
            self.found.setdefault(parsed[0], _Found()).entries.append(parsed[1])


class Index:
    """Index entries: added before each record write that needs one, removed after, read by
    listings."""

    def __init__(self, conn: Connection, store: RecordStore) -> None:
        self.conn = conn
        self.store = store
        #: Sequences of entries to remove.
        self._unlinks: list[int] = []
        #: The highest sequence of the index stream this process has seen: at most the
        #: sequence the next entry gets, so an entry is never put in a class older than it.
        self.tail = 0
        self._task: asyncio.Task[None] | None = None

    # -- writing ---------------------------------------------------------------------------

    def entry_op(self, job: Job, birth: int) -> Op:
        """The write of ``job``'s index entry (``birth`` 0: this is its first entry)."""
        # A replica that has not seen the birth's sequence yet calls the entry young.
        age = max(0, self.tail - birth) if birth else 0
        subject = names.state_entry_subject(job.state.value, job.queue, job.type, _age_class(age))
        return subject, _entry_data(job, birth), {}

    async def add(self, job: Job, birth: int) -> int:
        """Store ``job``'s index entry; its sequence (the record about to be written names
        it)."""
        seq = await self.conn.pipe.publish(*self.entry_op(job, birth))
        self.tail = max(self.tail, seq)
        return seq

    async def add_each(self, pairs: Sequence[tuple[Job, int]]) -> list[int | BaseException]:
        """:meth:`add` for many ``(job, birth)``, pipelined; per entry its sequence or what
        failed."""
        outcomes = await self.conn.pipe.publish_each([self.entry_op(j, b) for j, b in pairs])
        self.tail = max([self.tail, *(o for o in outcomes if isinstance(o, int))])
        return outcomes

    async def add_new(self, jobs: Sequence[Job]) -> list[tuple[int, int]]:
        """The birth entry and the first index entry of each new job, pipelined in order;
        per job the sequences of both (the first is the birth the record keeps)."""
        ops: list[Op] = []
        for job in jobs:
            ops.append((names.birth_entry_subject(job.queue, job.type), job.id.encode(), {}))
            ops.append(self.entry_op(job, 0))
        outcomes = await self.conn.pipe.publish_each(ops)
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            self.unlink(*(o for o in outcomes if isinstance(o, int)))
            raise failed
        seqs = [o for o in outcomes if isinstance(o, int)]
        self.tail = max(self.tail, *seqs) if seqs else self.tail
        return list(zip(seqs[0::2], seqs[1::2], strict=True))

    def unlink_record(self, rec: JobRecord) -> None:
        """Remove a deleted job's entries soon: its birth entry and its index entry."""
        self.unlink(rec.birth, rec.entry)

    def unlink(self, *seqs: int) -> None:
        """Remove the entries of these sequences soon (0: none)."""
        self._unlinks.extend(s for s in seqs if s)
        if self._unlinks and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._unlinks:
            batch, self._unlinks = self._unlinks, []
            with contextlib.suppress(Exception):
                await self.remove(batch)

    async def remove(self, seqs: Sequence[int]) -> None:
        """Delete the entries of these sequences, without waiting for the answers (a lost
        removal leaves a stale entry, which listings repair)."""
        lazy = self.conn.lazy  # with the next write (ojs_nats.lazy): nobody waits for them
        for seq in seqs:
            await lazy.publish(_DELETE, b'{"seq":%d,"no_erase":true}' % seq)

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

        Scans entries back from the newest match in windows that grow, reading the records
        of the candidates as they become eligible, until ``offset + limit`` matching jobs
        born inside the scanned range are known (or the start is reached). By state, each
        age class is read only as far as it can hold jobs born inside the range
        (:data:`AGES`)."""
        if state is None:  # birth entries: in birth order already, never rewritten
            subject = names.birth_filter(queue, job_type)
            filters = [(subject, 0)] if subject else []
        else:
            subject = names.index_filter(state, queue, job_type)
            filters = (
                [(_class_filter(subject, k), age) for k, age in enumerate(AGES)] if subject else []
            )
        if not filters or not listable(state, queue, job_type) or limit <= 0:
            return []
        need = offset + limit
        lasts = await asyncio.gather(*(self._last_seq(f) for f, _ in filters))
        classes = [(f, age, last) for (f, age), last in zip(filters, lasts, strict=True)]
        scan = _Scan(classes, need, keep)
        while scan.frontier > 1:
            frontier = max(1, scan.frontier - scan.width)
            for k, (sub, age, _) in enumerate(scan.classes):
                start = max(1, frontier + age)
                if start < scan.stops[k]:
                    for msg in await self._scan(sub, start, scan.stops[k]):
                        scan.add(msg)
                    scan.stops[k] = start
            scan.frontier = frontier
            if await self._settle(scan, frontier if frontier > 1 else 0) >= need:
                break
            scan.width *= 2
        live = [f for f in scan.found.values() if f.job is not None]
        live.sort(key=lambda f: f.birth, reverse=True)
        return [f.job for f in live[offset:need] if f.job is not None]

    async def recent(
        self,
        state: str,
        queue: str | None,
        job_type: str | None,
        keep: Callable[[Job], bool],
        offset: int,
        limit: int,
    ) -> list[Job]:
        """Jobs ``offset .. offset + limit`` of a listing by state in the order they entered
        it, latest first (the dead letter: the latest discarded first). Entries are in that
        order in the stream already: the scan reads them back from the newest in windows, and
        the records of each window newest first, only as far as the page reaches."""
        subject = names.index_filter(state, queue, job_type)
        if subject is None or not listable(state, queue, job_type) or limit <= 0:
            return []
        need = offset + limit
        stop = await self._last_seq(subject) + 1
        width = max(_FIRST_WINDOW * need, SCAN_BATCH)
        listed: list[Job] = []
        now = datetime.now(UTC)
        while stop > 1 and len(listed) < need:
            start = max(1, stop - width)
            entries = [p for m in await self._scan(subject, start, stop) if (p := _parse(m))]
            entries.reverse()
            while entries and len(listed) < need:
                chunk, entries = entries[: need - len(listed)], entries[need - len(listed) :]
                recs = await self.store.read_jobs([job_id for job_id, _ in chunk])
                stale: list[int] = []
                for (_, entry), rec in zip(chunk, recs, strict=True):
                    if rec is not None and rec.entry == entry.seq:
                        if keep(rec.job):
                            listed.append(rec.job)
                    elif _stale(entry, rec, now):
                        stale.append(entry.seq)
                if stale:
                    await self.remove(stale)
            stop = start
            width *= 2
        return listed[offset:need]

    async def _last_seq(self, subject: str) -> int:
        """The sequence of the newest entry matching ``subject`` (0: none), where the scan
        starts."""
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

    async def _settle(self, scan: _Scan, frontier: int) -> int:
        """How many listed jobs born at or after ``frontier`` are known, up to ``need``.

        Walks the candidates born since ``frontier`` newest first and reads the records of
        those not read yet, only as far as ``need`` listed jobs reach: an early page reads
        about a page of records however many entries the window held."""
        found, need = scan.found, scan.need
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
            await self._read(found, unread, scan.keep)

    async def _read(
        self, found: dict[str, _Found], ids: list[str], keep: Callable[[Job], bool]
    ) -> None:
        """Read the records of ``ids``; keep each job whose record names one of its entries;
        remove stale entries."""
        recs = await self.store.read_jobs(ids)
        stale: list[int] = []
        now = datetime.now(UTC)
        for job_id, rec in zip(ids, recs, strict=True):
            f = found[job_id]
            f.read = True
            for entry in f.entries:
                named = 0 if rec is None else rec.birth if entry.birth_entry else rec.entry
                if rec is not None and entry.seq == named:
                    if keep(rec.job):
                        f.job = rec.job
                        f.birth = rec.birth or entry.birth
                elif _stale(entry, rec, now):
                    stale.append(entry.seq)
        if stale:
            await self.remove(stale)


_STATES = frozenset(s.value for s in JobState)


def _age_class(age: int) -> int:
    """The class of an entry written ``age`` index sequences after its job's birth."""
    return next(k for k in range(len(AGES) - 1, -1, -1) if age >= AGES[k])


def _class_filter(subject: str, k: int) -> str:
    """The filter of the entries of class ``k`` of a listing's filter ``subject`` (whose last
    token, the age class, is ``*``)."""
    return subject[:-1] + str(k)


def listable(state: str | None, queue: str | None, job_type: str | None) -> bool:
    """Whether a stored job can have these values (a value from a URL may be anything)."""
    if state is not None and state not in _STATES:
        return False
    return names.index_filter(state, queue, job_type) is not None


def _parse(msg: Msg) -> tuple[str, _Entry] | None:
    """``(job id, entry)`` of a scanned message; ``None`` for something else."""
    headers = msg.headers or {}
    seq = int(headers.get(names.DIRECT_SEQUENCE, "0"))
    job_id, _, birth = (msg.data or b"").decode(errors="replace").partition(" ")
    if not seq or not job_id:
        return None
    stamp = _stamp(headers.get(names.DIRECT_TIMESTAMP, ""))
    if names.is_birth_subject(headers.get(names.DIRECT_SUBJECT, "")):
        return job_id, _Entry(seq=seq, birth=seq, birth_entry=True, stamp=stamp)
    born = int(birth) if birth.isdigit() else seq
    return job_id, _Entry(seq=seq, birth=born, birth_entry=False, stamp=stamp)


def _stamp(text: str) -> datetime | None:
    """The time of a direct-get answer (RFC 3339 with nanoseconds), to the microsecond."""
    head, dot, frac = text.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(head + (dot + frac[:6] if dot else "")).replace(tzinfo=UTC)
    except ValueError:
        return None


def _stale(entry: _Entry, rec: JobRecord | None, now: datetime) -> bool:
    """Whether an entry that its job's record does not name can go.

    A record's birth never changes, so a birth entry it does not name is an orphan (of an
    insert that failed). Entries of a job are added in the order of its writes, so an index
    entry older than the one its record names was replaced. An entry newer than the
    record's, or of a job with no record, may belong to a write still on its way: it goes once
    older than :data:`GRACE`."""
    if rec is not None and (entry.birth_entry or entry.seq < rec.entry):
        return True
    return entry.stamp is not None and now - entry.stamp > GRACE
