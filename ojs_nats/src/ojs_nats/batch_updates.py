"""Many jobs' compare-and-swaps written side by side (``BatchUpdates``: a batch of acks).

A job written alone by :meth:`~ojs_nats.jobs.JobWriter.update` costs its own index-entry
round trip, record round trip and coroutines. Here the plain transitions of a batch, the ones
that move a job to another state and need nothing announced first (no ready hint, no timer to
arm, no dead-letter marker: an ack), are written in two pipelined rounds for all of them:
their new index entries, then their records, each record its own compare-and-swap over the
version this process wrote last. Everything else, and every item whose write is refused or
whose outcome is unknown, goes through ``update`` one by one, which reads, decides and
retries as always: the batch only ever saves round trips, it never decides differently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import attrs

from ojs_core.backend import JobFn
from ojs_core.errors import OJSError
from ojs_core.model import Job
from ojs_core.states import JobState

from .index import moved
from .jetstream import UNKNOWN_OUTCOME, backend_error
from .jobs import JobWriter, is_dead, timer_to_arm
from .records import JobRecord

__all__ = ["update_jobs"]

Outcome = tuple[Job, Job] | BaseException


def _plain(rec: JobRecord, after: Job) -> bool:
    """Whether writing ``after`` over ``rec`` needs only a new index entry and the record."""
    before = rec.job
    return (
        moved(before, after)
        and not (after.state is JobState.AVAILABLE and before.state is not JobState.AVAILABLE)
        and timer_to_arm(before, after) is None
        and is_dead(before) == is_dead(after)
    )


async def update_jobs(writer: JobWriter, items: Sequence[tuple[str, JobFn]]) -> list[Outcome]:
    """Per ``(job_id, fn)``, what ``writer.update(job_id, fn)`` returns or raises."""
    store = writer.store
    outcomes: list[Outcome | None] = [None] * len(items)
    batch: list[tuple[int, JobRecord, Job]] = []
    alone: list[int] = []
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
        if rec is None or after is None or not _plain(rec, after):
            if fresh is not None:
                store.put_fresh(fresh)  # for the write alone, as good as a read still
            alone.append(i)
            continue
        seen.add(job_id)
        batch.append((i, rec, after))
    if batch:
        alone.extend(await _write(writer, batch, outcomes))
    if alone:
        results = await asyncio.gather(
            *(writer.update(*items[i]) for i in alone), return_exceptions=True
        )
        for i, result in zip(alone, results, strict=True):
            outcomes[i] = backend_error(result) if isinstance(result, BaseException) else result
    return [o if o is not None else RuntimeError("no outcome") for o in outcomes]


async def _write(
    writer: JobWriter, batch: list[tuple[int, JobRecord, Job]], outcomes: list[Outcome | None]
) -> list[int]:
    """Write ``batch``: index entries, then records. The items to do one by one instead."""
    index, store = writer.index, writer.store
    entries = await index.add_each([(after, rec.birth) for _, rec, after in batch])
    if any(isinstance(e, BaseException) for e in entries):
        index.unlink(*(e for e in entries if isinstance(e, int)))
        return [i for i, _, _ in batch]
    seqs = [e for e in entries if isinstance(e, int)]
    ops = [
        store.job_op(after, rec.epoch, rec.revision, rec.birth, entry)
        for (_, rec, after), entry in zip(batch, seqs, strict=True)
    ]
    written = await writer.conn.pipe.publish_each(ops)
    again: list[int] = []
    for (i, rec, after), entry, outcome, op in zip(batch, seqs, written, ops, strict=True):
        if isinstance(outcome, UNKNOWN_OUTCOME):
            try:  # stored or not? A write that landed must be reported as such
                outcome = await store.settle_unknown(after.id, op[1], rec.revision) or outcome
            except Exception as exc:  # undecided: reported, as a write alone raises it
                outcomes[i] = backend_error(exc)
                continue
        if not isinstance(outcome, int):  # refused, or unknown and fenced: decide again alone
            store.forget(after.id)
            index.unlink(entry)
            again.append(i)
            continue
        index.unlink(rec.entry)
        store.remember(JobRecord(after, rec.epoch, outcome, rec.birth, entry))
        writer.counters.count(rec.job, after)
        writer.timers.done(after.id)
        outcomes[i] = (rec.job, after)
    return again
