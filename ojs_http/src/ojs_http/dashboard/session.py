"""Stateless dashboard sessions: an admin API key logs in once, a signed cookie follows.

The cookie is ``v2.<expiry>.<mac>``: ``expiry`` is a Unix time and ``mac`` is
``HMAC-SHA256(k, "ojs-session|expiry")`` where ``k`` is PBKDF2-SHA256 (100,000 rounds, a fixed
salt) of the admin key's digest. The cookie names no key (the server tries each admin key), and
the slow derivation makes a stolen cookie a poor oracle for guessing the key offline: each
guess costs 100,000 hash rounds instead of two (``v1`` cookies carried a fast hash of the key;
they are no longer accepted). Nothing is stored on the server, so a cookie issued by one
process is valid on every replica and ``--workers N`` sibling that holds the same keys;
removing the key (and ``SIGHUP``) ends its sessions, and a session never outlives its expiry
(12 h by default).

A cookie authorises only what the dashboard needs (the admin API and the reads it shows) and
only for the dashboard's own requests: a cross-site page can neither read those answers (no
CORS) nor, because every unsafe method needs a same-origin ``Origin`` or
``Sec-Fetch-Site: same-origin`` *and* the ``X-OJS-Dashboard`` header a plain form cannot send,
change anything. ``SameSite=Strict`` keeps browsers from sending the cookie cross-site at all.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
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


#: Rounds of PBKDF2 between an admin key's digest and the key that signs its sessions.
_ROUNDS = 100_000
_SALT = b"ojs-dashboard-session-v2"
_COOKIE_SHAPE = re.compile(r"v2\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


@functools.lru_cache(maxsize=256)
def _signing_key(secret: bytes) -> bytes:
    """The key sessions of the admin key with digest ``secret`` are signed with (slow once,
    then cached: the server derives it for its own keys only)."""
    return hashlib.pbkdf2_hmac("sha256", secret, _SALT, _ROUNDS)


def _mac(secret: bytes, expiry: int) -> bytes:
    digest = hmac.new(
        _signing_key(secret), f"ojs-session|{expiry}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=")


def issue(secret: bytes, ttl_s: int, now: float | None = None) -> str:
    """A cookie value for the key whose digest is ``secret``, valid for ``ttl_s`` seconds."""
    expiry = int(now if now is not None else time.time()) + ttl_s
    return f"v2.{expiry}.{_mac(secret, expiry).decode('ascii')}"


def verify(value: str, secrets: Iterable[bytes], ttl_s: int, now: float | None = None) -> bool:
    """Whether ``value`` is an unexpired session signed with one of ``secrets``.

    An expiry further ahead than ``ttl_s`` (plus clock skew) is refused too, so a lifetime
    shortened by configuration applies to sessions already issued. Anything not shaped like a
    cookie this server issues (other characters, other lengths) is simply not a session.
    """
    shape = _COOKIE_SHAPE.fullmatch(value)
    if shape is None:
        return False
    expiry = int(shape.group(1))
    mac = shape.group(2).encode("ascii")
    current = now if now is not None else time.time()
    if not current < expiry <= current + ttl_s + _SKEW_S:
        return False
    ok = False
    for secret in secrets:
        # Every candidate is checked, so the time taken does not tell which one matched.
        if hmac.compare_digest(_mac(secret, expiry), mac):
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
