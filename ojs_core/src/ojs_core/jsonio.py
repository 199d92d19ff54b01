"""Compact JSON to and from bytes: orjson when it is installed, the standard library otherwise.

Every stored job and every response goes through here, so the codec matters (orjson is several
times faster). Both paths produce the same JSON: compact, UTF-8 (no ``\\u`` escapes), and values
orjson refuses (integers beyond 64 bits, non-string keys) fall back to the standard library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["FAST", "dumps", "loads", "try_loads"]

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
            out = orjson.dumps(value, default=default)
        except TypeError:
            pass  # an integer beyond 64 bits or a non-string key: the standard library takes it
        else:
            # orjson's bytes keep the whole block it wrote into (4 KiB at least): a short one
            # is copied to its size, or a thousand records in flight would hold 4 MiB.
            return bytes(memoryview(out)) if len(out) < 2048 else out
    return _std_dumps(value, default)


_LONG_NUMBER = re.compile(rb"\d{19}")


def try_loads(data: bytes) -> tuple[bool, Any]:
    """``(True, value)`` when the fast parser takes ``data`` exactly, else ``(False, None)``.

    orjson reads integers beyond 64 bits as floats, losing digits: text with a run of 19
    digits (even inside a string) is left to the standard library. orjson also refuses what the
    standard library would accept but OJS must reject (NaN, lone surrogates), so a refusal
    means "parse it the careful way", never "invalid".
    """
    if orjson is None or _LONG_NUMBER.search(data):
        return False, None
    try:
        return True, orjson.loads(data)
    except orjson.JSONDecodeError:
        return False, None


def loads(data: bytes | str) -> Any:
    """Parse JSON text (exactly: big integers stay integers)."""
    raw = data.encode() if isinstance(data, str) else data
    ok, value = try_loads(raw)
    return value if ok else json.loads(raw)
