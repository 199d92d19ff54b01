"""A contract test kit for :class:`~ojs_core.backend.Backend` implementations.

Install ``ojs-core[testing]`` (pytest and pytest-asyncio), then write one test module::

    # tests/test_contract.py
    import pytest

    from ojs_core.testing.contract import *  # noqa: F403  (every Test* class of the suite)
    from my_backend import MyBackend

    pytest_plugins = ["ojs_core.testing.plugin"]


    @pytest.fixture
    async def backend():
        b = MyBackend(...)
        await b.open()
        await b.reset()  # every test starts from an empty store
        yield b
        await b.close()

and run ``pytest``. Every test drives a :class:`~ojs_core.service.JobService` over your backend
(plus, for a few protocol promises, the backend directly), so a green run means the server's
operations behave on your backend as they do on the reference memory backend.

Time. Backends that follow the injected clock completely (their timer index is keyed by
:func:`ojs_core.lifecycle.timer_deadline` and queried at ``clock.now()``) run in the default
*manual* mode, on a :class:`~ojs_core.clock.ManualClock`: timer tests are instant and exact.
A backend whose timers fire on the store's own clock (such as NATS message schedules) declares
*real* mode, and the same tests wait for real time (about a second per timer)::

    @pytest.fixture
    def ojs_time_mode():
        return "real"

Replicas. Tests that race two servers use ``replica_service``; by default it shares your
``backend`` object. Override ``ojs_replica_backend`` to give it a second connection to the same
store (opened, not reset) and those races cross connections.

Under pytest-asyncio's strict mode, declare async fixtures with ``@pytest_asyncio.fixture``.
The test classes carry the ``asyncio`` mark themselves. See :mod:`ojs_core.testing.plugin` for
every fixture and :mod:`ojs_core.testing.timecontrol` for moving time.
"""

from __future__ import annotations

import pytest

# Contract modules are imported from the user's test module, which pytest does not rewrite for
# them: register them so failing asserts still show the values compared.
pytest.register_assert_rewrite(
    "ojs_core.testing.contract", "ojs_core.testing.helpers", "ojs_core.testing.timecontrol"
)

from .helpers import (  # noqa: E402
    NO_JITTER,
    events_of,
    expect_events,
    expect_stats,
    fetch_one,
    fetch_when_ready,
    job_error,
    push,
    run_one,
)
from .interleave import InterleavingBackend, interleaving  # noqa: E402
from .timecontrol import TimeControl, TimeMode  # noqa: E402

__all__ = [
    "NO_JITTER",
    "InterleavingBackend",
    "TimeControl",
    "TimeMode",
    "events_of",
    "expect_events",
    "expect_stats",
    "fetch_one",
    "fetch_when_ready",
    "interleaving",
    "job_error",
    "push",
    "run_one",
]
