"""The contract kit against the in-memory reference backend (manual time).

Every test runs twice: over the plain backend, and over one that yields to the event loop before
each backend call (:func:`~ojs_core.testing.interleaving`), so that operations started together
with ``asyncio.gather`` really interleave, as they would against a networked store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ojs_core.backend import Backend
from ojs_core.testing import interleaving
from ojs_core.testing.contract import *  # noqa: F403
from ojs_memory import MemoryBackend

pytest_plugins = ["ojs_core.testing.plugin"]


@pytest.fixture(params=["plain", "interleaved"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    b = MemoryBackend()
    await b.open()
    yield b if request.param == "plain" else interleaving(b)
    await b.close()
