"""Stateless dashboard sessions: an admin API key logs in once, a signed cookie follows.

The cookie is ``v1.<key_id>.<expiry>.<mac>``: ``key_id`` names the admin key that logged in
(a hash of its digest, which tells nothing about the key), ``expiry`` is a Unix time, and
``mac`` is ``HMAC-SHA256(sha256(key), "ojs-session|key_id|expiry")``. Nothing is stored on the
server, so a cookie issued by one process is valid on every replica and ``--workers N``
sibling that holds the same keys; removing the key (and ``SIGHUP``) ends its sessions, and a
session never outlives its expiry (12 h by default).

A cookie authorises only what the dashboard needs (the admin API and the reads it shows) and
only for the dashboard's own requests: a cross-site page can neither read those answers (no
CORS) nor, because every unsafe method needs a same-origin ``Origin`` or
``Sec-Fetch-Site: same-origin`` *and* the ``X-OJS-Dashboard`` header a plain form cannot send,
change anything. ``SameSite=Strict`` keeps browsers from sending the cookie cross-site at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.requests import Request

from ..access import ROUTE_KEY
from ..auth import ApiKeys, ForbiddenError, Role

__all__ = [
    "COOKIE",
    "DASHBOARD_HEADER",
    "SAFE_METHODS",
    "cookie_accepted",
    "issue",
    "key_id",
    "same_origin",
    "session_roles",
    "verify",
]

#: The session cookie's name.
COOKIE = "ojs_session"
#: The header the dashboard's ``fetch`` sends; a cross-site HTML form cannot set it.
DASHBOARD_HEADER = "x-ojs-dashboard"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Clock skew tolerated between replicas when checking that an expiry is not too far ahead.
_SKEW_S = 300
#: Read-only routes outside ``/ojs/v1/admin/`` that the dashboard shows.
_DASHBOARD_READS = frozenset(
    {
        "/ojs/manifest",
        "/ojs/v1/cron",
        "/ojs/v1/events",
        "/ojs/v1/events/stream",
        "/ojs/v1/jobs/{job_id}/events",
        "/ojs/v1/workflows/{workflow_id}",
    }
)
#: Admin routes a session may never call: the test-mode wipe has no place in a dashboard.
_NEVER = frozenset({"/ojs/v1/admin/reset"})


def key_id(secret: bytes) -> str:
    """A short public name of the key whose digest is ``secret`` (a one-way hash of it)."""
    return hashlib.sha256(b"ojs-session-key-id|" + secret).hexdigest()[:16]


def _mac(secret: bytes, kid: str, expiry: int) -> str:
    digest = hmac.new(secret, f"ojs-session|{kid}|{expiry}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue(secret: bytes, ttl_s: int, now: float | None = None) -> str:
    """A cookie value for the key whose digest is ``secret``, valid for ``ttl_s`` seconds."""
    expiry = int(now if now is not None else time.time()) + ttl_s
    kid = key_id(secret)
    return f"v1.{kid}.{expiry}.{_mac(secret, kid, expiry)}"


def verify(value: str, secrets: Iterable[bytes], ttl_s: int, now: float | None = None) -> bool:
    """Whether ``value`` is an unexpired session signed with one of ``secrets``.

    An expiry further ahead than ``ttl_s`` (plus clock skew) is refused too, so a lifetime
    shortened by configuration applies to sessions already issued.
    """
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not parts[2].isdigit() or len(parts[2]) > 12:
        return False
    _, kid, raw_expiry, mac = parts
    expiry = int(raw_expiry)
    current = now if now is not None else time.time()
    if not current < expiry <= current + ttl_s + _SKEW_S:
        return False
    ok = False
    for secret in secrets:
        # Every candidate is checked, so the time taken does not tell which one matched.
        if key_id(secret) == kid and hmac.compare_digest(_mac(secret, kid, expiry), mac):
            ok = True
    return ok


def cookie_accepted(method: str, template: str) -> bool:
    """Whether a session may call the route with path ``template`` and ``method``."""
    if template in _NEVER:
        return False
    if template.startswith("/ojs/v1/admin/"):
        return True
    return method in SAFE_METHODS and template in _DASHBOARD_READS


def same_origin(request: Request) -> bool:
    """Whether the browser says the request comes from a page of this origin.

    ``Sec-Fetch-Site`` (set by the browser, not by scripts) is trusted when present; otherwise
    the ``Origin`` host must be this request's ``Host`` (the scheme is not compared, so a
    proxy terminating TLS in front of a plain-HTTP server still matches).
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return False
    host = request.headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


def _from_dashboard(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if request.method in SAFE_METHODS:
        # The dashboard's fetches send its header; its EventSource cannot send headers, but
        # the browser marks that request same-origin.
        if request.headers.get(DASHBOARD_HEADER) == "1":
            return site in (None, "same-origin")
        return site == "same-origin"
    return request.headers.get(DASHBOARD_HEADER) == "1" and same_origin(request)


def session_roles(request: Request) -> frozenset[Role]:
    """The roles a valid dashboard session grants this request (``admin``, or none).

    Raises 403 for a valid session used on an unsafe method from another origin or without
    the dashboard's header: that is a forged request, not a missing login.
    """
    value = request.cookies.get(COOKIE)
    keys: ApiKeys | None = getattr(request.app.state, "session_keys", None)
    if not value or keys is None:
        return frozenset()
    template = str(request.scope.get(ROUTE_KEY, ""))
    if not cookie_accepted(request.method, template):
        return frozenset()
    ttl = int(request.app.state.settings.dashboard_session_ttl_s)
    if not verify(value, keys.secrets_of(Role.ADMIN), ttl):
        return frozenset()
    if not _from_dashboard(request):
        raise ForbiddenError(
            "a dashboard session authorises only the dashboard's own same-origin requests "
            f"(send the {DASHBOARD_HEADER.title()} header from the same origin, "
            "or use Authorization: Bearer)"
        )
    return frozenset({Role.ADMIN})
