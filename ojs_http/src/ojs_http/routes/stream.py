"""Server-Sent Events: live lifecycle events of a job, a queue or everything.

``GET /ojs/v1/events/stream?channel=job:<id>|queue:<name>|all`` (the official SDKs' form),
``GET /ojs/v1/jobs/{job_id}/events`` and ``GET /ojs/v1/queues/{name}/events`` (the Go
servers' forms). Each event is sent with ``id:`` = its number in the event log, so a client
that reconnects with ``Last-Event-ID`` gets what it missed from the log, then live events.
``docs/events.md`` describes the format, the limits and the replica design.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute
from starlette.types import Message, Receive, Scope, Send

from ojs_core import jsonio
from ojs_core.codec import event_to_wire
from ojs_core.errors import ValidationError
from ojs_core.events import job_event
from ojs_core.fanout import (
    TERMINAL_EVENTS,
    Channel,
    EventHub,
    SlowConsumerError,
    StreamEndedError,
    parse_channel,
)
from ojs_core.model import Event, Job
from ojs_core.states import JobState
from ojs_core.tenant_scope import event_visible

from ..openapi import EVENT_STREAM
from ..routing import PRODUCER, Doc, Param, route
from ..settings import HttpSettings
from ._common import service
from .tenants import tenant_header

__all__ = ["WRITE_TIMEOUT_S", "EventStreamResponse", "event_hub", "routes", "sse_frame"]

log = logging.getLogger("ojs.http")

#: A write that the client does not take within this long ends its stream: a client that
#: stopped reading (its TCP window full) must not hold a stream slot forever.
WRITE_TIMEOUT_S = 30.0

#: The event a terminal job's one-event stream carries, by state.
_SNAPSHOT_TYPES = {
    JobState.COMPLETED: "job.completed",
    JobState.CANCELLED: "job.cancelled",
    JobState.DISCARDED: "job.discarded",
}
_MAX_EVENT_ID = 2**62


def event_hub(request: Request) -> EventHub:
    """The app's :class:`~ojs_core.fanout.EventHub`."""
    hub: EventHub = request.app.state.event_hub
    return hub


def sse_frame(event: Event, *, with_id: bool = True) -> str:
    """One event as an SSE frame: ``id:`` (its log number), ``event:`` (its type) and one
    ``data:`` line of JSON (the SDKs keep only the last ``data:`` line of a frame)."""
    data = jsonio.dumps(event_to_wire(event), default=str).decode()
    head = f"id: {event.seq}\n" if with_id else ""
    return f"{head}event: {event.type}\ndata: {data}\n\n"


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response whose every write must be taken within
    :data:`WRITE_TIMEOUT_S`; the stream ends otherwise (the connection is then closed).

    ``release`` runs when the response is done however it ends: a client that disconnects
    before the first frame never starts the body's generator, so its ``finally`` cannot be
    what gives the subscription back."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream, then release what it held."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()

    async def stream_response(self, send: Send) -> None:
        """Stream the frames, bounding each write."""

        async def bounded(message: Message) -> None:
            await asyncio.wait_for(send(message), WRITE_TIMEOUT_S)

        try:
            await super().stream_response(bounded)
        except TimeoutError:
            log.info("an event stream's client stopped reading; stream ended")
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()  # its subscription is released now, not at garbage collection


def last_event_id(request: Request) -> int | None:
    """The ``Last-Event-ID`` header (or ``?last_event_id=``, for clients that cannot set
    headers), a log number; a 400 naming it when it is not one."""
    raw = request.headers.get("last-event-id")
    path = "Last-Event-ID"
    if raw is None:
        raw, path = request.query_params.get("last_event_id"), "last_event_id"
    if raw is None or raw.strip() == "":
        return None
    return parse_event_id(raw.strip(), path)


def parse_event_id(raw: object, path: str) -> int:
    """An event's log number as a client sent it back (a number, or its digits as a string);
    a 400 naming ``path`` when it is not one this server could have sent."""
    value = raw
    if isinstance(raw, str):
        value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 19 else None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_EVENT_ID:
        raise ValidationError("must be the id of an event this server sent", path=path)
    return value


