"""The webhook client: redirects followed by hand, each target checked, bounded in number.

The real receiver serves the redirect chains; a refused target is shown with httpx's
``MockTransport`` standing for a public endpoint (no DNS, no network), which redirects to the
cloud metadata address.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from webhook_receiver import receiving

from ojs_http.webhook_sender import MAX_REDIRECTS, RESPONSE_BODY_CHARS, WebhookSender


async def test_redirects_are_followed_with_the_same_body_and_signature() -> None:
    sender = WebhookSender(allow_http=True, allow_private=True)
    async with receiving() as receiver:
        receiver.answer((307, {"location": "/moved"}), 200)
        result = await sender.post(receiver.url, {"X-OJS-Signature": "sha256=ab"}, b"{}")
        await sender.close()
    assert result.status_code == 200
    assert [r.path for r in receiver.requests] == ["/hook", "/moved"]
    assert {r.body for r in receiver.requests} == {b"{}"}
    assert {r.headers["x-ojs-signature"] for r in receiver.requests} == {"sha256=ab"}


async def test_more_than_three_redirects_is_a_failed_attempt() -> None:
    sender = WebhookSender(allow_http=True, allow_private=True)
    async with receiving() as receiver:
        receiver.answer((302, {"location": "/again"}))
        result = await sender.post(receiver.url, {}, b"{}")
        await sender.close()
    assert result.status_code is None
    assert result.error is not None
    assert "redirects" in result.error
    assert len(receiver.requests) == MAX_REDIRECTS + 1


async def test_a_redirect_into_the_private_network_is_refused_unsent() -> None:
    seen: list[str] = []

    def public_endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "https://169.254.169.254/latest"})

    sender = WebhookSender(
        allow_http=False, allow_private=False, transport=httpx.MockTransport(public_endpoint)
    )
    result = await sender.post("https://93.184.215.14/hook", {}, b"{}")
    await sender.close()
    assert result.refused
    assert result.status_code is None
    assert seen == ["https://93.184.215.14/hook"]


async def test_a_refused_url_is_not_sent_at_all() -> None:
    sender = WebhookSender(allow_http=False, allow_private=False)
    async with receiving() as receiver:
        result = await sender.post(receiver.url, {}, b"{}")
        await sender.close()
    assert result.refused
    assert receiver.requests == []


async def test_a_slow_endpoint_times_out() -> None:
    sender = WebhookSender(allow_http=True, allow_private=True, timeout_s=0.2)
    async with receiving() as receiver:
        receiver.delay_s = 2.0
        result = await sender.post(receiver.url, {}, b"{}")
        await sender.close()
    assert result.status_code is None
    assert result.error is not None
    assert "timed out" in result.error


async def test_a_per_call_timeout_replaces_the_senders() -> None:
    """A subscription's own timeout (spec §7.3) bounds the whole attempt, shorter or longer
    than the sender's (the pool's per-operation timeouts follow it)."""
    sender = WebhookSender(allow_http=True, allow_private=True, timeout_s=0.2)
    async with receiving() as receiver:
        receiver.delay_s = 0.5
        longer = await sender.post(receiver.url, {}, b"{}", timeout_s=5.0)
        shorter = await WebhookSender(allow_http=True, allow_private=True).post(
            receiver.url, {}, b"{}", timeout_s=0.2
        )
        await sender.close()
    assert longer.status_code == 200, longer.error
    assert shorter.status_code is None
    assert shorter.error == "timed out after 0.2 s"


def test_an_idle_webhook_loop_polls_less_and_less_often() -> None:
    """Idle loops back off from the poll interval to a bound: a server without webhook
    traffic does not pull from NATS five times a second per loop."""
    from ojs_http.webhook_runner import IDLE_MAX_S, idle_delay

    delays = [idle_delay(0.2, n) for n in range(8)]
    assert delays[0] == 0.2
    assert delays == sorted(delays)
    assert delays[-1] == IDLE_MAX_S
    assert idle_delay(0.2, 10_000) == IDLE_MAX_S
    assert idle_delay(0.02, 10_000) == 0.2  # never more than ten poll intervals


async def test_the_request_goes_to_the_checked_address_not_a_second_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name is resolved once, checked, and that address is connected to
    (the name kept for Host and TLS); a second answer naming an inside address is never used."""
    answers = iter(["93.184.215.14", "127.0.0.1"])
    loop = asyncio.get_running_loop()

    async def resolve(host: str, port: int, **kwargs: object) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    seen: list[httpx.Request] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    sender = WebhookSender(
        allow_http=False, allow_private=False, transport=httpx.MockTransport(endpoint)
    )
    result = await sender.post("https://hooks.example.com:8443/h", {}, b"{}")
    await sender.close()
    assert result.status_code == 200
    (request,) = seen
    assert request.url.host == "93.184.215.14"
    assert request.url.port == 8443
    assert request.headers["host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"


async def test_a_huge_answer_is_not_read_whole() -> None:
    """A receiver's answer is read only up to a few kilobytes, however large it is."""
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 100 * 1024 * 1024:
            sent += 65536
            yield b"x" * 65536

    def endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    sender = WebhookSender(
        allow_http=False, allow_private=False, transport=httpx.MockTransport(endpoint)
    )
    result = await sender.post("https://93.184.215.14/h", {}, b"{}")
    await sender.close()
    assert result.status_code == 200
    assert len(result.body) == RESPONSE_BODY_CHARS
    assert sent <= 2 * 65536


async def test_a_failure_of_any_kind_is_a_failed_attempt_never_an_exception() -> None:
    """Whatever the client raises, the attempt fails (and is retried); only the kind of the
    failure is kept, not its text (a connection error names inside hosts and ports)."""

    def endpoint(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("connect to 10.1.2.3:5432 failed")

    sender = WebhookSender(
        allow_http=False, allow_private=False, transport=httpx.MockTransport(endpoint)
    )
    result = await sender.post("https://93.184.215.14/h", {}, b"{}")
    await sender.close()
    assert result.status_code is None
    assert result.error == "RuntimeError"
    assert not result.refused
