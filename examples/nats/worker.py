"""A worker process on NATS: handlers for ``invoice.render`` jobs, until SIGTERM.

Run it beside the process that enqueues (``producer.py``, a web app, ``ojs-server``); both
reach one NATS::

    python worker.py --data-dir .ojs            # the embedded NATS of .ojs/ (joined if running)
    python worker.py --nats nats://nats:4222    # an external NATS or cluster

With ``--data-dir``, the first process to start on the directory runs the nats-server and the
others join it (the directory's token lets them in; see docs/embedding.md). The worker also
runs a ``Scheduler``: retries, delays and timeouts are applied by whichever process runs one,
each exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ojs_core import JobContext, JobService, Scheduler, Worker
from ojs_nats import NatsBackend
from ojs_nats.embedded import EmbeddedNatsServer


def connect(nats_url: str | None, data_dir: str) -> NatsBackend:
    """An external NATS when ``nats_url`` is given, else the embedded one of ``data_dir``."""
    if nats_url:
        return NatsBackend(nats_url)
    return NatsBackend(embedded=EmbeddedNatsServer(data_dir))


async def main(nats_url: str | None, data_dir: str, concurrency: int = 10) -> None:
    """Run handlers until SIGTERM or SIGINT, then drain gracefully."""
    backend = connect(nats_url, data_dir)
    await backend.open()
    service = JobService(backend)
    scheduler = Scheduler(service)
    worker = Worker(service, queues=["invoices"], concurrency=concurrency)

    @worker.handler("invoice.render")
    async def render(ctx: JobContext) -> dict[str, Any]:
        (number,) = ctx.args
        return {"pdf": f"invoice-{number}.pdf"}

    scheduler.start()
    worker.install_signal_handlers()  # SIGTERM/SIGINT: drain; a second signal: at once
    print("worker ready", flush=True)
    try:
        await worker.run()  # returns once stopped
    finally:
        await scheduler.stop()
        await backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nats", help="an external NATS URL (default: embedded)")
    parser.add_argument("--data-dir", default=".ojs", help="the embedded NATS's store")
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.nats, args.data_dir, args.concurrency))
