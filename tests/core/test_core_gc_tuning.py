"""``tune_gc`` raises the collector's first threshold, keeps one set higher, and leaves the
collector alone when ``OJS_GC_TUNING`` says off; ``Client`` and ``Worker.run`` apply it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ojs_core import Client
from ojs_core.gc_tuning import ENV, GEN0_THRESHOLD, tune_gc
from ojs_memory import MemoryBackend


@pytest.fixture(autouse=True)
def restored_thresholds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = gc.get_threshold()
    monkeypatch.delenv(ENV, raising=False)
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_raises_the_first_threshold_only() -> None:
    assert tune_gc() is True
    assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)
    assert tune_gc() is False  # already there


def test_keeps_a_higher_threshold_and_a_disabled_one() -> None:
    gc.set_threshold(200_000, 5, 5)
    assert tune_gc() is False
    assert gc.get_threshold() == (200_000, 5, 5)
    gc.set_threshold(0, 10, 10)  # threshold 0 disables automatic collection: left so
    assert tune_gc() is False
    assert gc.get_threshold()[0] == 0


@pytest.mark.parametrize("value", ["off", "0", "false", "NO"])
def test_the_environment_turns_it_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV, value)
    assert tune_gc() is False
    assert gc.get_threshold() == (700, 10, 10)


def test_a_client_applies_it() -> None:
    Client(MemoryBackend())
    assert gc.get_threshold()[0] == GEN0_THRESHOLD
