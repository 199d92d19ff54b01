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

import attrs
import httpx

from ojs_core.errors import ValidationError
from ojs_core.webhook_delivery import TIMEOUT_S
from ojs_core.webhook_urls import check_resolved, check_url

__all__ = ["MAX_REDIRECTS", "RESPONSE_BODY_CHARS", "SendResult", "WebhookSender"]

MAX_REDIRECTS = 3
#: The part of a response body kept (the test route shows it; nothing else reads it).
RESPONSE_BODY_CHARS = 1024
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

    async def check(self, url: str) -> None:
        """Raise :class:`~ojs_core.errors.ValidationError` unless ``url`` may be targeted now."""
        check_url(url, allow_http=self.allow_http, allow_private=self.allow_private)
        if not self.allow_private:
            await check_resolved(url)

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> SendResult:
        """POST ``body`` to ``url`` (following redirects); never raises for the endpoint's
        failures, which the result describes."""
        started = time.monotonic()

        def result(**kwargs: object) -> SendResult:
            elapsed = int((time.monotonic() - started) * 1000)
            return SendResult(elapsed_ms=elapsed, **kwargs)  # type: ignore[arg-type]

        try:
            async with asyncio.timeout(self.timeout_s):
                for _ in range(MAX_REDIRECTS + 1):
                    try:
                        await self.check(url)
                    except ValidationError as exc:
                        return result(status_code=None, error=f"refused URL: {exc}", refused=True)
                    response = await self._pool().post(url, content=body, headers=dict(headers))
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        url = urllib.parse.urljoin(url, location)
                        await response.aclose()
                        continue
                    text = response.text[:RESPONSE_BODY_CHARS]
                    return result(
                        status_code=response.status_code,
                        headers={k.lower(): v for k, v in response.headers.items()},
                        body=text,
                    )
                return result(status_code=None, error=f"more than {MAX_REDIRECTS} redirects")
        except TimeoutError:
            return result(status_code=None, error=f"timed out after {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return result(status_code=None, error=f"{type(exc).__name__}: {exc}"[:500])
