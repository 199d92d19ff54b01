"""Backend plugins: the ``ojs.backends`` entry points and ``ojs-server --backend``."""

from __future__ import annotations

from typing import Any

import pytest

from ojs_core import plugins
from ojs_core.plugins import (
    BackendOptions,
    BackendPluginError,
    UnknownBackendError,
    installed_schemes,
    load_backend,
    url_scheme,
)
from ojs_http.cli import build_backend
from ojs_memory import MemoryBackend
from ojs_nats.backend import NatsBackend


class FakeEntryPoint:
    def __init__(self, name: str, value: str, target: Any = None, error: Exception | None = None):
        self.name = name
        self.value = value
        self.group = plugins.ENTRY_POINT_GROUP
        self._target = target
        self._error = error

    def load(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._target


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: FakeEntryPoint) -> None:
    monkeypatch.setattr(plugins, "entry_points", lambda group: list(eps))


def test_the_workspace_registers_its_backends() -> None:
    assert {"memory", "nats", "tls", "embedded", "sqlite"} <= set(installed_schemes())


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("memory", "memory"),
        ("memory://", "memory"),
        ("MEMORY://", "memory"),
        ("nats://a:4222,b:4222", "nats"),
        ("sqlite:///var/ojs.db", "sqlite"),
        ("embedded", "embedded"),
    ],
)
def test_url_scheme(url: str, scheme: str) -> None:
    assert url_scheme(url) == scheme


@pytest.mark.parametrize("url", ["memory", "memory://"])
def test_memory(url: str) -> None:
    assert isinstance(load_backend(url), MemoryBackend)


def test_nats_and_tls() -> None:
    backend = load_backend("nats://a:4222,b:4223", BackendOptions(replicas=3))
    assert isinstance(backend, NatsBackend)
    assert backend.servers == ["nats://a:4222", "nats://b:4223"]
    assert backend.replicas == 3
    secure = load_backend("tls://secure:4222")
    assert isinstance(secure, NatsBackend)
    assert secure.servers == ["tls://secure:4222"]


def test_embedded_uses_the_data_dir_or_the_url_path() -> None:
    from_option = load_backend("embedded", BackendOptions(data_dir="/tmp/ojs-a"))
    from_url = load_backend("embedded:///tmp/ojs-b")
    for backend, path in ((from_option, "/tmp/ojs-a"), (from_url, "/tmp/ojs-b")):
        assert isinstance(backend, NatsBackend)
        assert backend.embedded is not None
        assert str(backend.embedded.data_dir) == path


def test_unknown_scheme_lists_the_installed_ones() -> None:
    with pytest.raises(UnknownBackendError) as exc:
        load_backend("redis://localhost:6379")
    assert exc.value.scheme == "redis"
    assert "memory" in exc.value.installed
    message = str(exc.value)
    assert "'redis'" in message
    assert "memory://" in message
    assert "nats://" in message


def test_cli_exits_with_the_message() -> None:
    with pytest.raises(SystemExit) as exc:
        build_backend("redis://localhost")
    assert str(exc.value).startswith("ojs-server: unknown backend 'redis://localhost'")
    assert "memory://" in str(exc.value)
    assert isinstance(build_backend("memory"), MemoryBackend)


def test_factory_receives_url_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, BackendOptions]] = []

    def factory(url: str, options: BackendOptions) -> MemoryBackend:
        seen.append((url, options))
        return MemoryBackend()

    fake_entry_points(monkeypatch, FakeEntryPoint("mine", "pkg:factory", factory))
    options = BackendOptions(replicas=2, extra={"k": "v"})
    assert isinstance(load_backend("mine://x", options), MemoryBackend)
    assert seen == [("mine://x", options)]


def test_plugin_that_fails_to_import(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(
        monkeypatch, FakeEntryPoint("broken", "gone:factory", error=ImportError("no module"))
    )
    with pytest.raises(BackendPluginError, match="could not be imported"):
        load_backend("broken://")


def test_plugin_that_returns_no_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, FakeEntryPoint("odd", "pkg:odd", lambda url, options: 42))
    with pytest.raises(BackendPluginError, match="not a Backend"):
        load_backend("odd://")


def test_a_scheme_registered_twice_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(
        monkeypatch,
        FakeEntryPoint("dup", "one:factory", MemoryBackend),
        FakeEntryPoint("dup", "two:factory", MemoryBackend),
    )
    with pytest.raises(BackendPluginError, match="registered twice"):
        installed_schemes()
