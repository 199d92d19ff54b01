"""How long finished work is kept: the retention policy and the deadlines it sets.

Nothing a job server stores may grow without bound. A job that reaches a terminal state is
kept for the retention of that state, then removed with everything that points at it (its
unique-key holder, its dead-letter marker); its workflow goes with the last of its jobs; a
worker that stops heartbeating is forgotten; the dead letter is capped by age and count
(dead-letter spec: ``max_age`` P180D, ``max_count`` 10,000).

The mechanism is the timer index every backend already keeps. When a job becomes terminal the
service stamps ``Job.retain_until`` (:func:`stamp`); :func:`ojs_core.lifecycle.timer_deadline`
returns it, so the backend indexes the job like any other timer and the service removes it
when it is due (``JobService.run_timers``). Backends need no retention logic of their own.
The rest (the dead letter's count, workers, workflows) is swept by ``JobService.prune``, which
the scheduler runs every :attr:`Retention.prune_interval`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import attrs

from .model import Job
from .states import JobState

__all__ = ["KEEP_FOREVER", "Retention", "stamp"]

S = JobState

#: A retention of ``None`` keeps records forever (``--retain-completed 0`` on the command line).
KEEP_FOREVER = None


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: timedelta | None) -> None:
    if value is not None and value <= timedelta(0):
        raise ValueError(f"{attribute.name} must be positive (None keeps forever)")


@attrs.frozen(kw_only=True)
class Retention:
    """How long each kind of finished record is kept. ``None`` keeps it forever.

    The defaults are the ones OJS names: completed and cancelled jobs 7 days, discarded ones
    30 days, dead-letter jobs 180 days and at most 10,000 of them.
    """

    completed: timedelta | None = attrs.field(default=timedelta(days=7), validator=_positive)
    cancelled: timedelta | None = attrs.field(default=timedelta(days=7), validator=_positive)
    discarded: timedelta | None = attrs.field(default=timedelta(days=30), validator=_positive)
    dead_letter: timedelta | None = attrs.field(default=timedelta(days=180), validator=_positive)
    dead_letter_max_count: int | None = 10_000
    #: A worker record not refreshed by a heartbeat for this long is removed.
    workers: timedelta | None = attrs.field(default=timedelta(days=1), validator=_positive)
    #: How often ``JobService.prune`` runs (from the scheduler).
    prune_interval: timedelta = timedelta(minutes=5)

    @classmethod
    def forever(cls) -> Retention:
        """Keep everything (the behaviour before retention existed)."""
        return cls(
            completed=None,
            cancelled=None,
            discarded=None,
            dead_letter=None,
            dead_letter_max_count=None,
            workers=None,
        )

    def keep_for(self, job: Job) -> timedelta | None:
        """How long ``job`` (terminal) is kept after it finished."""
        state = job.state
        if state is S.COMPLETED:
            return self.completed
        if state is S.CANCELLED:
            return self.cancelled
        if state is S.DISCARDED:
            return self.dead_letter if job.dead_letter else self.discarded
        return None


def finished_at(job: Job) -> datetime | None:
    """When a terminal job reached its state."""
    return job.completed_at or job.cancelled_at or job.discarded_at


def stamp(before: Job | None, after: Job, retention: Retention, now: datetime) -> Job:
    """``after`` with its ``retain_until`` set for its state: stamped when the job becomes
    terminal (or moves into or out of the dead letter), cleared when it leaves a terminal
    state (a dead-letter retry). Returns ``after`` itself when nothing changes."""
    if not after.state.terminal:
        return after if after.retain_until is None else attrs.evolve(after, retain_until=None)
    if (
        before is not None
        and before.state is after.state
        and before.dead_letter == after.dead_letter
        and after.retain_until is not None
    ):
        return after
    keep = retention.keep_for(after)
    until = None if keep is None else (finished_at(after) or now) + keep
    return after if until == after.retain_until else attrs.evolve(after, retain_until=until)
