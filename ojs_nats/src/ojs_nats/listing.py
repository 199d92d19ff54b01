"""``list_jobs``: which index answers a filter, and where its total comes from.

* No ``dead_letter`` filter: the listing index (:mod:`.index`), newest first; the total
  from the counters (per queue and state without a type, per type, queue and state with one).
* ``dead_letter=True``: the ``discarded`` index entries, latest first (:meth:`Index.recent`),
  keeping the dead-letter jobs; the total counts the ``d.`` markers (their keys only; with a
  queue or type filter, every dead-letter record is read to count the matching ones).
* ``dead_letter=False``: the listing index without the dead-letter jobs; the total is the
  counters' minus the dead-letter jobs that match.
"""

from __future__ import annotations

from ojs_core.backend import JobFilter, Page
from ojs_core.model import Job
from ojs_core.states import JobState

from .index import Index, listable
from .jobs import JobWriter, is_dead
from .stats import Counters

__all__ = ["list_jobs"]


def _matches(flt: JobFilter, job: Job) -> bool:
    return (
        (flt.state is None or job.state.value == flt.state)
        and (flt.queue is None or job.queue == flt.queue)
        and (flt.type is None or job.type == flt.type)
    )


async def list_jobs(writer: JobWriter, index: Index, counters: Counters, flt: JobFilter) -> Page:
    """One page of the jobs ``flt`` selects, newest first, and their number."""
    offset, limit = max(0, flt.offset), max(0, flt.limit)
    if flt.dead_letter:
        if flt.state not in (None, JobState.DISCARDED.value):
            return Page(items=[], total=0)  # dead-letter jobs are discarded ones
        items = await index.recent("discarded", flt.queue, flt.type, is_dead, offset, limit)
        if flt.queue is None and flt.type is None:
            total = await writer.dead_letter_count()
        else:
            total = sum(1 for j in await writer.dead_letter(flt.queue) if _matches(flt, j))
        return Page(items=items, total=total)
    if not listable(flt.state, flt.queue, flt.type):
        return Page(items=[], total=0)  # a name from a URL that no stored job can have
    if flt.dead_letter is None:
        items = await index.page(flt.state, flt.queue, flt.type, _any, offset, limit)
        total = await counters.total(flt.state, flt.queue, flt.type)
        return Page(items=items, total=total)
    items = await index.page(flt.state, flt.queue, flt.type, _alive, offset, limit)
    dead = [j for j in await writer.dead_letter(flt.queue) if _matches(flt, j)]
    total = await counters.total(flt.state, flt.queue, flt.type) - len(dead)
    return Page(items=items, total=max(0, total))


def _any(job: Job) -> bool:
    return True


def _alive(job: Job) -> bool:
    return not is_dead(job)
