"""Event streams over real HTTP (memory backend): SSE channels, resume, heartbeats, limits, and
the WebSocket protocol. The app runs in the test's event loop on each HTTP server ojs-server
runs on, Uvicorn and Hypercorn (``stream_support.serving``); clients are httpx and
``websockets``, as an SDK would use them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import websockets
from stream_support import SSEReader, serving, until

from ojs_core.backend import Backend, EventFeed, EventFilter
from ojs_core.fanout import Channel, EventHub, SlowConsumerError, Subscription, parse_channel
from ojs_core.model import Event
from ojs_http import create_app
from ojs_http.auth import ApiKeys
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

V1 = "/ojs/v1"


def settings(**overrides: Any) -> HttpSettings:
    return HttpSettings(**({"scheduler_interval": 0.01} | overrides))


@pytest.fixture(params=["uvicorn", "hypercorn"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The app on each HTTP server ojs-server runs on."""
    app = create_app(MemoryBackend(), settings(event_heartbeat_s=0.2))
    async with serving(app, request.param) as url:
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=10) as c:
        yield c


async def enqueue(client: httpx.AsyncClient, queue: str = "default") -> str:
    response = await client.post(
        f"{V1}/jobs", json={"type": "s.job", "args": [], "options": {"queue": queue}}
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["job"]["id"]
    return job_id


async def work(client: httpx.AsyncClient, queue: str, job_id: str) -> None:
    """Fetch the job and acknowledge it."""
    response = await client.post(f"{V1}/workers/fetch", json={"queues": [queue], "worker_id": "w1"})
    assert [j["id"] for j in response.json()["jobs"]] == [job_id], response.text
    ack = await client.post(
        f"{V1}/workers/ack", json={"job_id": job_id, "result": {"ok": 1}, "worker_id": "w1"}
    )
    assert ack.status_code == 200, ack.text


def types(frames: Sequence[Any]) -> list[str]:
    return [f.event for f in frames]


async def test_a_job_from_enqueue_through_completion(client: httpx.AsyncClient) -> None:
    job_id = await enqueue(client, "sse")
    headers = {"Accept": "text/event-stream", "Last-Event-ID": "0"}
    url = f"{V1}/events/stream?channel=job:{job_id}"
    async with client.stream("GET", url, headers=headers) as response:
        assert response.headers["cache-control"] == "no-cache"
        reader = SSEReader(response)
        first = await reader.frame()
        assert first is not None
        assert first.retry == 3000
        (enqueued,) = await reader.events(1)  # from the log: it happened before we connected
        await work(client, "sse", job_id)
        rest = await reader.rest()  # the stream ends with the job
    frames = [enqueued, *(f for f in rest if f.event)]
    assert types(frames) == ["job.enqueued", "job.started", "job.completed"]
    ids = [int(f.id) for f in frames]
    assert ids == sorted(set(ids))
    for frame in frames:
        assert frame.data["type"] == frame.event
        assert frame.data["data"]["job_id"] == job_id
        assert frame.data["id"].startswith("evt_")
    assert frames[-1].data["data"]["result"] == {"ok": 1}
    # The same numbers as the polling endpoint's sequence.
    polled = (await client.get(f"{V1}/events", params={"job_id": job_id})).json()["events"]
    assert [e["seq"] for e in polled] == ids


async def test_the_go_servers_paths_and_live_only_without_last_event_id(
    client: httpx.AsyncClient,
) -> None:
    job_id = await enqueue(client, "goq")
    async with (
        client.stream("GET", f"{V1}/jobs/{job_id}/events") as by_job,
        client.stream("GET", f"{V1}/queues/goq/events") as by_queue,
    ):
        jobs, queues = SSEReader(by_job), SSEReader(by_queue)
        # Both streams are open (the advice is sent first); then the job runs.
        assert (await jobs.frame()) is not None
        assert (await queues.frame()) is not None
        await work(client, "goq", job_id)
        assert types(await jobs.events(2)) == ["job.started", "job.completed"]
        assert await jobs.rest() == []
        assert types(await queues.events(2)) == ["job.started", "job.completed"]


async def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(
    client: httpx.AsyncClient,
) -> None:
    url = f"{V1}/events/stream?channel=queue:resume"
    first = [await enqueue(client, "resume") for _ in range(2)]
    async with client.stream("GET", url, headers={"Last-Event-ID": "0"}) as response:
        seen = await SSEReader(response).events(2)
    assert [f.data["data"]["job_id"] for f in seen] == first
    # Missed while disconnected: two enqueues here and one in another queue.
    missed = [await enqueue(client, "resume") for _ in range(2)]
    await enqueue(client, "elsewhere")
    async with client.stream("GET", url, headers={"Last-Event-ID": seen[-1].id}) as response:
        reader = SSEReader(response)
        replayed = await reader.events(2)
        live_id = await enqueue(client, "resume")
        (live,) = await reader.events(1)
    assert [f.data["data"]["job_id"] for f in replayed] == missed
    assert live.data["data"]["job_id"] == live_id
    ids = [int(f.id) for f in (*seen, *replayed, live)]
    assert ids == sorted(set(ids))


async def test_a_finished_job_gets_one_event_and_the_stream_ends(
    client: httpx.AsyncClient,
) -> None:
    job_id = await enqueue(client, "done")
    await work(client, "done", job_id)
    async with client.stream("GET", f"{V1}/events/stream?channel=job:{job_id}") as response:
        frames = await SSEReader(response).rest()
    events = [f for f in frames if f.event]
    assert types(events) == ["job.completed"]
    assert events[0].id is None  # a snapshot of the state, not an entry of the log
    assert events[0].data["data"]["state"] == "completed"
    # Resuming a finished job replays what was missed, then ends too.
    async with client.stream(
        "GET", f"{V1}/jobs/{job_id}/events", headers={"Last-Event-ID": "0"}
    ) as response:
        frames = await SSEReader(response).rest()
    assert types([f for f in frames if f.event]) == ["job.enqueued", "job.started", "job.completed"]


async def test_queue_and_all_channels(client: httpx.AsyncClient) -> None:
    async with (
        client.stream("GET", f"{V1}/events/stream?channel=queue:qa") as qa,
        client.stream("GET", f"{V1}/events/stream?channel=all") as everything,
    ):
        a, b = SSEReader(qa), SSEReader(everything)
        assert (await a.frame()) is not None
        assert (await b.frame()) is not None
        in_b = await enqueue(client, "qb")
        in_a = await enqueue(client, "qa")
        assert [f.data["data"]["job_id"] for f in await b.events(2)] == [in_b, in_a]
        assert [f.data["data"]["job_id"] for f in await a.events(1)] == [in_a]


async def test_an_idle_stream_gets_heartbeats(client: httpx.AsyncClient) -> None:
    async with client.stream("GET", f"{V1}/events/stream?channel=queue:quiet") as response:
        reader = SSEReader(response)
        comments: list[str] = []
        while "heartbeat" not in comments:
            frame = await reader.frame()
            assert frame is not None
            comments.extend(frame.comments)


@pytest.mark.parametrize(
    ("path", "headers", "field"),
    [
        ("/events/stream", {}, "channel"),
        ("/events/stream?channel=job:", {}, "channel"),
        ("/events/stream?channel=queue:Bad!", {}, "channel"),
        ("/events/stream?channel=topic:x", {}, "channel"),
        ("/events/stream?channel=all", {"Last-Event-ID": "x"}, "Last-Event-ID"),
        ("/queues/Bad!/events", {}, "name"),
    ],
)
async def test_a_bad_channel_or_resume_point_is_a_400_naming_the_field(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], field: str
) -> None:
    response = await client.get(V1 + path, headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert [e["path"] for e in error["details"]["validation_errors"]] == [field]


async def test_an_unknown_job_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{V1}/events/stream?channel=job:nope")
    assert response.status_code == 404


async def test_streams_beyond_the_limit_are_refused_with_503() -> None:
    app = create_app(MemoryBackend(), settings(max_event_streams=1))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with client.stream("GET", f"{V1}/events/stream?channel=all") as held:
            assert (await SSEReader(held).frame()) is not None
            refused = await client.get(f"{V1}/queues/x/events")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
            assert refused.json()["error"]["code"] == "too_many_streams"
        # The slot is free again once the stream closed.
        await until(lambda: app.state.event_hub.streams == 0, "the stream to be released")
        async with client.stream("GET", f"{V1}/queues/x/events") as again:
            assert again.status_code == 200


def event(seq: int, queue: str = "q") -> Event:
    return Event(
        id=f"evt_{seq}", type="job.enqueued", time=datetime.now(UTC), data={"queue": queue}, seq=seq
    )


async def test_a_slow_subscriber_is_dropped_not_buffered() -> None:
    sub = Subscription([Channel("queue", "q")], max_pending=2, start=None)
    sub.offer(event(1))
    sub.offer(event(2, "other"))  # not its channel: not queued
    sub.offer(event(3))
    assert not sub.dropped
    sub.offer(event(4))
    assert sub.dropped
    with pytest.raises(SlowConsumerError):
        await sub.next(1.0)


def test_channels_parse() -> None:
    assert parse_channel("all") == Channel("all")
    assert parse_channel("job:019a-x") == Channel("job", "019a-x")
    assert str(parse_channel("queue:a.b")) == "queue:a.b"


class _Polled:
    """A memory backend that hides its live feed: the hub must poll the log instead."""

    def __init__(self, inner: MemoryBackend) -> None:
        self._inner = inner
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        if name == "subscribe_events":
            raise AttributeError(name)
        return getattr(self._inner, name)


async def test_a_backend_without_a_feed_is_polled() -> None:
    backend: Any = _Polled(MemoryBackend())
    assert not isinstance(backend, EventFeed)
    typed: Backend = backend
    app = create_app(typed, settings())
    app.state.event_hub.poll_interval_s = 0.02
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        job_id = await enqueue(client, "polled")
        async with client.stream("GET", f"{V1}/jobs/{job_id}/events") as response:
            reader = SSEReader(response)
            assert (await reader.frame()) is not None
            await work(client, "polled", job_id)
            assert types(await reader.events(2)) == ["job.started", "job.completed"]


# -- WebSocket --------------------------------------------------------------------------------


async def receive(ws: Any, *skip: str) -> dict[str, Any]:
    """The next message whose type is not in ``skip``."""
    while True:
        message: dict[str, Any] = json.loads(await ws.recv())
        if message["type"] not in skip:
            return message


async def test_websocket_subscribe_events_unsubscribe_and_errors(
    server: str, client: httpx.AsyncClient
) -> None:
    url = server.replace("http://", "ws://") + f"{V1}/ws"
    async with websockets.connect(url, subprotocols=["ojs.v1"], open_timeout=10) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ojs.v1"
        await ws.send(json.dumps({"action": "subscribe", "channel": "queue:wsq"}))
        assert await receive(ws, "ping") == {"type": "subscribed", "channel": "queue:wsq"}
        job_id = await enqueue(client, "wsq")
        message = await receive(ws, "ping")
        assert message["type"] == "event"
        assert message["channel"] == "queue:wsq"
        assert message["event"] == "job.enqueued"
        assert message["data"]["data"]["job_id"] == job_id
        assert int(message["id"]) > 0
        # A bad channel and a bad message are errors; the connection stays open.
        await ws.send(json.dumps({"action": "subscribe", "channel": "nope"}))
        error = await receive(ws, "ping")
        assert error["type"] == "error"
        assert error["code"] == "invalid_request"
        assert error["channel"] == "nope"
        assert error["details"]["validation_errors"][0]["path"] == "channel"
        await ws.send("not json")
        assert (await receive(ws, "ping"))["type"] == "error"
        await ws.send(json.dumps({"action": "dance", "channel": "all"}))
        assert (await receive(ws, "ping"))["type"] == "error"
        # A "digit" int() refuses (superscript two) is an error too, not a dead connection.
        await ws.send(json.dumps({"action": "subscribe", "channel": "all", "last_event_id": "²"}))
        bad_id = await receive(ws, "ping")
        assert bad_id["type"] == "error"
        assert bad_id["details"]["validation_errors"][0]["path"] == "last_event_id"
        # Resume: the job's enqueue again, from the log, then live events.
        await ws.send(
            json.dumps({"action": "subscribe", "channel": f"job:{job_id}", "last_event_id": 0})
        )
        assert await receive(ws, "ping") == {"type": "subscribed", "channel": f"job:{job_id}"}
        replayed = await receive(ws, "ping")
        assert (replayed["channel"], replayed["event"]) == (f"job:{job_id}", "job.enqueued")
        await ws.send(json.dumps({"action": "unsubscribe", "channel": "queue:wsq"}))
        assert await receive(ws, "ping") == {"type": "unsubscribed", "channel": "queue:wsq"}
        await work(client, "wsq", job_id)
        started = await receive(ws, "ping")
        assert (started["channel"], started["event"]) == (f"job:{job_id}", "job.started")
        completed = await receive(ws, "ping")
        assert (completed["channel"], completed["event"]) == (f"job:{job_id}", "job.completed")
        # Idle: pings.
        assert (await receive(ws))["type"] == "ping"


async def test_the_hub_reads_back_what_the_feed_skipped() -> None:
    # Core NATS may drop feed messages (a reconnect): the hub notices the jump in numbers and
    # reads the skipped events from the log. Here the hub stops hearing the feed for two
    # events, then hears the third: its subscriber still gets all of them, in order.
    backend = MemoryBackend()
    hub = EventHub(backend)
    sub = await hub.subscribe([Channel("all")])
    await backend.publish_events([event(0)])
    assert (await sub.next(5.0)) is not None
    assert hub._unsubscribe is not None
    await hub._unsubscribe()  # deaf from here on
    await backend.publish_events([event(0), event(0), event(0)])
    logged = await backend.read_events(EventFilter(after=hub.cursor or 0))
    hub._heard(logged[-1])  # the feed delivers the third, having lost two
    got = [await sub.next(5.0) for _ in logged]
    assert [e.seq for e in got if e] == [e.seq for e in logged]
    await hub.close()


async def test_a_quiet_feed_is_checked_against_the_log() -> None:
    # The feed lost the last events before a quiet spell: the hub's idle check finds them.
    backend = MemoryBackend()
    hub = EventHub(backend)
    sub = await hub.subscribe([Channel("all")])
    await backend.publish_events([event(0)])
    assert (await sub.next(5.0)) is not None
    assert hub._unsubscribe is not None
    await hub._unsubscribe()  # deaf from here on
    await backend.publish_events([event(0), event(0)])
    hub.idle_check_s = 0.05
    hub._wake.set()  # the loop picks up the shorter check now
    got = [await sub.next(5.0) for _ in range(2)]
    assert [e.seq for e in got if e] == [2, 3]
    await hub.close()


async def test_websocket_handshake_needs_a_role_that_may_read_events() -> None:
    keys = ApiKeys.load("admin:KA,producer:KP,worker:KW")
    async with serving(create_app(MemoryBackend(), settings(), auth=keys)) as url:
        ws_url = url.replace("http://", "ws://") + f"{V1}/ws"
        for headers, status in (({}, 403), ({"Authorization": "Bearer KW"}, 403)):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(ws_url, additional_headers=headers, open_timeout=10)
            assert refused.value.response.status_code == status
        async with websockets.connect(
            ws_url, additional_headers={"Authorization": "Bearer KP"}, open_timeout=10
        ) as ws:
            await ws.send(json.dumps({"action": "subscribe", "channel": "all"}))
            assert await receive(ws, "ping") == {"type": "subscribed", "channel": "all"}


async def test_a_client_gone_before_the_first_frame_gives_its_stream_back() -> None:
    # The disconnect arrives before the body's generator ever starts (its finally never runs):
    # the subscription must still be released, or such clients use up max_event_streams.
    app = create_app(MemoryBackend(), settings())
    hub: EventHub = app.state.event_hub
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/ojs/v1/events/stream",
        "raw_path": b"/ojs/v1/events/stream",
        "query_string": b"channel=all",
        "root_path": "",
        "headers": [(b"host", b"t")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            raise OSError("connection reset by peer")

    async with app.router.lifespan_context(app):
        for _ in range(3):
            with contextlib.suppress(OSError):
                await app(scope, receive, send)
        assert hub.streams == 0
