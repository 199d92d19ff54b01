"""``uv run python -m benchmarks.message_costs [--n N]``: what each kind of message ojs-nats
sends costs nats-server and the sending Python process, per message.

A job's lifecycle on NATS is ~16 messages (``benchmarks/deployment.py`` counts them); this
prices each kind on the streams ``NatsBackend`` provisions, so that the budget of a job can be
read off: N messages of one kind, pipelined from one nats-py connection, with the CPU time of
nats-server (from ``/proc``) and of this process. The first row is the floor: a core publish
to a subject no stream stores and nobody hears.

Not a test: no thresholds. See docs/performance.md ("What a message costs").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from benchmarks.deployment import Server, cpu_us, fresh
from ojs_nats import names
from ojs_nats.jetstream import Op, Pipeline

Send = Callable[[int], Awaitable[object]]


def server_cpu_s(pid: int) -> float:
    """User and system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / 100


async def price(server: Server, n: int, send: Send, pipe: Pipeline | None) -> tuple[float, float]:
    """Server and client CPU µs per message of ``n`` sends: ``send(i)`` makes the message;
    with ``pipe`` it is an op, written acknowledged 500 in flight at a time (as ojs-nats
    pipelines a batch), else it sends the message itself."""
    await asyncio.sleep(0.3)  # let the server settle after the previous row
    s0, c0 = server_cpu_s(server.proc.pid), cpu_us()
    if pipe is not None:
        for start in range(0, n, 500):
            ops = [await send(i) for i in range(start, min(n, start + 500))]
            for outcome in await pipe.publish_each(ops):  # type: ignore[arg-type]
                if isinstance(outcome, BaseException):
                    raise outcome
    else:
        for i in range(n):
            await send(i)
    client = cpu_us() - c0
    await asyncio.sleep(0.5)  # the server works off what it read
    return (server_cpu_s(server.proc.pid) - s0) * 1e6 / n, client / n


async def conduct(n: int) -> list[tuple[str, float, float]]:
    """Every row: (what, server µs/message, client µs/message)."""
    server = Server()
    await asyncio.sleep(1.0)
    rows: list[tuple[str, float, float]] = []
    try:
        await fresh(server)
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        pipe = Pipeline(nc, js)  # how ojs-nats sends an acknowledged write
        record = b"x" * 400  # about a stored job
        kv = f"$KV.{names.JOBS_BUCKET}.bench"

        async def op(subject: str, data: bytes, headers: dict[str, str]) -> Op:
            return (subject, data, headers)

        cases: list[tuple[str, Send, Pipeline | None]] = [
            (
                "core publish, no stream, no listener (floor)",
                lambda i: nc.publish("void.x", b"x"),
                None,
            ),
            (
                "event: core publish stored by OJS_EVENTS",
                lambda i: nc.publish("ojs.events.job.completed", record[:300]),
                None,
            ),
            (
                "counter increment (no reply)",
                lambda i: nc.publish(
                    names.counter_subject("q", "active"), b"", headers={"Nats-Incr": "+1"}
                ),
                None,
            ),
            (
                "record: KV put of 400 B, acknowledged",
                lambda i: op(f"{kv}.k{i}", record, {}),
                pipe,
            ),
            (
                "timer: message schedule, acknowledged",
                lambda i: op(
                    f"ojs.tsched.bench{i}",
                    b"t",
                    {
                        "Nats-Schedule": "@at 2031-01-01T00:00:00Z",
                        "Nats-Schedule-Target": f"ojs.tfire.bench{i}",
                    },
                ),
                pipe,
            ),
        ]
        for what, send, piped in cases:
            rows.append((what, *await price(server, n, send, piped)))
        info = await js.stream_info(f"KV_{names.JOBS_BUCKET}")
        first = info.state.first_seq
        delete = f"$JS.API.STREAM.MSG.DELETE.KV_{names.JOBS_BUCKET}"

        async def remove(i: int) -> None:  # as the index removes a superseded entry
            await nc.publish(delete, json.dumps({"seq": first + i, "no_erase": True}).encode())

        rows.append(
            ("index removal: MSG.DELETE request, no reply", *await price(server, n, remove, None))
        )
        await pipe.close()
        await nc.close()
    finally:
        server.stop()
    return rows


def main() -> None:
    """Console entry point."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.message_costs", description=__doc__)
    p.add_argument("--n", type=int, default=10_000, help="messages per row")
    args = p.parse_args()
    started = time.perf_counter()
    rows = asyncio.run(conduct(args.n))
    print("| message | nats-server CPU µs/msg | client CPU µs/msg |")
    print("|---|---|---|")
    for what, srv, cli in rows:
        print(f"| {what} | {srv:.1f} | {cli:.1f} |")
    print(f"\n({args.n:,} messages per row; ran in {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
