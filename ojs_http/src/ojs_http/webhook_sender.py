"""One webhook request: POST with httpx, redirects followed by hand so each target is checked.

httpx could follow redirects itself, but a redirect is a new URL the subscriber chose: it must
pass the same checks as the subscription's URL (HTTPS unless allowed, no private address),
or a public endpoint could bounce the server into its own network. So redirects are followed
here, at most :data:`MAX_REDIRECTS`, each target checked (and resolved) first; the same body
and signature are posted again (the signature covers the body, not the URL). The whole
attempt, redirects included, is bounded by the timeout (30 s by default, spec §7.3).
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import attrs
import httpx

from ojs_core.errors import ValidationError
from ojs_core.webhook_delivery import TIMEOUT_S
from ojs_core.webhook_urls import IPAddress, check_resolved, check_url

__all__ = [
    "MAX_REDIRECTS",
    "RESPONSE_BODY_BYTES",
    "RESPONSE_BODY_CHARS",
    "SendResult",
    "WebhookSender",
]

MAX_REDIRECTS = 3
#: The part of a response body kept (the test route shows it; nothing else reads it), and
#: the most of it read off the connection.
RESPONSE_BODY_CHARS = 1024
RESPONSE_BODY_BYTES = 4096
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@attrs.frozen(kw_only=True)
class SendResult:
    """What one attempt saw: the final status (``None`` when no response came) and why not
    (``error``); ``refused`` when a URL may not be targeted (nothing was sent to it)."""

    status_code: int | None
    error: str | None = None
    refused: bool = False
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: str = ""
    elapsed_ms: int = 0


class WebhookSender:
    """Posts signed deliveries; one connection pool per server process."""

    def __init__(
        self,
        *,
        allow_http: bool,
        allow_private: bool,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.allow_http = allow_http
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _pool(self) -> httpx.AsyncClient:
        # Made on first use, on the loop that uses it (an app may be started more than once).
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                timeout=httpx.Timeout(self.timeout_s),
                transport=self._transport,
                # A subscriber's endpoint is not ours: no proxy or .netrc from the server's
                # environment.
                trust_env=False,
            )
        return self._client

    async def close(self) -> None:
        """Close the connection pool (a later send opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def check(self, url: str) -> list[IPAddress]:
        """Raise :class:`~ojs_core.errors.ValidationError` unless ``url`` may be targeted now;
        the checked addresses its host resolves to (none when private targets are allowed:
        the request resolves the name itself then)."""
        check_url(url, allow_http=self.allow_http, allow_private=self.allow_private)
        if self.allow_private:
            return []
        return await check_resolved(url)

    async def _send(
        self,
        url: str,
        addresses: list[IPAddress],
        headers: Mapping[str, str],
        body: bytes,
        timeout_s: float,
    ) -> SendResult:
        """One request, to a checked address when there is one (the name is not resolved
        again: DNS rebinding), its answer read only as far as :data:`RESPONSE_BODY_BYTES`."""
        request_url = httpx.URL(url)
        extensions: dict[str, Any] = {}
        sent_headers = dict(headers)
        if addresses:
            ip = addresses[0]
            sent_headers["Host"] = request_url.netloc.decode("ascii")
            extensions["sni_hostname"] = request_url.host  # TLS still checks the name
            request_url = request_url.copy_with(host=str(ip))
        request = self._pool().build_request(
            "POST",
            request_url,
            content=body,
            headers=sent_headers,
            extensions=extensions,
            timeout=httpx.Timeout(timeout_s),  # the pool's default is the server's timeout
        )
        response = await self._pool().send(request, stream=True)
        kept = bytearray()
        try:
            async for chunk in response.aiter_raw():
                kept += chunk[: RESPONSE_BODY_BYTES - len(kept)]
                if len(kept) >= RESPONSE_BODY_BYTES:
                    break  # a receiver's answer is not ours to hold: the rest is dropped
        except httpx.StreamConsumed:  # a transport that hands over a body already read
            kept = bytearray(response.content[:RESPONSE_BODY_BYTES])
        finally:
            await response.aclose()
        return SendResult(
            status_code=response.status_code,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=kept.decode("utf-8", "replace")[:RESPONSE_BODY_CHARS],
        )

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout_s: float | None = None,
    ) -> SendResult:
        """POST ``body`` to ``url`` (following redirects) within ``timeout_s`` (the
        subscription's own timeout, else the sender's); never raises for the endpoint's
        failures, which the result describes."""
        limit = timeout_s if timeout_s is not None else self.timeout_s
        started = time.monotonic()

        def result(**kwargs: object) -> SendResult:
            elapsed = int((time.monotonic() - started) * 1000)
            return SendResult(elapsed_ms=elapsed, **kwargs)  # type: ignore[arg-type]

        try:
            async with asyncio.timeout(limit):
                for _ in range(MAX_REDIRECTS + 1):
                    try:
                        addresses = await self.check(url)
                    except ValidationError as exc:
                        return result(status_code=None, error=f"refused URL: {exc}", refused=True)
                    got = await self._send(url, addresses, headers, body, limit)
                    location = got.headers.get("location")
                    if got.status_code in _REDIRECTS and location:
                        url = urllib.parse.urljoin(url, location)
                        continue
                    return result(status_code=got.status_code, headers=got.headers, body=got.body)
                return result(status_code=None, error=f"more than {MAX_REDIRECTS} redirects")
        except TimeoutError:
            return result(status_code=None, error=f"timed out after {limit:g} s")
        except Exception as exc:  # the endpoint's failure, whatever it is: the attempt failed
            # Only the kind of failure: the text of a connection error names inside hosts and
            # ports, which the test route would hand back to its caller.
            return result(status_code=None, error=type(exc).__name__)
