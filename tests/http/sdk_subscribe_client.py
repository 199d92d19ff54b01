"""Run by ``test_http_sdk_subscribe.py`` with the official SDK on ``PYTHONPATH``: subscribe with
``ojs.subscribe.subscribe_job`` or ``subscribe_queue`` and print each event as a JSON line.

``python sdk_subscribe_client.py BASE job|queue NAME COUNT``: stops after COUNT events, or when
the server ends the stream (a terminal job's stream closes after its last event).
"""

from __future__ import annotations

import asyncio
import json
import sys

from ojs.subscribe import subscribe_job, subscribe_queue


async def main(base: str, kind: str, name: str, count: int) -> None:
    """Print up to ``count`` events of the channel, one JSON object per line."""
    stream = subscribe_job(base, name) if kind == "job" else subscribe_queue(base, name)
    print(json.dumps({"ready": True}), flush=True)
    seen = 0
    async for event in stream:
        print(json.dumps({"id": event.id, "type": event.type, "data": event.data}), flush=True)
        seen += 1
        if seen >= count:
            break


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
