"""Provisioning rides out a bucket that is "not found" for a moment just after it was created:
on a fresh three-node cluster the stream of a new bucket has no leader yet, and an ojs-server
started there failed to open (the cluster step of CI caught it)."""

from __future__ import annotations

from typing import Any

import nats.js.errors

import nats
from ojs_nats import names
from ojs_nats.provision import delete_all, provision


async def test_a_bucket_not_found_just_after_its_creation_is_waited_for(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await delete_all(js)  # every bucket is created anew
        real_info, real_create = js.stream_info, js.create_key_value
        stream = names.kv_stream(names.POOLS_BUCKET)
        created: list[str] = []
        refused: list[str] = []

        async def create_key_value(config: Any, *args: Any, **kwargs: Any) -> Any:
            created.append(names.kv_stream(config.bucket))
            return await real_create(config, *args, **kwargs)

        async def stream_info(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == stream and name in created and not refused:
                refused.append(name)  # the first answer after its creation: no leader yet
                raise nats.js.errors.NotFoundError(code=404, err_code=10059)
            return await real_info(name, *args, **kwargs)

        js.stream_info = stream_info  # type: ignore[method-assign]
        js.create_key_value = create_key_value  # type: ignore[method-assign]
        buckets = await provision(js, 1, 30.0)
        assert refused == [stream]
        assert set(buckets) == set(names.BUCKETS)
    finally:
        await nc.close()
