"""The kit's pytest plugin: the fixtures every contract test uses.

Opt in from the test module that runs the suite (or from a root ``conftest.py``)::

    pytest_plugins = ["ojs_core.testing.plugin"]

Fixtures (override any of them in your module or conftest):

``backend``
    **Yours to override**: an opened backend with an empty store, closed afterwards. The
    default fails with instructions.
``ojs_time_mode``
    ``"manual"`` (default: the service runs on a :class:`~ojs_core.clock.ManualClock`) or
    ``"real"`` (the system clock; for backends whose timers fire on the store's own clock).
``ojs_clock``
    The clock for the mode; shared by every service of a test.
``service``
    A :class:`~ojs_core.service.JobService` over ``backend`` on ``ojs_clock``.
``ojs_replica_backend`` / ``replica_service``
    A second backend on the *same store* and a service over it, for the tests that race two
    replicas. The default is ``backend`` itself; override ``ojs_replica_backend`` with a second
    connection (opened, not reset) when your store allows several.
``ojs_time``
    The :class:`~ojs_core.testing.timecontrol.TimeControl` that moves time in either mode.
"""

from __future__ import annotations

import random

import pytest

from ..backend import Backend
from ..clock import Clock, ManualClock, SystemClock
from ..service import JobService
from .timecontrol import TimeControl, TimeMode

__all__ = [
    "backend",
    "ojs_clock",
    "ojs_replica_backend",
    "ojs_time",
    "ojs_time_mode",
    "replica_service",
    "service",
]


@pytest.fixture
def ojs_time_mode() -> TimeMode:
    """``"manual"``: the backend follows the injected clock. Override with ``"real"``."""
    return "manual"


@pytest.fixture
def ojs_clock(ojs_time_mode: TimeMode) -> Clock:
    """A fresh ManualClock in manual mode, the system clock in real mode."""
    if ojs_time_mode == "manual":
        return ManualClock()
    if ojs_time_mode == "real":
        return SystemClock()
    raise pytest.UsageError(f"ojs_time_mode must be 'manual' or 'real', not {ojs_time_mode!r}")


@pytest.fixture
def backend() -> Backend:
    """The backend under test: override this fixture (the default only explains how)."""
    pytest.fail(
        "the OJS contract kit needs a `backend` fixture: define one in your test module or "
        "conftest.py that yields an opened backend with an empty store and closes it afterwards",
        pytrace=False,
    )


@pytest.fixture
def ojs_replica_backend(backend: Backend) -> Backend:
    """A second backend on the same store; by default the same object as ``backend``."""
    return backend


@pytest.fixture
def service(backend: Backend, ojs_clock: Clock) -> JobService:
    """The JobService every contract test drives (seeded randomness for jitter)."""
    return JobService(backend, clock=ojs_clock, rng=random.Random(7))


@pytest.fixture
def replica_service(ojs_replica_backend: Backend, ojs_clock: Clock) -> JobService:
    """A second service - another replica - over ``ojs_replica_backend``, on the same clock."""
    return JobService(ojs_replica_backend, clock=ojs_clock, rng=random.Random(8))


@pytest.fixture
def ojs_time(service: JobService, ojs_time_mode: TimeMode) -> TimeControl:
    """Moves time for the test: manual steps or bounded real-time waits."""
    return TimeControl(service, ojs_time_mode)
