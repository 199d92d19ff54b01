"""Runs in its own environment (the official SDK's src on PYTHONPATH, and a protobuf old
enough for the SDK's dynamic messages): the SDK's ``GrpcTransport``, unchanged, against
``ojs-server --grpc-port``. argv: target, descriptor-set file, producer key, worker key.
Prints one JSON line of what it saw."""

import asyncio
import json
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, struct_pb2, timestamp_pb2  # noqa: F401 - the deps
from ojs.transport.grpc import GrpcTransport


def register(path: str) -> None:
    # The SDK looks its messages up in the default pool; it ships no generated code.
    files = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        files.ParseFromString(f.read())
    for proto in files.file:
        descriptor_pool.Default().Add(proto)


async def main() -> None:
    target, descriptors, producer, worker = sys.argv[1:5]
    register(descriptors)
    produce = GrpcTransport(target, auth=f"Bearer {producer}")
    work = GrpcTransport(target, api_key=worker)
    job = await produce.push({"type": "sdk.grpc", "args": ["hello", 2], "queue": "sdk"})
    fetched = await work.fetch(["sdk"], worker_id="sdk-worker")
    acked = await work.ack(fetched[0].id, {"done": True})
    info = await produce.info(job.id)
    health = await produce.health()
    manifest = await produce.manifest()
    print(
        json.dumps(
            {
                "pushed": job.id,
                "fetched": [j.id for j in fetched],
                "args": fetched[0].args,
                "acked": acked,
                "state": getattr(info.state, "value", info.state),
                "health": health["status"],
                "protocols": manifest["protocols"],
            }
        )
    )
    await produce.close()
    await work.close()


asyncio.run(main())
