"""A producer process on NATS: enqueue ``invoice.render`` jobs and wait for their results.

Its worker runs in another process (``worker.py``); both reach one NATS::

    python producer.py --data-dir .ojs --count 100
    python producer.py --nats nats://nats:4222 --count 100

Prints one JSON line: how many jobs completed and one of their results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from ojs_core import Client
from ojs_nats import NatsBackend
from ojs_nats.embedded import EmbeddedNatsServer


async def main(nats_url: str | None, data_dir: str, count: int) -> dict[str, Any]:
    """Enqueue ``count`` jobs, wait (at most a minute) until all are completed."""
    if nats_url:
        backend = NatsBackend(nats_url)
    else:
        backend = NatsBackend(embedded=EmbeddedNatsServer(data_dir))
    await backend.open()
    try:
        client = Client(backend)
        jobs = [await client.enqueue("invoice.render", [n], queue="invoices") for n in range(count)]
        async with asyncio.timeout(60):
            done = [await client.wait(job.id) for job in jobs if job is not None]
        states = {job.state.value for job in done}
        return {"completed": len(done), "states": sorted(states), "first": done[0].result}
    finally:
        await backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nats", help="an external NATS URL (default: embedded)")
    parser.add_argument("--data-dir", default=".ojs", help="the embedded NATS's store")
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.nats, args.data_dir, args.count))))
