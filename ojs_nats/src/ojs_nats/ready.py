"""Ready hints and claiming: how a fetch takes available jobs off ``OJS_READY``.

A *hint* ``"<id> <epoch>"`` on ``ojs.ready.<queue>.<priority>`` says that job ``id`` became
available for the ``epoch``-th time; it is published before the record write it announces.
A fetch pulls hints from each queue's priority levels, highest first, and claims each job by
compare-and-swap on its record: of two claimers holding one hint (after an ack-wait expiry),
only one swap succeeds. A hint whose job moved on is stale and dropped.

Claiming is batched: one read per hint (usually from the version cache), the visibility
timers of every claim published together, then every claim as its own compare-and-swap, all in
flight together. A hint that cannot be claimed that way is decided carefully, one by one; one
whose job the read shows moved on is acknowledged at once.

A fetch woken by an arrival in the process that stored the job, and handed that job
(``ojs_nats.arrivals``), claims it first, the same way but without pulling its hint (one round
trip less); the hint is found stale later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import nats.errors
from nats.aio.msg import Msg

from ojs_core.backend import ActivateFn, AdmitFn
from ojs_core.fairness import Dispatch
from ojs_core.lifecycle import timer_deadline
from ojs_core.model import Job
from ojs_core.states import JobState

from . import names
from .batch_updates import write_each
from .connection import Connection
from .hints import parse_hint
from .jetstream import ConsumerGoneError, Op, WrongSequenceError
from .jobs import JobWriter
from .pulls import pull_now
from .queues import Queues
from .records import JobRecord, RecordStore
from .timers import Timers, schedule_op, schedule_ops

__all__ = ["Claimer"]

log = logging.getLogger("ojs.nats")
S = JobState

#: A hint whose record write has not landed after this many deliveries (about 15 s with the
#: backoff below) is fenced and dropped. The backoff doubles from 10 ms up to 5 s: a hint is
#: published before its record, and a fetch that pulls it in between (a busy worker does)
#: should find the record a moment later, not 200 ms later.
FENCE_AFTER_DELIVERIES = 12
HINT_BACKOFF_S = 0.01
_HINT_BACKOFF_MAX_S = 5.0
#: Pulls per priority level and fetch, at most.
MAX_PULLS = 32
#: The pauses before the no-wait pulls that follow an empty one on a level where a hint this
#: replica stored lately was not found yet (``Claimer._pull``): 15 ms, plus the pulls' round
#: trips (~17 ms in all against a local server).
HINT_LAG_RETRIES_S = (0.001, 0.002, 0.004, 0.008)
#: Careful claim attempts of one hint before it is set aside.
_CLAIM_ATTEMPTS = 8
#: A tenant shard found empty is not pulled again by an unscoped fetch of this replica for
#: this long while other shards of its level may have jobs (see docs/extensions.md).
EMPTY_SHARD_S = 0.1
#: Delay before a hint set aside comes back: not admitted now (rate limit), or it lost too
#: many races.
_RETRY_DELAY_S = 0.1


def _never_scheduled(rec: JobRecord) -> bool:
    """Whether the job of ``rec`` (available) never had a schedule of its own: available for
    the first time (epoch 1: not a retry, a requeue or a dead-letter retry, whose attempt
    counts may be 0 again), neither scheduled nor expiring. Only such jobs share their claim
    batch's visibility schedule."""
    job = rec.job
    return rec.epoch <= 1 and job.scheduled_at is None and job.expires_at is None


def _stale(rec: JobRecord | None, hint_epoch: int) -> bool:
    """Whether ``rec`` shows its job moved on from the availability a hint of ``hint_epoch``
    announced (a later epoch, or the same one and no longer available)."""
    return rec is not None and (
        rec.epoch > hint_epoch or (rec.epoch == hint_epoch and rec.job.state is not S.AVAILABLE)
    )


def _lane_order(entry: tuple[str | None, str]) -> tuple[bool, str, str]:
    """Consumers of a level in pull order: the unversioned lane first, then by lane."""
    lane, shard = entry
    return (lane is not None, lane or "", shard)


def _claimed(out: Sequence[Job]) -> bool:
    """Whether a fetch's results hold a claimed job (they also hold jobs it expired or a rate
    limit held back)."""
    return any(job.state is S.ACTIVE for job in out)


