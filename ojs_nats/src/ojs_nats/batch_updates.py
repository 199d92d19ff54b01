"""Many jobs' compare-and-swaps written side by side: a fetch's claims, a batch of acks.

A job written alone by :meth:`~ojs_nats.jobs.JobWriter.update` costs its own index-entry
round trip, record round trip and coroutines. :func:`write_each` writes many in two pipelined
rounds: their new index entries (with whatever must be published before them, such as the
claims' visibility timers), then their records, each record its own compare-and-swap over the
version this process wrote last. :func:`update_jobs` (``BatchUpdates``, a batch of acks) uses
it for the plain transitions of a batch, the ones that move a job to another state and need
nothing announced first (no ready hint, no timer to arm, no dead-letter marker; a finished
job's retention armed once its record landed is allowed); everything else, and every item whose
write is refused, goes through ``update`` one by one, which reads, decides and retries as
always: the batch only ever saves round trips, it never decides differently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import attrs

from ojs_core.backend import JobFn
from ojs_core.errors import OJSError
from ojs_core.model import Job

from .jetstream import UNKNOWN_OUTCOME, Op, WrongSequenceError, backend_error
from .jobs import JobWriter, plan_write
from .records import JobRecord

__all__ = ["Undecided", "update_jobs", "write_each"]

Outcome = tuple[Job, Job] | BaseException


class Undecided(Exception):
    """A write whose outcome stays unknown: its acknowledgement was lost and reading the record
    back could not tell (the cause is chained). It may have landed."""


async def write_each(
    writer: JobWriter, writes: Sequence[tuple[JobRecord, Job]], first: Sequence[Op] = ()
) -> list[JobRecord | BaseException] | BaseException:
    """Write each ``(rec, after)``, a job moving in the index: ``first`` and the new index
    entries, then the records. Per write, the record stored, :class:`Undecided` when it may
    have landed, or the error that says it did not (:class:`WrongSequenceError`: refused, or
    timed out and fenced; or any other refusal). The index stream's error, before any record
    was written, if it refused an entry."""
    index, store = writer.index, writer.store
    entries_of = index.add_each([(after, rec.birth) for rec, after in writes])
    if first:
        _, entries = await asyncio.gather(writer.conn.publish_all(first), entries_of)
    else:
        entries = await entries_of
    refused = next((e for e in entries if isinstance(e, BaseException)), None)
    if refused is not None:
        index.unlink(*(e for e in entries if isinstance(e, int)))
        return refused
    seqs = [e for e in entries if isinstance(e, int)]
    ops = [
        store.job_op(after, rec.epoch, rec.revision, rec.birth, entry)
        for (rec, after), entry in zip(writes, seqs, strict=True)
    ]
    outcomes = await writer.conn.pipe.publish_each(ops)
    unknown = [i for i, o in enumerate(outcomes) if isinstance(o, UNKNOWN_OUTCOME)]
    if unknown:  # timed out: stored or not? A write that landed must be reported as such
        settled = await asyncio.gather(
            *(
                store.settle_unknown(writes[i][1].id, ops[i][1], writes[i][0].revision)
                for i in unknown
            ),
            return_exceptions=True,
        )
        for i, landed in zip(unknown, settled, strict=True):
            if isinstance(landed, BaseException):
                undecided = Undecided(f"the write's outcome is unknown: {landed!r}")
                undecided.__cause__ = landed
                outcomes[i] = undecided
            else:
                outcomes[i] = WrongSequenceError("fenced") if landed is None else landed
    results: list[JobRecord | BaseException] = []
    for (rec, after), entry, outcome in zip(writes, seqs, outcomes, strict=True):
        if isinstance(outcome, int):
            results.append(
                writer.stored(rec, JobRecord(after, rec.epoch, outcome, rec.birth, entry))
            )
        elif isinstance(outcome, Undecided):  # neither entry goes (listings repair a stale one)
            writer.store.forget(rec.job.id)
            results.append(outcome)
        else:  # refused: this version was not stored
            writer.not_stored(rec, entry)
            results.append(outcome)
    return results


async def update_jobs(writer: JobWriter, items: Sequence[tuple[str, JobFn]]) -> list[Outcome]:
    """Per ``(job_id, fn)``, what ``writer.update(job_id, fn)`` returns or raises."""
    store = writer.store
    owns = writer.timers.owns
    outcomes: list[Outcome | None] = [None] * len(items)
    batch: list[tuple[int, JobRecord, Job]] = []
    alone: list[int] = []
    then: dict[int, datetime] = {}  # deadlines to arm once the record landed
    seen: set[str] = set()
    for i, (job_id, fn) in enumerate(items):
        fresh = store.take_fresh(job_id) if job_id not in seen else None
        rec = fresh or (store.cached_job(job_id) if job_id not in seen else None)
        after: Job | None = None
        if rec is not None:
            try:  # fn's changes to its argument stay out of the cache
                after = fn(attrs.evolve(rec.job))
            except OJSError:
                after = None  # decided again alone, on the stored version
        plan = None if rec is None or after is None else plan_write(rec, after, owns(job_id))
        if rec is None or after is None or plan is None or not plan.plain:
            if fresh is not None:
                store.put_fresh(fresh)  # for the write alone, as good as a read still
            alone.append(i)
            continue
        if plan.then is not None:
            then[i] = plan.then
        seen.add(job_id)
        batch.append((i, rec, after))
    if batch:
        written = await write_each(writer, [(rec, after) for _, rec, after in batch])
        for n, (i, rec, after) in enumerate(batch):
            got = written if isinstance(written, BaseException) else written[n]
            if isinstance(got, JobRecord):
                writer.timers.done(after.id)
                if i in then:
                    await writer.arm_after(after.id, then[i])
                outcomes[i] = (rec.job, after)
            elif isinstance(got, Undecided):  # reported as a write alone would raise it
                outcomes[i] = backend_error(got.__cause__ or got)
            else:
                alone.append(i)  # refused (or no entry): decided again alone, as it would be
    if alone:
        results = await asyncio.gather(
            *(writer.update(*items[i]) for i in alone), return_exceptions=True
        )
        for i, result in zip(alone, results, strict=True):
            outcomes[i] = backend_error(result) if isinstance(result, BaseException) else result
    return [o if o is not None else RuntimeError("no outcome") for o in outcomes]
