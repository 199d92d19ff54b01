"""The schema registry's records in ``OJS_SCHEMAS``: one key per schema URI (hex-encoded, as
:func:`~ojs_nats.names.name_key` does for names a key cannot hold), the record as JSON.

Registries are small (a few schemas per job type): a listing reads the last value of every
key in one batched read, and the registry in ``ojs_core`` caches it per process for a couple
of seconds.
"""

from __future__ import annotations

from ojs_core import jsonio
from ojs_core.schema_registry import SchemaRecord

from . import names
from .connection import Connection
from .jetstream import WrongSequenceError, check_size, commit
from .records import RecordStore

__all__ = ["SchemaBucket"]


class SchemaBucket:
    """Schemas by URI, created once (compare-and-swap on "no revision yet")."""

    def __init__(self, conn: Connection, store: RecordStore) -> None:
        self.conn = conn
        self.store = store

    async def put(self, record: SchemaRecord) -> bool:
        """Store ``record`` unless a schema holds its URI."""
        data = jsonio.dumps(record.to_wire())
        check_size(self.conn.nc, data, None)
        key = names.name_key(record.uri)
        value, revision = await self.store.entry(names.SCHEMAS_BUCKET, key)
        if value is not None:
            return False
        # Expecting the revision read (0, or a deletion marker's): a concurrent registration
        # of the same URI makes this one fail instead of overwriting it.
        op = (
            names.kv_subject(names.SCHEMAS_BUCKET, key),
            data,
            {names.EXPECTED_SUBJECT_SEQUENCE: str(revision)},
        )
        try:
            await commit(self.conn.nc, self.conn.js, [op])
        except WrongSequenceError:
            return False
        return True

    async def list(self) -> list[SchemaRecord]:
        """Every stored schema."""
        return [
            SchemaRecord.from_wire(jsonio.loads(v))
            for v in await self.store.values(names.SCHEMAS_BUCKET)
        ]

    async def delete(self, uri: str) -> bool:
        """Remove one schema; ``False`` if there was none."""
        key = names.name_key(uri)
        if await self.store.get(names.SCHEMAS_BUCKET, key) is None:
            return False
        purge = (
            names.kv_subject(names.SCHEMAS_BUCKET, key),
            b"",
            {names.KV_OPERATION: "PURGE", names.ROLLUP: "sub"},
        )
        await commit(self.conn.nc, self.conn.js, [purge])
        return True
