"""The ready hint: the message on a queue's ready subject that says a job became available.

Its body is ``"<job id> <epoch>"``: the epoch counts the times the job entered ``available``,
so a hint left over from an earlier time (a crash between the hint and its record, a
redelivery) is recognised as stale when claimed (``ojs_nats.ready``).
"""

from __future__ import annotations

from nats.aio.msg import Msg

from ojs_core.model import Job
from ojs_core.tenancy import shard_of
from ojs_core.versioning import lane_of

from . import names
from .jetstream import Op

__all__ = ["hint_op", "parse_hint"]


def hint_op(job: Job, epoch: int) -> Op:
    """The ready hint announcing that ``job`` entered ``available`` for the ``epoch``-th time
    (on its version lane and its tenant's shard, if it has them: ``names.ready_subject``)."""
    subject = names.ready_subject(job.queue, job.priority, lane_of(job), shard_of(job))
    return (subject, f"{job.id} {epoch}".encode(), {})


def parse_hint(msg: Msg) -> tuple[str, int] | None:
    """The job id and epoch a hint names, or ``None`` for a body that is not a hint."""
    try:
        job_id, epoch = msg.data.decode().split(" ", 1)
        return job_id, int(epoch)
    except ValueError:
        return None
