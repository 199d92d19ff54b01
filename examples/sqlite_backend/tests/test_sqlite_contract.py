"""The OJS contract kit against the SQLite example backend.

Manual time: the backend's timer index is ``due_at``, queried at the service clock's ``now``, so
a ManualClock drives every timer. Each test gets a fresh database file; the replica tests get a
second connection (its own thread) to the same file.

Async fixtures use ``pytest_asyncio.fixture``, so the module runs under pytest-asyncio's
default (strict) mode with no pytest configuration; the kit's tests carry their own mark.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ojs_core.backend import Backend
from ojs_core.testing.contract import *  # noqa: F403
from ojs_sqlite import SqliteBackend

pytest_plugins = ["ojs_core.testing.plugin"]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "ojs.db")


@pytest_asyncio.fixture
async def backend(db_path: str) -> AsyncIterator[Backend]:
    b = SqliteBackend(db_path, synchronous="NORMAL")
    await b.open()
    yield b
    await b.close()


@pytest_asyncio.fixture
async def ojs_replica_backend(backend: Backend, db_path: str) -> AsyncIterator[Backend]:
    b = SqliteBackend(db_path, synchronous="NORMAL")
    await b.open()
    yield b
    await b.close()
