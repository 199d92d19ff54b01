"""Compact JSON to and from bytes: orjson when it is installed, the standard library otherwise.

Every stored job and every response goes through here, so the codec matters (orjson is several
times faster). Both paths produce the same JSON: compact, UTF-8 (no ``\\u`` escapes), and values
orjson refuses (integers beyond 64 bits, non-string keys) fall back to the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["FAST", "dumps", "loads"]

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None  # type: ignore[assignment]

#: Whether the fast codec is in use.
FAST = orjson is not None


def _std_dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=default).encode()


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """``value`` as compact UTF-8 JSON bytes; ``default`` converts what JSON cannot hold."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=default)
        except TypeError:
            pass  # an integer beyond 64 bits or a non-string key: the standard library takes it
    return _std_dumps(value, default)


def loads(data: bytes | str) -> Any:
    """Parse JSON text."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # e.g. an integer beyond 64 bits; let the standard library decide
    return json.loads(data)
