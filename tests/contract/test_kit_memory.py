"""The contract kit against the in-memory reference backend (manual time)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ojs_core.backend import Backend
from ojs_core.testing.contract import *  # noqa: F403
from ojs_memory import MemoryBackend

pytest_plugins = ["ojs_core.testing.plugin"]


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = MemoryBackend()
    await b.open()
    yield b
    await b.close()
