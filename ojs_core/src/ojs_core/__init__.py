"""ojs-core: the Open Job Spec model, rules and Backend protocol, shared by every backend.

Start with :mod:`ojs_core.model` (the envelope), :mod:`ojs_core.states` (the lifecycle),
:mod:`ojs_core.lifecycle` (transitions), :mod:`ojs_core.backend` (what a backend implements) and
:mod:`ojs_core.service` (the operations, written once over any backend). In-process use:
:class:`Client` (enqueue and manage), :class:`Worker` (run handlers), :class:`MiddlewareChain`
(enqueue and execution middleware); see ``docs/embedding.md``.
"""

from .backend import Backend, BackendHealth, EventFilter, JobFilter, Page, UniqueConflict
from .client import Client
from .clock import Clock, ManualClock, SystemClock
from .errors import (
    BackendUnavailableError,
    ConflictError,
    DuplicateJobError,
    InvalidStateTransitionError,
    NotFoundError,
    OJSError,
    QueueFullError,
    ValidationError,
)
from .middleware import MiddlewareChain
from .model import CronJob, Event, Job, JobError, RetryPolicy, UniquePolicy, Workflow
from .scheduler import Scheduler
from .service import JobService
from .states import JobState
from .worker import JobContext, Worker

__all__ = [
    "Backend",
    "BackendHealth",
    "BackendUnavailableError",
    "Client",
    "Clock",
    "ConflictError",
    "CronJob",
    "DuplicateJobError",
    "Event",
    "EventFilter",
    "InvalidStateTransitionError",
    "Job",
    "JobContext",
    "JobError",
    "JobFilter",
    "JobService",
    "JobState",
    "ManualClock",
    "MiddlewareChain",
    "NotFoundError",
    "OJSError",
    "Page",
    "QueueFullError",
    "RetryPolicy",
    "Scheduler",
    "SystemClock",
    "UniqueConflict",
    "UniquePolicy",
    "ValidationError",
    "Worker",
    "Workflow",
]
__version__ = "0.2.0"
