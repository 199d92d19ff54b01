"""Fixtures of the browser tests: the system's Chromium, a real nats-server, and a real
``ojs-server`` process on it with API keys.

Chromium comes from the distribution (``apt-get install chromium``), never from ``playwright
install``: Playwright for Python drives it through ``executable_path``. Without it the tests
are skipped with the reason, except in CI (``CI`` set), where a missing browser fails them.
Run them with ``uv run pytest -m browser tests/browser`` (deselected from the default run).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from browser_support import ADMIN_KEY, ServerProcess, wait_healthy

from ojs_nats.embedded import EmbeddedNatsServer, free_port

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The system's Chromium (``$OJS_CHROMIUM`` first), or ``None``."""
    explicit = os.environ.get("OJS_CHROMIUM")
    if explicit:
        return explicit
    return next((p for p in map(shutil.which, _CANDIDATES) if p), None)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        reason = (
            "no Chromium found (apt-get install -y chromium, or set OJS_CHROMIUM); "
            "the browser tests need the system's browser"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: ``$OJS_ARTIFACTS/screenshots`` or ``.artifacts/screenshots``."""
    base = Path(os.environ.get("OJS_ARTIFACTS") or Path(__file__).parents[2] / ".artifacts")
    out = base / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedNatsServer(tmp_path_factory.mktemp("nats") / "store", auth=False)
    # In a thread of its own: Playwright's sync API may already run an event loop here.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, server.start()).result()
        try:
            yield server.url
        finally:
            pool.submit(asyncio.run, server.stop()).result()


@pytest.fixture(scope="module")
def ojs_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """``ojs-server`` with API keys on the module's nats-server (``$OJS_BROWSER_BACKEND``, e.g.
    ``memory``, names another backend for a quick local run)."""
    backend = os.environ.get("OJS_BROWSER_BACKEND") or request.getfixturevalue("nats_url")
    server = ServerProcess(["--backend", backend], free_port())
    try:
        wait_healthy(server.url)
        yield server
    finally:
        server.stop()
        output = "".join(server.lines)
        # Neither the admin key nor any session cookie may reach the server's output.
        assert ADMIN_KEY not in output
        assert "ojs_session=" not in output