def _snapshot(job: Job) -> Event:
    when = job.completed_at or job.cancelled_at or job.discarded_at or job.created_at
    assert when is not None
    return job_event(_SNAPSHOT_TYPES[job.state], job, when, snapshot=True)


async def stream(request: Request, channel: Channel) -> Response:
    """Answer with the event stream of ``channel`` (see the module docstring)."""
    settings: HttpSettings = request.app.state.settings
    resume = last_event_id(request)
    hub = event_hub(request)
    svc = service(request)
    tenant = tenant_header(request)  # a scoped stream carries its tenant's events only
    # Subscribe before reading the job: an event that happens meanwhile is then queued.
    sub = await hub.subscribe([channel])
    try:
        job = await svc.get(channel.name, tenant=tenant) if channel.kind == "job" else None
    except BaseException:
        hub.unsubscribe(sub)
        raise
    terminal = job is not None and job.state.terminal

    async def frames() -> AsyncIterator[str]:
        try:
            yield f"retry: {settings.event_retry_ms}\n\n"
            if job is not None and terminal and resume is None:
                # Nothing more will happen: the state it ended in, and the end of the stream.
                yield sse_frame(_snapshot(job), with_id=False)
                return
            sent = resume or 0
            if resume is not None:
                async for event in hub.replay(sub, resume):
                    sent = event.seq
                    if not event_visible(svc, event, tenant):
                        continue
                    yield sse_frame(event)
                    if job is not None and event.type in TERMINAL_EVENTS:
                        return
                if terminal:
                    return
            while True:
                live = await sub.next(settings.event_heartbeat_s)
                if live is None:
                    yield ": heartbeat\n\n"
                    continue
                if live.seq <= sent:
                    continue  # already sent from the log
                sent = live.seq
                if not event_visible(svc, live, tenant):
                    continue
                yield sse_frame(live)
                if job is not None and live.type in TERMINAL_EVENTS:
                    return
        except SlowConsumerError:
            yield ": dropped: this client fell too far behind; reconnect with Last-Event-ID\n\n"
        except StreamEndedError:
            yield ": server shutting down; reconnect with Last-Event-ID\n\n"
        finally:
            hub.unsubscribe(sub)

    return EventStreamResponse(
        frames(),
        release=functools.partial(hub.unsubscribe, sub),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def events_stream(request: Request) -> Response:
    """``GET /ojs/v1/events/stream?channel=...``."""
    return await stream(request, parse_channel(request.query_params.get("channel")))


async def job_events(request: Request) -> Response:
    """``GET /ojs/v1/jobs/{job_id}/events``: the stream of one job."""
    return await stream(request, parse_channel("job:" + request.path_params["job_id"], "job_id"))


async def queue_events(request: Request) -> Response:
    """``GET /ojs/v1/queues/{name}/events``: the stream of one queue."""
    return await stream(request, parse_channel("queue:" + request.path_params["name"], "name"))


_STREAM = {200: {"type": "string", "description": "text/event-stream of OJS events"}}
_RESUME = Param(
    "last_event_id",
    {"type": "integer", "minimum": 0},
    "resume after this event (the Last-Event-ID header wins)",
)

routes: list[BaseRoute] = [
    route(
        "GET",
        "/ojs/v1/events/stream",
        events_stream,
        PRODUCER,
        Doc(
            "Stream events (Server-Sent Events) of a job, a queue or all",
            query=(
                Param(
                    "channel",
                    {"type": "string", "pattern": "^(job:.+|queue:.+|all)$"},
                    "job:<id>, queue:<name> or all",
                ),
                _RESUME,
            ),
            responses=_STREAM,
            media_type=EVENT_STREAM,
        ),
    ),
    route(
        "GET",
        "/ojs/v1/jobs/{job_id}/events",
        job_events,
        PRODUCER,
        Doc(
            "Stream one job's events (Server-Sent Events); ends when the job is finished",
            query=(_RESUME,),
            responses=_STREAM,
            media_type=EVENT_STREAM,
        ),
    ),
    route(
        "GET",
        "/ojs/v1/queues/{name}/events",
        queue_events,
        PRODUCER,
        Doc(
            "Stream one queue's events (Server-Sent Events)",
            query=(_RESUME,),
            responses=_STREAM,
            media_type=EVENT_STREAM,
        ),
    ),
]
