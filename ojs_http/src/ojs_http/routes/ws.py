"""WebSocket events: ``GET /ojs/v1/ws``, subprotocol ``ojs.v1``.

The client sends ``{"action": "subscribe" | "unsubscribe", "channel": "job:<id>" |
"queue:<name>" | "all"}`` (``subscribe`` may add ``"last_event_id": N`` to get the logged events
it missed first); the server answers ``{"type": "subscribed" | "unsubscribed", "channel"}``,
sends ``{"type": "event", "channel", "event", "id", "timestamp", "data"}`` for each event of a
subscribed channel, ``{"type": "ping"}`` when idle, and ``{"type": "error", "code", "message"}``
for a message it cannot act on (the connection stays open). One connection is one stream
against the process's limit, whatever its channels. ``docs/events.md`` has the details.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.routing import BaseRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ojs_core import jsonio
from ojs_core.codec import event_to_wire
from ojs_core.errors import OJSError, ValidationError
from ojs_core.fanout import (
    Channel,
    EventHub,
    SlowConsumerError,
    StreamEndedError,
    Subscription,
    parse_channel,
)
from ojs_core.model import Event
from ojs_core.service import JobService
from ojs_core.tenant_scope import event_visible
from ojs_core.timeutil import format_ts

from ..routing import PRODUCER, OJSWebSocketRoute
from ..settings import HttpSettings
from .stream import WRITE_TIMEOUT_S, parse_event_id
from .tenants import tenant_header

__all__ = ["MAX_CHANNELS", "SUBPROTOCOL", "routes"]

SUBPROTOCOL = "ojs.v1"
#: Channels one connection may hold at once.
MAX_CHANNELS = 100
#: Close codes: the client fell behind or the server is full or stopping (try again later).
_TRY_AGAIN_LATER = 1013
#: A handshake the server refuses for what it carries (a malformed X-OJS-Tenant).
_POLICY_VIOLATION = 1008


class _Connection:
    """One WebSocket client: its subscription, and the one task that writes to its socket
    (so that a replay and the live events of a channel go out in order)."""

    def __init__(
        self, ws: WebSocket, hub: EventHub, sub: Subscription, tenant: str | None = None
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.sub = sub
        #: ``X-OJS-Tenant`` of the handshake: only that tenant's events are sent.
        self.tenant = tenant
        self.service: JobService = ws.app.state.service
        self.settings: HttpSettings = ws.app.state.settings
        #: The client's messages, handled by the writer; bounded: a client that floods
        #: waits (its socket is not read meanwhile).
        self.inbox: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        #: The number of the last event sent, per channel: replays and live events overlap.
        self._sent: dict[Channel, int] = {}

    async def send(self, message: dict[str, Any]) -> None:
        # A client that stopped reading must not hold its slot forever (TimeoutError ends it).
        text = jsonio.dumps(message, default=str).decode()
        await asyncio.wait_for(self.ws.send_text(text), WRITE_TIMEOUT_S)

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", "code": code, "message": message, **extra})

    async def send_event(self, channel: Channel, event: Event) -> None:
        if not event_visible(self.service, event, self.tenant):
            return
        if event.seq <= self._sent.get(channel, 0):
            return
        self._sent[channel] = event.seq
        await self.send(
            {
                "type": "event",
                "channel": str(channel),
                "event": event.type,
                "id": str(event.seq),
                "timestamp": format_ts(event.time),
                "data": event_to_wire(event),
            }
        )

    async def handle(self, raw: str) -> None:
        ok, message = jsonio.try_loads(raw.encode())
        if not ok or not isinstance(message, dict):
            await self.error("invalid_request", "messages must be JSON objects")
            return
        action = message.get("action")
        if action not in ("subscribe", "unsubscribe"):
            await self.error(
                "invalid_request", "action must be subscribe or unsubscribe", path="action"
            )
            return
        try:
            channel = parse_channel(message.get("channel"))
            resume = _resume(message.get("last_event_id"))
        except ValidationError as exc:
            await self.error(
                exc.code,
                exc.message,
                channel=message.get("channel"),
                details=exc.to_wire(None)["error"].get("details"),
            )
            return
        if action == "unsubscribe":
            self.sub.channels.discard(channel)
            self._sent.pop(channel, None)
            await self.send({"type": "unsubscribed", "channel": str(channel)})
            return
        if channel not in self.sub.channels and len(self.sub.channels) >= MAX_CHANNELS:
            await self.error(
                "invalid_request", f"at most {MAX_CHANNELS} channels per connection", path="channel"
            )
            return
        self.sub.channels.add(channel)
        # Live events of the channel are queued from here on: the replay reaches at least
        # what the hub had fanned out by now.
        live_from = self.hub.cursor
        await self.send({"type": "subscribed", "channel": str(channel)})
        if resume is not None:
            self._sent[channel] = resume
            # The replay reads the whole log after ``resume``: only this channel's events.
            probe = Subscription([channel], 0, live_from)
            async for event in self.hub.replay(probe, resume):
                await self.send_event(channel, event)

    async def write(self) -> None:
        """Handle the client's messages and forward live events (one message per subscribed
        channel an event matches); a ping when idle."""
        while True:
            while not self.inbox.empty():
                await self.handle(self.inbox.get_nowait())
            event = await self.sub.next(self.settings.event_heartbeat_s)
            if event is None:
                if self.inbox.empty():
                    await self.send({"type": "ping"})
                continue
            for channel in tuple(self.sub.channels):
                if channel.matches(event):
                    await self.send_event(channel, event)


def _resume(raw: object) -> int | None:
    return None if raw is None else parse_event_id(raw, "last_event_id")


async def websocket_events(ws: WebSocket) -> None:
    """``GET /ojs/v1/ws``: subscribe and unsubscribe to channels, receive their events."""
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    hub: EventHub = ws.app.state.event_hub
    try:
        tenant = tenant_header(ws)
    except ValidationError as exc:  # a malformed X-OJS-Tenant: the client's mistake
        await ws.send_text(jsonio.dumps({"type": "error", **exc.to_wire()["error"]}).decode())
        await ws.close(_POLICY_VIOLATION)
        return
    try:
        sub = await hub.subscribe([])
    except OJSError as exc:
        await ws.send_text(
            jsonio.dumps({"type": "error", "code": exc.code, "message": exc.message}).decode()
        )
        await ws.close(_TRY_AGAIN_LATER)
        return
    conn = _Connection(ws, hub, sub, tenant)
    writer = asyncio.get_running_loop().create_task(conn.write())
    reader = asyncio.get_running_loop().create_task(_read(conn))
    try:
        done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        failure = next((t.exception() for t in done if not t.cancelled()), None)
        if isinstance(failure, StreamEndedError):
            slow = isinstance(failure, SlowConsumerError)
            with contextlib.suppress(Exception):
                await conn.error(
                    "slow_consumer" if slow else "shutting_down",
                    "this client fell too far behind; reconnect and resubscribe with last_event_id"
                    if slow
                    else "the server is shutting down; reconnect",
                )
                await ws.close(_TRY_AGAIN_LATER)
    finally:
        hub.unsubscribe(sub)
        for task in (writer, reader):
            task.cancel()
        await asyncio.gather(writer, reader, return_exceptions=True)


async def _read(conn: _Connection) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await conn.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode(errors="replace")
            await conn.inbox.put(text)
            conn.sub.poke()


routes: list[BaseRoute] = [
    OJSWebSocketRoute(
        "/ojs/v1/ws",
        websocket_events,
        access=PRODUCER,
        summary="Subscribe to events over a WebSocket (subprotocol ojs.v1)",
    ),
]
