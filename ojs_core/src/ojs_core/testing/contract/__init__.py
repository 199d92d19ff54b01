"""The contract suite: behavioural tests of the Backend protocol, run through JobService.

Import every test class into one test module of your backend and override the ``backend``
fixture (see :mod:`ojs_core.testing` for the whole recipe)::

    from ojs_core.testing.contract import *  # noqa: F403

    pytest_plugins = ["ojs_core.testing.plugin"]

The classes are grouped by topic, one module each: :mod:`.transitions` (every operation from
every state), :mod:`.claiming` (order, pause, exclusivity under races), :mod:`.timers`
(scheduled, backoff, visibility and execution timeouts, expiry, ``due_jobs``),
:mod:`.uniqueness`, :mod:`.dead_letter`, :mod:`.workflows`, :mod:`.cron`, :mod:`.batches`
(atomic inserts), :mod:`.events`, :mod:`.names` (queue names and worker ids as opaque
strings), :mod:`.validation` (input refused before anything is stored), :mod:`.retention` (finished
records removed when their retention ends), :mod:`.flow` (bounded queues and draining
workers), :mod:`.progress` (progress reports and durable checkpoints on the job record),
:mod:`.listing` (``list_jobs`` by state, queue and type, pages and order), :mod:`.rate_limits`
(the rate-limiting extension's limits, ``on_limit`` and overrides), :mod:`.tenancy` (tenant
isolation, limits and fair dispatch), :mod:`.pools` (worker pools of the fair-scheduling
extension), :mod:`.versioning` (job versions and the workers'
version declarations) and :mod:`.protocol`
(compare-and-swap, reads, listings, claims, queues, workers, health, reset). Select a topic
with ``-k``, e.g. ``-k TestTimeouts``.
"""

from __future__ import annotations

from .batch_updates import TestBatchUpdates
from .batches import TestBatchEnqueue, TestInsertJobs
from .claiming import TestClaimExclusivity, TestClaimOrder, TestPause
from .cron import TestCron, TestCronRecords
from .dead_letter import TestDeadLetter
from .events import TestEventFeed, TestEvents
from .flow import TestBackpressure, TestDrainingWorkers
from .listing import TestListJobs
from .names import TestNames
from .pools import TestWorkerPools
from .progress import TestCheckpoints, TestProgress
from .protocol import (
    TestClaimJobs,
    TestCompareAndSwap,
    TestLifecycleAndReset,
    TestListingsAndDeletion,
    TestQueuesAndWorkers,
    TestReads,
)
from .rate_limits import TestRateLimits
from .registries import TestSchemaStore, TestWorkflowListing
from .retention import TestRetention
from .tenancy import TestTenancy, TestTenantFairness
from .timers import TestExpiry, TestRetryTiming, TestScheduled, TestTimeouts, TestTimerIndex
from .transitions import TestTransitionDetails, TestTransitionMatrix
from .uniqueness import TestUniqueJobs, TestUniqueRaces
from .validation import TestValidation
from .versioning import TestJobVersioning
from .workflows import TestWorkflowRecords, TestWorkflows

__all__ = [
    "TestBackpressure",
    "TestBatchEnqueue",
    "TestBatchUpdates",
    "TestCheckpoints",
    "TestClaimExclusivity",
    "TestClaimJobs",
    "TestClaimOrder",
    "TestCompareAndSwap",
    "TestCron",
    "TestCronRecords",
    "TestDeadLetter",
    "TestDrainingWorkers",
    "TestEventFeed",
    "TestEvents",
    "TestExpiry",
    "TestInsertJobs",
    "TestJobVersioning",
    "TestLifecycleAndReset",
    "TestListJobs",
    "TestListingsAndDeletion",
    "TestNames",
    "TestPause",
    "TestProgress",
    "TestQueuesAndWorkers",
    "TestRateLimits",
    "TestReads",
    "TestRetention",
    "TestRetryTiming",
    "TestScheduled",
    "TestSchemaStore",
    "TestTenancy",
    "TestTenantFairness",
    "TestTimeouts",
    "TestTimerIndex",
    "TestTransitionDetails",
    "TestTransitionMatrix",
    "TestUniqueJobs",
    "TestUniqueRaces",
    "TestValidation",
    "TestWorkerPools",
    "TestWorkflowListing",
    "TestWorkflowRecords",
    "TestWorkflows",
]
