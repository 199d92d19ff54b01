"""UUIDv7 ids (RFC 9562) as OJS requires them (digest §1.1)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ojs_core import ids
from ojs_core.ids import UUIDV7_RE, deterministic_uuid7, is_uuid7, uuid7

SETTINGS = settings(max_examples=200, deadline=None)
MS_2026 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture(autouse=True)
def _fresh_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    # uuid7() keeps process-wide state (last ms, counter); start each test from a clean slate
    # so ids made elsewhere with explicit timestamps cannot leak in.
    monkeypatch.setattr(ids, "_last_ms", 0)
    monkeypatch.setattr(ids, "_seq", 0)


def _ms_of(value: str) -> int:
    return int(value.replace("-", "")[:12], 16)


def test_uuid7_shape() -> None:
    value = uuid7()
    assert UUIDV7_RE.match(value)
    assert is_uuid7(value)
    parsed = uuid.UUID(value)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == value


def test_uuid7_monotonic_within_process() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(is_uuid7(i) for i in ids)


def test_uuid7_monotonic_with_fixed_timestamp() -> None:
    # Many ids in one millisecond (and a clock that goes backwards) still sort in creation order.
    ids = [uuid7(MS_2026) for _ in range(5000)] + [uuid7(MS_2026 - 10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(is_uuid7(i) for i in ids)


def test_uuid7_embeds_the_timestamp() -> None:
    assert _ms_of(uuid7(MS_2026)) == MS_2026
    later = MS_2026 + 86_400_000
    assert _ms_of(uuid7(later)) == later


def test_uuid7_counter_overflow_moves_to_the_next_ms() -> None:
    ids_ = [uuid7(MS_2026) for _ in range(4097 + 1024)]
    assert ids_ == sorted(ids_)
    assert {_ms_of(i) for i in ids_} <= {MS_2026, MS_2026 + 1, MS_2026 + 2}
    assert _ms_of(ids_[-1]) > MS_2026


@SETTINGS
@given(st.integers(min_value=0, max_value=(1 << 48) - 1), st.lists(st.text(), max_size=4))
def test_deterministic_uuid7_is_stable_and_valid(ms: int, parts: list[str]) -> None:
    a = deterministic_uuid7(ms, *parts)
    b = deterministic_uuid7(ms, *parts)
    assert a == b
    assert is_uuid7(a)
    assert _ms_of(a) == ms
    assert uuid.UUID(a).version == 7


def test_deterministic_uuid7_differs_for_different_input() -> None:
    base = deterministic_uuid7(MS_2026, "cron", "nightly")
    assert deterministic_uuid7(MS_2026, "cron", "hourly") != base
    assert deterministic_uuid7(MS_2026 + 1000, "cron", "nightly") != base
    # Parts are separated, not concatenated.
    assert deterministic_uuid7(MS_2026, "cronnightly") != base
    assert deterministic_uuid7(MS_2026, "cron", "nightly") == base


@SETTINGS
@given(st.uuids(version=4).map(str))
def test_is_uuid7_rejects_v4(value: str) -> None:
    assert not is_uuid7(value)


@SETTINGS
@given(st.text(max_size=40))
def test_is_uuid7_agrees_with_the_stdlib(value: str) -> None:
    if is_uuid7(value):
        parsed = uuid.UUID(value)
        assert parsed.version == 7
        assert str(parsed) == value


def test_is_uuid7_rejects_variants_of_a_valid_id() -> None:
    good = uuid7()
    assert is_uuid7(good)
    assert not is_uuid7(good.upper())
    assert not is_uuid7(good.replace("-", ""))
    assert not is_uuid7("{" + good + "}")
    assert not is_uuid7(good + "\n")
    assert not is_uuid7(" " + good)
    assert not is_uuid7("")
    assert not is_uuid7(good[:14] + "4" + good[15:])  # version nibble
    assert not is_uuid7(good[:19] + "c" + good[20:])  # variant nibble