class Claimer:
    """Claims jobs from the ready hints for :meth:`NatsBackend.claim_jobs`."""

    def __init__(
        self,
        conn: Connection,
        store: RecordStore,
        queues: Queues,
        timers: Timers,
        writer: JobWriter,
    ) -> None:
        self.conn = conn
        self.store = store
        self.queues = queues
        self.timers = timers
        self.writer = writer
        #: Tunable for tests: when a hint whose write never landed is fenced and dropped.
        self.fence_after_deliveries = FENCE_AFTER_DELIVERIES
        self.hint_backoff_s = HINT_BACKOFF_S
        #: (queue, priority, shard) -> monotonic time until which it is taken as empty.
        self._empty: dict[tuple[str, int, str], float] = {}

    async def claim(
        self,
        queues: Sequence[str],
        count: int,
        activate: ActivateFn,
        handed: str | None = None,
    ) -> list[Job]:
        """Pull hints per queue, highest priority first; claim each by compare-and-swap.
        ``handed``: a job an arrival handed to this (woken) fetch, claimed first without its
        hint; when it is claimed, no hint is pulled.

        Jobs already claimed are returned even if a later pull or claim fails: they are
        ``active`` in the store, and dropping them would leave them to the visibility timeout
        at the cost of an attempt. The failure is raised only when nothing was claimed."""
        out: list[Job] = []
        try:
            if handed is not None and await self._claim_handed(handed, queues, activate, out):
                return out  # as soon as it can: the hints' pull can wait for the next fetch
            active = sum(1 for job in out if job.state is S.ACTIVE)
            await self._claim_into(out, queues, count - active, activate)
        except Exception:
            if not out:
                raise
            log.warning("fetch ended early after %d claims", len(out), exc_info=True)
        return out

    async def _claim_into(
        self, out: list[Job], queues: Sequence[str], count: int, activate: ActivateFn
    ) -> None:
        claimed = 0
        dispatch: Dispatch | None = getattr(activate, "dispatch", None)
        # Job versioning: a fetch pulls only the version lanes its worker accepts (each lane
        # has its own consumer), so it never pulls, and so never delays, another's jobs; the
        # same holds of tenant shards a fetch scoped to a tenant may not take.
        lanes_ok: Callable[[str], bool] | None = getattr(activate, "lanes", None)
        for queue in dict.fromkeys(queues):
            record = await self.queues.record(queue)
            if record is None or record.paused:
                continue
            levels: dict[int, list[tuple[str | None, str]]] = {}
            for level, found in record.ready_levels().items():
                kept = [
                    (lane, shard)
                    for lane, shard in found
                    if (lane is None or lanes_ok is None or lanes_ok(lane))
                    and (dispatch is None or dispatch.allows(shard))
                ]
                if kept:
                    levels[level] = sorted(kept, key=_lane_order)
            if (
                record.shards
                or record.shard_lanes
                or (dispatch is not None and not dispatch.allows(""))
            ):
                claimed += await self._claim_shards(
                    out, queue, levels, count - claimed, activate, dispatch
                )
                if claimed >= count:
                    return
                continue
            for priority, lane in (
                (level, lane) for level in sorted(levels, reverse=True) for lane, _ in levels[level]
            ):
                # Pull again only to move past hints that could not be claimed (stale, in
                # flight, rate-limited: set aside with a delay), or when the pull was full and
                # more may be waiting; bounded per call. Never to wait for jobs trickling in:
                # the ones claimed would wait with it (a fetch of 50 at 1k jobs/s took 45 ms).
                for _ in range(MAX_PULLS):
                    if claimed >= count:
                        break
                    wanted = count - claimed
                    try:
                        msgs = await self._pull(
                            queue, priority, wanted, lane, patient=lambda: not _claimed(out)
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

    async def _claim_handed(
        self, job_id: str, queues: Sequence[str], activate: ActivateFn, out: list[Job]
    ) -> bool:
        """Claim the job an arrival handed to this fetch, as :meth:`_store_claims` claims pulled
        ones; whether it is now ``active``. A job of a paused or tenant-sharded queue, or under
        a rate limit, is left to the pull (its order and admission apply to it)."""
        rec = await self.store.read_job(job_id, cached=True)
        if rec is None or rec.job.state is not S.AVAILABLE or rec.job.queue not in queues:
            return False  # claimed meanwhile (or unknown): nothing to do
        job = rec.job
        record = await self.queues.record(job.queue)
        if record is None or record.paused or record.shards or record.shard_lanes:
            return False
        needs: Callable[[Job], bool] | None = getattr(activate, "limited", None)
        if job.rate_limit is not None or (needs is not None and needs(job)):
            return False
        after = activate(job)
        if after is None:
            return False
        claimed: list[Job] = []
        await self._store_claims([(None, rec, after)], claimed, out, [])
        return any(j.state is S.ACTIVE for j in claimed)

    async def _claim_shards(
        self,
        out: list[Job],
        queue: str,
        levels: dict[int, list[tuple[str | None, str]]],
        count: int,
        activate: ActivateFn,
        dispatch: Dispatch | None,
    ) -> int:
        """Claim from a queue with tenant shards: levels highest first; within a level the
        shards (the dispatch allows: ``levels`` holds only those, and only the version lanes
        the fetch accepts), in the dispatch's (weighted round-robin) order, each pulled for
        its grant (the grants of a round pulled together; a shard's lanes one after another,
        unversioned first)."""
        claimed = 0
        clock = asyncio.get_running_loop().time
        for priority in sorted(levels, reverse=True):
            lanes: dict[str, list[str | None]] = {}
            for lane, shard in levels[priority]:
                lanes.setdefault(shard, []).append(lane)
            every = sorted(lanes)
            # An unscoped fetch skips shards found empty a moment ago (a scoped one has few).
            live = [s for s in every if self._empty.get((queue, priority, s), 0.0) <= clock()]
            if not live:
                live = every
            idle_rounds = 0
            while claimed < count and live and idle_rounds < MAX_PULLS:
                wanted = count - claimed
                grants = (
                    dispatch.grants((queue, priority), live, wanted)
                    if dispatch is not None
                    else [(live[0], wanted)]
                )
                results = await asyncio.gather(
                    *(
                        self._pull_claim(queue, priority, s, lanes[s], n, activate, out)
                        for s, n in grants
                    )
                )
                shrunk = False
                for (shard, n), (pulled, gained) in zip(grants, results, strict=True):
                    claimed += gained
                    if pulled < n:
                        live.remove(shard)  # drained for now
                        shrunk = True
                        if pulled == 0:
                            self._empty[(queue, priority, shard)] = clock() + EMPTY_SHARD_S
                            if dispatch is not None:
                                dispatch.idle((queue, priority), shard)
                    else:
                        self._empty.pop((queue, priority, shard), None)
                if not shrunk:
                    idle_rounds += 1
            if claimed >= count:
                break
        return claimed

    async def _pull_claim(
        self,
        queue: str,
        priority: int,
        shard: str,
        lanes: list[str | None],
        n: int,
        activate: ActivateFn,
        out: list[Job],
    ) -> tuple[int, int]:
        """Pull up to ``n`` hints of one shard, from its ``lanes`` in turn, and claim them:
        (hints pulled, claimed). A lane found short is dropped from ``lanes`` (drained for the
        rest of this fetch's turn at the level)."""
        pulled = claimed = 0
        for lane in list(lanes):
            if pulled >= n:
                break
            try:
                msgs = await self._pull(
                    queue, priority, n - pulled, lane, shard, patient=lambda: not _claimed(out)
                )
            except nats.errors.TimeoutError:
                msgs = []
            if len(msgs) < n - pulled:
                lanes.remove(lane)
            if msgs:
                pulled += len(msgs)
                claimed += await self._claim_batch(msgs, activate, out)
        return pulled, claimed

    async def _pull(
        self,
        queue: str,
        priority: int,
        wanted: int,
        lane: str | None = None,
        shard: str = "",
        *,
        patient: Callable[[], bool] = lambda: True,
    ) -> list[Msg]:
        """Hints of one level (lane, shard); its consumer is created again if the server
        reaped it.

        nats-server counts a stored message for a consumer a moment after it acknowledged the
        publish, and a no-wait pull in that moment answers "no messages": a fetch right after
        an enqueue through this replica came back empty (the consumer's pending count was 1
        when asked next). So when a no-wait pull finds nothing on a level where a hint this
        replica stored lately was not found by a pull yet, it looks again with a few no-wait
        pulls after the pauses of :data:`HINT_LAG_RETRIES_S` (not one held pull: the server
        hands a held pull each hint the moment it is stored, before its record is written),
        while ``patient()`` (no job claimed by the fetch yet: they would wait with it)."""
        level = (queue, priority, lane, shard)
        msgs = await self._pull_now(level, wanted)
        if not msgs and patient() and self.queues.hinted_lately(*level):
            for delay in HINT_LAG_RETRIES_S:
                await asyncio.sleep(delay)
                msgs = await self._pull_now(level, wanted)
                if msgs or not patient():
                    break
            else:
                self.queues.unfound(*level)
        if msgs:
            # The note stays until a pull reaches its hint (older ones may come first).
            self.queues.pulled(*level, msgs)
        return msgs

    async def _pull_now(self, level: tuple[str, int, str | None, str], wanted: int) -> list[Msg]:
        """One no-wait pull of a level; its consumer is created again if the server reaped
        it."""
        consumer = names.ready_consumer(*level)
        try:
            return await pull_now(self.conn.nc, names.READY_STREAM, consumer, wanted)
        except ConsumerGoneError:
            await self.queues.recreate(*level)
            return await pull_now(self.conn.nc, names.READY_STREAM, consumer, wanted)

    async def _claim_batch(self, msgs: Sequence[Msg], activate: ActivateFn, out: list[Job]) -> int:
        """Claim the jobs of many hints at once. Every job this changes is appended to
        ``out`` as soon as it is stored; returns how many of them are now ``active``."""
        parsed: list[tuple[Msg, str, int]] = []
        for msg in msgs:
            hint = parse_hint(msg)
            if hint is None:
                await msg.term()
            else:
                parsed.append((msg, *hint))
        recs = await self.store.read_jobs([p[1] for p in parsed], cached=True)
        # A hint whose job looks moved on is judged on the stored version (one batched read):
        # a cached or carried one is a guess, and a job deleted and created again with its id
        # starts at epoch 1 again.
        moved_on = [
            i for i, (rec, p) in enumerate(zip(recs, parsed, strict=True)) if _stale(rec, p[2])
        ]
        if moved_on:
            stored = await self.store.read_jobs([parsed[i][1] for i in moved_on])
            for i, rec in zip(moved_on, stored, strict=True):
                recs[i] = rec
        fast: list[tuple[Msg, JobRecord]] = []
        slow: list[Msg] = []
        batched: set[str] = set()
        lazy = self.conn.lazy
        for (msg, job_id, hint_epoch), rec in zip(parsed, recs, strict=True):
            if _stale(rec, hint_epoch):
                # The job moved on from the availability this hint announced (claimed by a
                # fetch it was handed to, usually): acknowledged at once.
                with contextlib.suppress(Exception):
                    if msg.reply:
                        await lazy.publish(msg.reply)
                continue
            if (
                rec is None
                or rec.epoch != hint_epoch
                or rec.job.state is not S.AVAILABLE
                or job_id in batched  # a duplicate hint: one key may be in a batch only once
            ):
                slow.append(msg)  # unknown, in flight or stale: decide carefully, one by one
                continue
            batched.add(job_id)
            fast.append((msg, rec))
        admit: AdmitFn | None = getattr(activate, "admit", None)
        needs: Callable[[Job], bool] | None = getattr(activate, "limited", None)
        limited = [
            rec.job
            for _, rec in fast
            if rec.job.rate_limit is not None or (needs is not None and needs(rec.job))
        ]
        if admit is not None and limited:
            await admit(limited)  # one compare-and-swap per rate-limit key
        writes: list[tuple[Msg, JobRecord, Job]] = []
        for msg, rec in fast:
            after = activate(rec.job)
            if after is None:
                await msg.nak(delay=_RETRY_DELAY_S)
                continue
            writes.append((msg, rec, after))
        claimed: list[Job] = []
        if writes:
            await self._store_claims(writes, claimed, out, slow)
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

    async def _store_claims(
        self,
        writes: Sequence[tuple[Msg | None, JobRecord, Job]],
        claimed: list[Job],
        out: list[Job],
        slow: list[Msg],
    ) -> None:
        """Store the claims ``writes`` (hint, version, claimed job; no hint: named by an
        arrival): claimed jobs to ``claimed`` and ``out``, the hints of failed ones to
        ``slow``, the others acknowledged."""
        shared: list[tuple[str, datetime]] = []
        timers: list[Op] = []
        for _, rec, after in writes:
            deadline = timer_deadline(after)
            if deadline is None:
                continue
            self.timers.soon_add(after.id, deadline)
            if _never_scheduled(rec):
                shared.append((after.id, deadline))
            else:
                # Its own schedule may still be pending (a promotion the local heap applied
                # before the server fired it, an expiry, an earlier attempt's visibility):
                # overwriting it spares a fired timer that would arm the deadline again.
                timers.append(schedule_op(after.id, deadline))
                self.timers.armed_own(after.id)
        # One schedule for the batch's visibility deadline (a job alone with its deadline
        # gets its own, on its own subject).
        batch_ops = schedule_ops(shared)
        own = {op[0] for op in batch_ops}
        for job_id, _ in shared:
            if names.timer_schedule_subject(job_id) in own:
                self.timers.armed_own(job_id)
            else:
                self.timers.disown(job_id)
        timers += batch_ops
        # Timers and index entries first (a visibility deadline must exist before the claim
        # it guards; a record names its entry), then each claim as its own compare-and-swap,
        # all in flight together: a lost race costs only its own job a careful retry.
        written = await write_each(self.writer, [(rec, after) for _, rec, after in writes], timers)
        if isinstance(written, BaseException):  # the index stream cannot take them now
            slow.extend(msg for msg, _, _ in writes if msg is not None)
            log.warning("claims postponed: index entries refused: %r", written)
            return
        for (msg, _, after), got in zip(writes, written, strict=True):
            if isinstance(got, BaseException):
                if msg is not None:
                    slow.append(msg)
                continue
            claimed.append(after)
            out.append(after)
            # A hint left un-acked is redelivered later and then found stale: harmless. So the
            # acknowledgement leaves with the next write (ojs_nats.lazy).
            with contextlib.suppress(Exception):
                if msg is not None and msg.reply:
                    await self.conn.lazy.publish(msg.reply)

    async def _claim_one(self, msg: Msg, activate: ActivateFn) -> Job | None:
        """Decide one hint on the stored record (the careful path)."""
        hint = parse_hint(msg)
        if hint is None:
            await msg.term()
            return None
        job_id, hint_epoch = hint
        for _ in range(_CLAIM_ATTEMPTS):
            rec = await self.store.read_job(job_id)
            if rec is None or rec.epoch < hint_epoch:
                # The write this hint announces has not landed yet, or never will. Wait for it
                # (the server redelivers, backing off); after a while make sure it never lands
                # (a fence) and drop the hint. Counting deliveries, not comparing clocks: an
                # early fence costs the late writer a retry, never a job.
                delivered = msg.metadata.num_delivered or 1
                if delivered < self.fence_after_deliveries:
                    await msg.nak(delay=self._hint_backoff(delivered))
                    return None
                if not await self.store.fence_job(job_id, None if rec is None else rec.revision):
                    continue  # it changed meanwhile: look again
                await msg.ack()
                return None
            if _stale(rec, hint_epoch):
                await msg.ack()  # stale: the job moved on
                return None
            admit: AdmitFn | None = getattr(activate, "admit", None)
            needs: Callable[[Job], bool] | None = getattr(activate, "limited", None)
            if admit is not None and (
                rec.job.rate_limit is not None or (needs is not None and needs(rec.job))
            ):
                await admit([rec.job])
            after = activate(rec.job)
            if after is None:
                await msg.nak(delay=_RETRY_DELAY_S)  # not admitted now: try again shortly
                return None
            try:
                await self.writer.write(rec, after)
            except WrongSequenceError:
                continue
            # The claim is stored: it must reach the caller even if the hint's ack cannot be
            # sent (the hint then comes back later and is found stale).
            with contextlib.suppress(Exception):
                await msg.ack()
            return after
        await msg.nak(delay=_RETRY_DELAY_S)
        return None

    def _hint_backoff(self, delivered: int) -> float:
        return float(min(self.hint_backoff_s * 2 ** min(delivered - 1, 16), _HINT_BACKOFF_MAX_S))
