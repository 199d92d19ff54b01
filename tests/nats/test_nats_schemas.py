"""The schema registry on NATS (a real nats-server, two replicas): a schema registered through
one replica is enforced by the other within its cache time, and survives in the bucket."""

from __future__ import annotations

import pytest
from nats_support import eventually

from ojs_core.errors import ConflictError
from ojs_core.schema_registry import ArgsSchemaError
from ojs_core.service import JobService

STRINGS = {"type": "array", "items": {"type": "string"}}


async def test_a_schema_registered_on_one_replica_is_enforced_by_the_other(
    replicas: tuple[JobService, JobService],
) -> None:
    a, b = replicas
    for service in replicas:
        service.schemas.mode = "strict"
        service.schemas.cache_s = 0.2
    body = {"type": "names.add", "args": [1]}
    assert (await b.enqueue(body)).created  # nothing registered yet (and B has read that)
    await a.schemas.register({"job_type": "names.add", "version": "1.0.0", "schema": STRINGS})
    with pytest.raises(ConflictError):  # B sees A's registration at once when registering
        await b.schemas.register({"job_type": "names.add", "version": "1.0.0", "schema": {}})

    async def refused() -> bool:
        try:
            await b.enqueue(body)
        except ArgsSchemaError as exc:
            return exc.details["validation_errors"][0]["path"] == "args[0]"
        return False

    assert await eventually(refused, within=5, what="B refuses args that do not match")
    assert (await b.enqueue({"type": "names.add", "args": ["ada"]})).created
    assert [r.uri for r in await b.backend.list_schemas()] == [  # type: ignore[attr-defined]
        "urn:ojs:schema:names.add:1.0.0"
    ]
