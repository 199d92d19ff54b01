"""The event fan-out, now :mod:`ojs_core.fanout` (shared with the gRPC binding); re-exported
here so that code importing ``ojs_http.fanout`` keeps working."""

from ojs_core.fanout import (
    TERMINAL_EVENTS,
    Channel,
    EventHub,
    SlowConsumerError,
    StreamEndedError,
    Subscription,
    TooManyStreamsError,
    parse_channel,
)

__all__ = [
    "TERMINAL_EVENTS",
    "Channel",
    "EventHub",
    "SlowConsumerError",
    "StreamEndedError",
    "Subscription",
    "TooManyStreamsError",
    "parse_channel",
]
