"""Tenant configurations (the multi-tenancy extension) in ``OJS_TENANTS``: one record per
tenant, changed by compare-and-swap, so every replica applies the same limits (each reads a
tenant's record at most once a second, ``ojs_core.tenancy.CONFIG_TTL_S``).

A tenant id is stored under :func:`~ojs_nats.names.name_key` (hex with ``=`` when it holds
``:`` or other characters a KV key cannot); the record is
:meth:`~ojs_core.tenancy.TenantConfig.to_store` as JSON.
"""

from __future__ import annotations

from ojs_core import jsonio
from ojs_core.backend import TenantFn
from ojs_core.tenancy import TenantConfig

from . import names
from .records import Codec, RecordStore

__all__ = ["TenantBucket"]


class _TenantCodec(Codec[TenantConfig]):
    def __init__(self) -> None:
        super().__init__(TenantConfig)

    def encode(self, value: object) -> bytes:
        assert isinstance(value, TenantConfig)
        return jsonio.dumps(value.to_store())

    def decode(self, data: bytes) -> TenantConfig:
        return TenantConfig.from_store(jsonio.loads(data))


_CODEC = _TenantCodec()


class TenantBucket:
    """The :class:`~ojs_core.backend.TenantStore` of the NATS backend."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    async def change(
        self, tenant_id: str, fn: TenantFn
    ) -> tuple[TenantConfig | None, TenantConfig]:
        """Read-modify-write of the tenant's record by compare-and-swap."""
        before, after, _ = await self.store.swap(
            names.TENANTS_BUCKET, names.name_key(tenant_id), _CODEC, fn, f"tenant {tenant_id!r}"
        )
        assert after is not None
        return before, after

    async def get(self, tenant_id: str) -> TenantConfig | None:
        """The tenant's record, or ``None``."""
        got = await self.store.get(names.TENANTS_BUCKET, names.name_key(tenant_id))
        return None if got is None else _CODEC.decode(got[0])

    async def list(self) -> list[TenantConfig]:
        """Every tenant's record."""
        return [_CODEC.decode(v) for v in await self.store.values(names.TENANTS_BUCKET)]

    async def delete(self, tenant_id: str) -> TenantConfig | None:
        """Remove and return the tenant's record."""
        key = names.name_key(tenant_id)
        got = await self.store.get(names.TENANTS_BUCKET, key)
        if got is None:
            return None
        await self.store.remove(names.TENANTS_BUCKET, key)
        return _CODEC.decode(got[0])
