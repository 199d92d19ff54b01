"""Writing job and workflow records: inserts, compare-and-swap updates, the dead letter.

Every write publishes what it makes true *before* the record write (:meth:`JobWriter.announce`):
a ready hint when the job enters ``available``, a schedule when its timer deadline moves. A
crash between the two leaves a hint or timer that finds nothing to do, never a job without
one (the argument, crash point by crash point, is in ``docs/nats-design.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import attrs

from ojs_core.backend import ConflictFn, JobFn, UniqueConflict
from ojs_core.errors import (
    ConflictError,
    DuplicateJobError,
    NotFoundError,
    OJSError,
    PayloadTooLargeError,
)
from ojs_core.lifecycle import timer_deadline
from ojs_core.model import Job, Workflow
from ojs_core.states import JobState
from ojs_core.tenancy import shard_of
from ojs_core.versioning import lane_of

from . import names
from .arrivals import Arrivals
from .connection import Connection
from .hints import hint_op
from .index import Index, moved
from .jetstream import MAX_BATCH, UNKNOWN_OUTCOME, Op, WrongSequenceError, commit, last_values
from .queues import Queues
from .records import CAS_ATTEMPTS, TOMBSTONE_TTL, WORKFLOW, JobRecord, RecordStore
from .stats import Counters
from .timers import Timers, schedule_op

__all__ = ["JobWriter", "WritePlan", "is_dead", "plan_write", "timer_to_arm"]

S = JobState


def is_dead(job: Job) -> bool:
    """Whether the job is in the dead letter (and so carries a ``d.`` marker)."""
    return job.dead_letter and job.state is S.DISCARDED


#: A deadline at least this far ahead is taken as not fired yet (:func:`_fires_first`).
_PENDING_MARGIN = timedelta(seconds=1)


def _fires_first(armed: datetime | None, deadline: datetime) -> bool:
    """Whether the schedule armed for ``armed`` can stand for a later ``deadline``: it fires
    first, finds the job's deadline later, and arms it then (``Timers.due_jobs``). A heartbeat
    that pushes the visibility deadline on, or an ack that leaves a retention deadline days
    away, then writes no schedule: the write is moved off the hot path to the moment the
    earlier schedule fires (at most one per visibility period)."""
    return armed is not None and armed < deadline and armed > datetime.now(UTC) + _PENDING_MARGIN


def timer_to_arm(before: Job | None, after: Job) -> datetime | None:
    """The deadline a write of ``after`` over ``before`` must arm first, or ``None``: none
    due, the same one armed, or an armed one that fires first (and re-arms then)."""
    deadline = timer_deadline(after)
    if deadline is None:
        return None
    armed = timer_deadline(before) if before is not None else None
    if deadline == armed or _fires_first(armed, deadline):
        return None
    return deadline


def timer_to_arm_after(before: Job, after: Job, own: bool) -> datetime | None:
    """The deadline a write of ``after`` arms once its record landed, or ``None``: a job that
    finishes while its pending schedule is its own (``own``, ``Timers.owns``) and fires first
    replaces that schedule with its retention, so that it never fires (one message with the
    ack, where the schedule left to fire costs a delivery, a record read, a re-arm and an ack).
    After the record, not before: until then the earlier schedule stays the backstop of the
    version stored (a crash in between leaves it to fire and re-arm, as before). A schedule a
    claim batch shares fires once for all its jobs and re-arms their retention in shared
    schedules: the ack leaves it."""
    if not (own and after.state.terminal):
        return None
    deadline = timer_deadline(after)
    armed = timer_deadline(before)
    if deadline is None or deadline == armed or not _fires_first(armed, deadline):
        return None
    return deadline


@attrs.frozen
class WritePlan:
    """What a write of a new version over a stored one needs besides the record itself."""

    #: The record's epoch after the write (one more when the job becomes available).
    epoch: int
    #: Whether the job enters ``available``: a ready hint is published first.
    entered: bool
    #: Whether the job moves in the index (state, queue, type): a new entry is stored first.
    changed: bool
    #: The timer deadline to arm first (:func:`timer_to_arm`), or ``None``.
    deadline: datetime | None
    #: Whether the job enters or leaves the dead letter: its marker is written with it.
    dead_changed: bool
    #: The timer deadline to arm once the record landed (:func:`timer_to_arm_after`).
    then: datetime | None = None

    @property
    def announcing(self) -> bool:
        """Whether a hint or a timer is published before the record."""
        return self.entered or self.deadline is not None

    @property
    def plain(self) -> bool:
        """Whether the write needs only a new index entry and the record (most acks)."""
        return self.changed and not self.announcing and not self.dead_changed


def plan_write(rec: JobRecord, after: Job, own: bool = False) -> WritePlan:
    """What writing ``after`` over the stored ``rec`` needs (``own``: see
    :func:`timer_to_arm_after`)."""
    before = rec.job
    entered = after.state is S.AVAILABLE and before.state is not S.AVAILABLE
    return WritePlan(
        epoch=rec.epoch + 1 if entered else rec.epoch,
        entered=entered,
        changed=moved(before, after),
        deadline=timer_to_arm(before, after),
        dead_changed=is_dead(before) != is_dead(after),
        then=timer_to_arm_after(before, after, own),
    )


def _removal_due(job: Job) -> bool:
    """Whether ``job`` is a terminal job whose retention has ended (the service removes it)."""
    until = job.retain_until
    return until is not None and job.state.terminal and until <= datetime.now(UTC)


def _first_epoch(job: Job) -> int:
    return 1 if job.state is S.AVAILABLE else 0


class JobWriter:
    """The write path of job records, with their hints, timers, markers, index entries and
    counters."""

    def __init__(
        self,
        conn: Connection,
        store: RecordStore,
        queues: Queues,
        timers: Timers,
        counters: Counters,
        arrivals: Arrivals,
        index: Index,
    ) -> None:
        self.index = index
        self.conn = conn
        self.store = store
        self.queues = queues
        self.timers = timers
        self.counters = counters
        self.arrivals = arrivals

    # -- announcing ------------------------------------------------------------------------

    async def announce(
        self, after: Job, epoch: int, new_epoch: int, deadline: datetime | None
    ) -> None:
        """Publish what a write makes true *before* the write: the ready hint of a job that
        becomes available (``new_epoch``), the timer ``deadline`` (see :func:`timer_to_arm`)."""
        pubs: list[Awaitable[list[int]]] = []
        hinting = new_epoch != epoch
        if hinting:
            await self.queues.ensure_ready(
                after.queue, after.priority, lane_of(after), shard_of(after)
            )
            pubs.append(self.conn.commit([hint_op(after, new_epoch)]))
        if deadline is not None:
            pubs.append(self.conn.commit([schedule_op(after.id, deadline)]))
            self.timers.soon_add(after.id, deadline)
            if after.state is S.ACTIVE:
                self.timers.armed_own(after.id)
        if len(pubs) == 1:
            stored = [await pubs[0]]
        elif pubs:
            stored = await asyncio.gather(*pubs)
        if hinting:
            level = (after.queue, after.priority, lane_of(after), shard_of(after))
            self.queues.hinted(*level, seq=stored[0][0])

    async def announce_new(self, jobs: Sequence[Job]) -> None:
        """Hints and timers for new jobs, written in order, a batch per stream (pipelined)."""
        available = [j for j in jobs if j.state is S.AVAILABLE]
        for queue, priority, lane, shard in dict.fromkeys(
            (j.queue, j.priority, lane_of(j), shard_of(j)) for j in available
        ):
            await self.queues.ensure_ready(queue, priority, lane, shard)
        ops: list[Op] = [hint_op(j, 1) for j in available]
        for job in jobs:
            deadline = timer_deadline(job)
            if deadline is not None:
                ops.append(schedule_op(job.id, deadline))
                self.timers.soon_add(job.id, deadline)
        # Not atomic (an atomic batch costs the server ~1.7 ms): a hint or timer written for a
        # job whose record then is not written is harmless, and the records wait for all.
        seqs = await self.conn.publish_all(ops)
        for job, seq in zip(available, seqs, strict=False):  # the hints come first
            self.queues.hinted(job.queue, job.priority, lane_of(job), shard_of(job), seq=seq)

    # -- inserting -------------------------------------------------------------------------

    async def insert(
        self, jobs: Sequence[Job], is_conflict: ConflictFn | None = None
    ) -> list[UniqueConflict]:
        """All or nothing: the records and unique-key holders (an atomic batch for several)."""
        seen: set[str] = set()
        for job in jobs:
            if job.id in seen:  # would fail every compare-and-swap below: refuse before writing
                raise DuplicateJobError(
                    f"A job with id '{job.id}' appears twice in the batch",
                    details={"job_id": job.id},
                )
            seen.add(job.id)
        store = self.store
        #: Revisions the job keys must be at: 0 (never written) unless a fence marker is there.
        expect: dict[str, int] = {}
        for _ in range(CAS_ATTEMPTS):
            keys = list(dict.fromkeys(j.unique_key for j in jobs if j.unique_key))
            holders: dict[str, tuple[Job | None, int]] = {}
            got_all = (  # most enqueues have no unique key: no gather (a future) for nothing
                await asyncio.gather(
                    *(store.entry(names.JOBS_BUCKET, names.unique_key(k)) for k in keys)
                )
                if keys
                else []
            )
            for key, (value, revision) in zip(keys, got_all, strict=True):
                # A removed holder leaves a marker: the next holder's write expects its revision.
                rec = await store.read_job(value.decode()) if value is not None else None
                holders[key] = (rec.job if rec else None, revision)
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
            if len(jobs) + len(keys) > MAX_BATCH:
                raise PayloadTooLargeError(
                    f"an atomic enqueue on NATS holds at most {MAX_BATCH} records "
                    f"(jobs plus unique keys); this one needs {len(jobs) + len(keys)}"
                )
            # Index entries first (their sequences are the births the records keep), with
            # the hints and timers.
            entries, _ = await asyncio.gather(self.index.add_new(jobs), self.announce_new(jobs))
            ops = [
                store.job_op(job, _first_epoch(job), expect.get(job.id, 0), birth, entry)
                for job, (birth, entry) in zip(jobs, entries, strict=True)
            ]
            for key in keys:
                ops.append(
                    (
                        names.kv_subject(names.JOBS_BUCKET, names.unique_key(key)),
                        local[key].id.encode(),
                        {names.EXPECTED_SUBJECT_SEQUENCE: str(holders[key][1])},
                    )
                )
            try:
                seqs = await self.conn.commit(ops)
            except WrongSequenceError:
                # A job exists (refused), a job key holds a fence marker (expected next time),
                # or a unique-key holder changed meanwhile: decide again.
                self.index.unlink(*(seq for pair in entries for seq in pair))
                await self._refuse_existing(jobs, expect)
                continue
            except UNKNOWN_OUTCOME:
                # All or nothing: the first record tells whether the whole batch landed.
                first = jobs[0]
                landed = await store.settle_unknown(first.id, ops[0][1], expect.get(first.id, 0))
                if landed is None:
                    self.index.unlink(*(seq for pair in entries for seq in pair))
                    raise
                seqs = list(range(landed, landed + len(ops)))
            arrivals = self.arrivals
            for job, seq, (birth, entry), op in zip(jobs, seqs, entries, ops, strict=False):
                store.remember(JobRecord(job, _first_epoch(job), seq, birth, entry))
                self.counters.count(None, job)
                if job.state is S.AVAILABLE:
                    arrivals.carry(job.queue, job.id, seq, op[1])
            await arrivals.notify(j.queue for j in jobs if j.state is S.AVAILABLE)
            return []
        raise ConflictError("enqueue lost too many races on unique keys; try again")

    async def _refuse_existing(self, jobs: Sequence[Job], expect: dict[str, int]) -> None:
        """After a lost insert: raise :class:`DuplicateJobError` for a job that exists; note
        the revision of every job key that holds a fence marker (no job, but a revision)."""
        entries = await asyncio.gather(
            *(self.store.entry(names.JOBS_BUCKET, names.job_key(j.id)) for j in jobs)
        )
        for job, (value, revision) in zip(jobs, entries, strict=True):
            if value is not None:
                raise DuplicateJobError(
                    f"A job with id '{job.id}' already exists", details={"job_id": job.id}
                )
            expect[job.id] = revision

    # -- updating --------------------------------------------------------------------------

    async def write(self, rec: JobRecord, after: Job) -> JobRecord:
        """Store ``after`` over the version ``rec``, announced first; raises
        :class:`WrongSequenceError` when the record changed meanwhile.

        When the job moves to another state (queue, type), its new index entry is stored
        first (the record names it); the entry of the old version is removed once the write
        landed, the new one if it did not."""
        epoch, revision = rec.epoch, rec.revision
        plan = plan_write(rec, after, self.timers.owns(after.id))
        changed, new_epoch = plan.changed, plan.epoch
        if changed and plan.announcing:
            _, entry = await asyncio.gather(
                self.announce(after, epoch, new_epoch, plan.deadline),
                self.index.add(after, rec.birth),
            )
        elif changed:  # most acks: only the new index entry (no task for a gather)
            entry = await self.index.add(after, rec.birth)
        else:
            if plan.announcing:
                await self.announce(after, epoch, new_epoch, plan.deadline)
            entry = rec.entry
        ops = [self.store.job_op(after, new_epoch, revision, rec.birth, entry)]
        try:
            if plan.dead_changed:
                subject = names.kv_subject(names.JOBS_BUCKET, names.dead_key(after.id))
                if is_dead(after):
                    ops.append((subject, b"1", {}))
                else:
                    ops.append(
                        (subject, b"", {names.KV_OPERATION: "DEL", names.MSG_TTL: TOMBSTONE_TTL})
                    )
                seqs = await self.conn.commit(ops)  # atomic: record and marker
            else:
                seqs = await self.conn.commit(ops)
        except WrongSequenceError:
            self.not_stored(rec, entry)
            raise
        except UNKNOWN_OUTCOME:
            landed = await self.store.settle_unknown(after.id, ops[0][1], revision)
            if landed is None:
                self.not_stored(rec, entry)
                raise WrongSequenceError("the write timed out and was fenced") from None
            seqs = [landed]
        new = self.stored(rec, JobRecord(after, new_epoch, seqs[0], rec.birth, entry))
        if plan.then is not None:
            await self.arm_after(after.id, plan.then)
        if plan.entered:
            self.arrivals.carry(after.queue, after.id, new.revision, ops[0][1])
            await self.arrivals.notify([after.queue])
        return new

    async def arm_after(self, job_id: str, deadline: datetime) -> None:
        """Arm the job's schedule for ``deadline`` after its record landed (a plan's ``then``),
        without waiting for the server's answer: a lost one leaves the earlier schedule to fire
        and re-arm it."""
        subject, data, headers = schedule_op(job_id, deadline)
        with contextlib.suppress(Exception):
            await self.conn.nc.publish(subject, data, headers=headers)

    def stored(self, rec: JobRecord, new: JobRecord) -> JobRecord:
        """Note that ``new`` replaced ``rec`` in the store: the superseded index entry goes,
        the new version is remembered (for the next compare-and-swap) and counted."""
        if new.entry != rec.entry:
            self.index.unlink(rec.entry)
        self.timers.stored(new.job)
        self.store.remember(new)
        self.counters.count(rec.job, new.job)
        return new

    def not_stored(self, rec: JobRecord, entry: int) -> None:
        """Note that a write over ``rec`` naming index ``entry`` certainly did not land: the
        cached version is stale, and a new entry written for it goes."""
        self.store.forget(rec.job.id)
        if entry != rec.entry:
            self.index.unlink(entry)

    async def update(self, job_id: str, fn: JobFn) -> tuple[Job, Job]:
        """Compare-and-swap on the record's revision, retried on contention.

        A write that loses its compare-and-swap may already have announced a timer: the
        job's one schedule subject then holds a deadline of a version that was never stored.
        So after a lost write, whatever the outcome, the schedule is armed again for the
        version that is stored (:meth:`_rearm`)."""
        store = self.store
        cached = True
        lost = False
        try:
            for _ in range(CAS_ATTEMPTS):
                rec = store.take_fresh(job_id) if cached else None
                from_cache = False  # a fresh version is as good as a read
                if rec is None:
                    rec = store.cached_job(job_id) if cached else None
                    from_cache = rec is not None
                cached = False
                if rec is None:
                    rec = await store.read_job(job_id)
                if rec is None:
                    raise NotFoundError("job", job_id)
                before = rec.job
                mine = attrs.evolve(before)  # what fn sets on its argument never reaches the cache
                # A decision not to write (an error, or no change) is only taken on the stored
                # version: a cached one may be older (another replica moved the job on), and a
                # heartbeat or timer judged on it would silently do nothing.
                try:
                    after = fn(mine)
                except OJSError:
                    if from_cache:
                        continue
                    raise
                if after is mine:
                    if from_cache:
                        continue
                    if lost:
                        await self._rearm(before)
                    if _removal_due(before):
                        # The service removes it next: the timer is done once it is removed
                        # (a crash in between redelivers it), and the removal need not read.
                        store.put_fresh(rec)
                    else:
                        self.timers.done(job_id)
                    return before, before
                try:
                    await self.write(rec, after)
                except WrongSequenceError:
                    lost = True
                    continue
                if lost:
                    await self._rearm(after)
                self.timers.done(job_id)
                return before, after
        except OJSError:
            if lost:
                with contextlib.suppress(OJSError, *UNKNOWN_OUTCOME):
                    current = await store.read_job(job_id)
                    if current is not None:
                        await self._rearm(current.job)
            raise
        raise ConflictError(f"job {job_id} is being changed concurrently; try again")

    async def _rearm(self, job: Job) -> None:
        """Arm the job's timer for ``job`` (the stored version) again."""
        deadline = timer_deadline(job)
        if deadline is not None:
            await self.conn.commit([schedule_op(job.id, deadline)])
            self.timers.soon_add(job.id, deadline)

    async def delete(self, job_id: str, only_if: Callable[[Job], bool] | None = None) -> bool:
        """Remove a job (if ``only_if`` holds for the stored version) by a deletion marker that
        expects the version checked; then its dead-letter marker and its unique-key holder.
        Every marker expires by itself, so a removal leaves nothing behind."""
        store = self.store
        for _ in range(CAS_ATTEMPTS):
            rec = store.take_fresh(job_id) or await store.read_job(job_id)
            if rec is None or (only_if is not None and not only_if(rec.job)):
                return False
            removed = await store.remove(names.JOBS_BUCKET, names.job_key(job_id), rec.revision)
            if removed:
                break
        else:
            raise ConflictError(f"job {job_id!r} is being changed concurrently; try again")
        assert removed is not None
        store.forget(job_id)
        self.timers.done(job_id)  # a retention timer, if this removal answers one
        self.counters.count(rec.job, None)
        self.index.unlink_record(rec)
        job = rec.job
        # What pointed at the job: a marker or holder left behind is skipped when read.
        with contextlib.suppress(OJSError, *UNKNOWN_OUTCOME):
            if is_dead(job):
                await store.remove(names.JOBS_BUCKET, names.dead_key(job_id))
            if job.unique_key is not None:
                key = names.unique_key(job.unique_key)
                value, revision = await store.entry(names.JOBS_BUCKET, key)
                if value is not None and value.decode() == job_id:
                    await store.remove(names.JOBS_BUCKET, key, revision)
        return True

    async def dead_letter_count(self) -> int:
        """How many jobs are in the dead letter: its live ``d.`` markers (the last message of
        each, no record read)."""
        subject = names.kv_subject(names.JOBS_BUCKET, f"{names.DEAD_PREFIX}>")
        msgs = await last_values(self.conn.nc, names.kv_stream(names.JOBS_BUCKET), subject)
        return sum(1 for m in msgs if not (m.headers or {}).get(names.KV_OPERATION))

    async def dead_letter(self, queue: str | None) -> list[Job]:
        """Every dead-letter job (of ``queue``), newest first, from the ``d.`` markers."""
        keys = await self.store.keys(names.JOBS_BUCKET, f"{names.DEAD_PREFIX}>")
        ids = [k[len(names.DEAD_PREFIX) :] for k in keys]
        jobs = [r.job for r in await self.store.read_jobs(ids) if r is not None and is_dead(r.job)]
        jobs = [j for j in jobs if queue is None or j.queue == queue]
        jobs.sort(key=lambda j: j.discarded_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return jobs

    # -- workflows -------------------------------------------------------------------------

    def _workflow_op(self, workflow: Workflow, expect: int) -> Op:
        return (
            names.kv_subject(names.JOBS_BUCKET, names.workflow_key(workflow.id)),
            WORKFLOW.encode(workflow),
            {names.EXPECTED_SUBJECT_SEQUENCE: str(expect)},
        )

    async def insert_workflow(self, workflow: Workflow, jobs: Sequence[Job]) -> None:
        """The workflow record and all its jobs in one atomic batch."""
        if len(jobs) + 1 > MAX_BATCH:
            raise PayloadTooLargeError(f"a workflow on NATS holds at most {MAX_BATCH - 1} jobs")
        entries, _ = await asyncio.gather(self.index.add_new(jobs), self.announce_new(jobs))
        ops = [self._workflow_op(workflow, 0)]
        ops.extend(
            self.store.job_op(j, _first_epoch(j), 0, birth, entry)
            for j, (birth, entry) in zip(jobs, entries, strict=True)
        )
        try:
            await commit(self.conn.nc, self.conn.js, ops)
        except WrongSequenceError:
            self.index.unlink(*(seq for pair in entries for seq in pair))
            raise DuplicateJobError("a job or workflow with one of these ids exists") from None
        for job in jobs:
            self.counters.count(None, job)
        await self.arrivals.notify(j.queue for j in jobs if j.state is S.AVAILABLE)

    async def list_workflows(self, limit: int, offset: int) -> tuple[list[Workflow], int]:
        """Newest first: workflow ids are UUIDv7, so key order is creation order. Costs the
        list of workflow keys (subjects only, filtered by the server) plus one batched read of
        the page; ``total`` counts keys, deleted records still holding a marker included."""
        keys = await self.store.keys(names.JOBS_BUCKET, f"{names.WORKFLOW_PREFIX}>")
        keys.sort(reverse=True)
        page = keys[offset : offset + limit]
        got = await asyncio.gather(*(self.store.get(names.JOBS_BUCKET, k) for k in page))
        return [WORKFLOW.decode(g[0]) for g in got if g], len(keys)

    async def get_workflow(self, workflow_id: str) -> Workflow | None:
        """The record or ``None``."""
        got = await self.store.get(names.JOBS_BUCKET, names.workflow_key(workflow_id))
        return WORKFLOW.decode(got[0]) if got else None

    async def update_workflow(
        self, workflow_id: str, fn: Callable[[Workflow], Workflow]
    ) -> tuple[Workflow, Workflow]:
        """Compare-and-swap on the workflow record."""
        key = names.workflow_key(workflow_id)
        before, after, _ = await self.store.swap_existing(
            names.JOBS_BUCKET, key, WORKFLOW, fn, "workflow", workflow_id
        )
        return before, after
