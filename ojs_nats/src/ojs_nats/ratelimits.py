"""Rate-limit keys (the rate-limiting extension) in ``OJS_LIMITS``: one record per key, changed
by compare-and-swap, so every replica admits against the same counters.

A key is stored under :func:`~ojs_nats.names.name_key` (hex when the key holds characters a
KV key cannot, such as ``:``); the record is :meth:`~ojs_core.rate_limit_rules.KeyState.to_wire`
as JSON. Records are small: the holders of a concurrency limit (at most
``MAX_CONCURRENCY``), and for a rate window either its starts (up to
``EXACT_LOG_LIMIT``) or two counters.
"""

from __future__ import annotations

from ojs_core import jsonio
from ojs_core.backend import RateLimitFn
from ojs_core.rate_limit_rules import KeyState

from . import names
from .records import Codec, RecordStore

__all__ = ["RateLimitBucket"]


class _KeyStateCodec(Codec[KeyState]):
    def __init__(self) -> None:
        super().__init__(KeyState)

    def encode(self, value: object) -> bytes:
        assert isinstance(value, KeyState)
        return jsonio.dumps(value.to_wire())

    def decode(self, data: bytes) -> KeyState:
        return KeyState.from_wire(jsonio.loads(data))


_CODEC = _KeyStateCodec()


class RateLimitBucket:
    """The :class:`~ojs_core.backend.RateLimitStore` of the NATS backend."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    async def change(self, key: str, fn: RateLimitFn) -> KeyState | None:
        """Read-modify-write of ``key``'s record by compare-and-swap."""
        _, after, _ = await self.store.swap(
            names.LIMITS_BUCKET, names.name_key(key), _CODEC, fn, f"rate limit {key!r}"
        )
        return after

    async def get(self, key: str) -> KeyState | None:
        """``key``'s record, or ``None``."""
        got = await self.store.get(names.LIMITS_BUCKET, names.name_key(key))
        return None if got is None else _CODEC.decode(got[0])

    async def list(self) -> list[KeyState]:
        """Every key's record."""
        return [_CODEC.decode(v) for v in await self.store.values(names.LIMITS_BUCKET)]
