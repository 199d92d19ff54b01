"""The dashboard's HTTP side: the HTML shell, its static files, login and logout.

Every ``/ojs/admin/*`` URL answers the same small HTML shell; the ES modules in ``static/``
pick the view from the URL and fetch the JSON admin API. No page embeds data: the shell holds
only the mount prefix (escaped), so job arguments never pass through server-side HTML.
Every response carries :data:`SECURITY_HEADERS` (a CSP without inline script or style).
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import ApiKeys, Role, key_digest
from ..routes._common import prefixed
from ..settings import HttpSettings
from . import session

__all__ = ["SECURITY_HEADERS", "DashboardRoute", "dashboard_routes"]

log = logging.getLogger("ojs.dashboard")

#: The dashboard's URL within the app (the mount prefix comes in front).
BASE = "/ojs/admin"
#: A login form's body is one key and a path: anything larger is not the form.
_MAX_LOGIN_BODY = 8192

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_NEXT = re.compile(r"/ojs/admin(?:/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?(?:\?[^\s#\\]*)?")


class DashboardRoute(Route):
    """A route of the dashboard's pages (not of the API: no OpenAPI entry).

    ``access`` says who may load it, as :class:`~ojs_http.routing.OJSRoute` does: the pages
    are public (they hold no data; the API calls they make are authorised one by one), the
    shell redirects to the login form when a session is required and missing.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], *, method: str) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.access = "public"


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    """Every file of ``static/`` by name: body, content type and ETag (read once)."""
    files: dict[str, tuple[bytes, str, str]] = {}
    root = resources.files(__package__).joinpath("static")

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            name = prefix + child.name
            if child.is_dir():
                walk(child, name + "/")
                continue
            suffix = "." + child.name.rsplit(".", 1)[-1]
            if suffix in _TYPES:
                body = child.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                files[name] = (body, _TYPES[suffix], etag)

    walk(root, "")
    return files


_STATIC: dict[str, tuple[bytes, str, str]] | None = None


def _static() -> dict[str, tuple[bytes, str, str]]:
    global _STATIC
    if _STATIC is None:
        _STATIC = _load_static()
    return _STATIC


def _headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**SECURITY_HEADERS, **(extra or {})}


def _html(body: str, status: int = 200, extra: Mapping[str, str] | None = None) -> Response:
    headers = _headers({"Cache-Control": "no-store", **(extra or {})})
    return Response(body, status, headers, media_type="text/html; charset=utf-8")


def _root(request: Request) -> str:
    return prefixed(request, "")


def _settings(request: Request) -> HttpSettings:
    settings: HttpSettings = request.app.state.settings
    return settings


def _auth_mode(request: Request) -> str:
    """``open`` (no authenticator), ``session`` (API keys log in) or ``external`` (the host
    application's authenticator decides, e.g. from its own cookie)."""
    state = request.app.state
    if getattr(state, "authenticate", None) is None:
        return "open"
    return "session" if getattr(state, "session_keys", None) is not None else "external"


def _has_session(request: Request) -> bool:
    keys: ApiKeys | None = getattr(request.app.state, "session_keys", None)
    value = request.cookies.get(session.COOKIE)
    if keys is None or not value:
        return False
    ttl = _settings(request).dashboard_session_ttl_s
    return session.verify(value, keys.secrets_of(Role.ADMIN), ttl)


def _page(request: Request, title: str, main: str, *, auth: str, script: bool) -> str:
    root = html.escape(_root(request))
    static = f"{root}{BASE}/static"
    # theme.js applies the saved theme before the first paint (login page included).
    scripts = f'<script src="{static}/theme.js"></script>\n'
    if script:
        scripts += f'<script type="module" src="{static}/app.js"></script>\n'
    return (
        "<!doctype html>\n"
        f'<html lang="en" data-root="{root}" data-auth="{html.escape(auth)}">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        f'<link rel="icon" href="{static}/favicon.svg" type="image/svg+xml">\n'
        f'<link rel="stylesheet" href="{static}/app.css">\n'
        f"{scripts}"
        "</head>\n"
        f"<body>\n{main}\n</body>\n</html>\n"
    )


async def shell(request: Request) -> Response:
    """The HTML shell of every dashboard view; the modules render the view from the URL."""
    mode = _auth_mode(request)
    if mode == "session" and not _has_session(request):
        target = request.url.path[len(_root(request)) :]
        if request.url.query:
            target += "?" + request.url.query
        login = f"{_root(request)}{BASE}/login?next={quote(target, safe='/')}"
        return Response(status_code=303, headers=_headers({"Location": login}))
    main = (
        '<noscript><p class="notice">The OJS dashboard needs JavaScript.</p></noscript>\n'
        '<div id="app" aria-live="polite"></div>'
    )
    return _html(_page(request, "OJS dashboard", main, auth=mode, script=True))


async def static(request: Request) -> Response:
    """One file of the dashboard's ``static/`` folder (an ETag; revalidated on each load)."""
    found = _static().get(request.path_params["path"])
    if found is None:
        return Response("not found", 404, _headers(), media_type="text/plain")
    body, media_type, etag = found
    headers = _headers({"ETag": etag, "Cache-Control": "no-cache"})
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, 200, headers, media_type=media_type)


def _safe_next(raw: str | None) -> str:
    """A dashboard path to go to after login; anything else (another site, ``//host``,
    a backslash) becomes the dashboard's home."""
    if raw and len(raw) < 2048 and "//" not in raw and _NEXT.fullmatch(raw):
        return raw
    return BASE


def _login_page(request: Request, *, error: str = "", next_path: str = BASE) -> str:
    root = html.escape(_root(request))
    mode = _auth_mode(request)
    if mode == "external":
        form = (
            "<p>This server authenticates with its host application's credentials, not API "
            "keys: sign in there, then open the dashboard.</p>"
        )
    else:
        form = (
            f'<form method="post" action="{root}{BASE}/login" class="login-form">\n'
            f'<input type="hidden" name="next" value="{html.escape(next_path)}">\n'
            '<label for="key">Admin API key</label>\n'
            '<input id="key" name="key" type="password" autocomplete="current-password" '
            'required autofocus spellcheck="false">\n'
            '<button type="submit">Sign in</button>\n'
            "</form>"
        )
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>\n' if error else ""
    ttl_h = _settings(request).dashboard_session_ttl_s / 3600
    main = (
        '<main class="login">\n<h1>OJS dashboard</h1>\n'
        f"{alert}{form}\n"
        f'<p class="muted">A sign-in lasts {ttl_h:g} h. The key is checked, never stored: '
        "the session is a signed cookie.</p>\n</main>"
    )
    return _page(request, "Sign in - OJS dashboard", main, auth=mode, script=False)


async def login_form(request: Request) -> Response:
    """``GET /ojs/admin/login``: the sign-in form (the dashboard itself when auth is off)."""
    if _auth_mode(request) == "open":
        return Response(status_code=303, headers=_headers({"Location": _root(request) + BASE}))
    next_path = _safe_next(request.query_params.get("next"))
    return _html(_login_page(request, next_path=next_path))


def _secure(request: Request) -> bool:
    mode = _settings(request).dashboard_cookie_secure
    if mode != "auto":
        return mode == "always"
    if request.url.scheme == "https":
        return True
    # The browser's Origin says how the user reached us; the Host may be a proxy's rewrite
    # (nginx's proxy_pass http://127.0.0.1:8080 sends that Host for an https:// page).
    origin = request.headers.get("origin")
    if origin and origin != "null":
        parts = urlsplit(origin)
        if parts.scheme != "http":
            return True
        host = (parts.hostname or "").lower()
    else:
        host = (request.url.hostname or "").strip("[]").lower()
    # Plain HTTP: a Secure cookie would never come back, which is right on a public address
    # (use TLS) and only in the way on a developer's http://localhost.
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _cookie_path(request: Request) -> str:
    return _root(request) or "/"


async def login(request: Request) -> Response:
    """``POST /ojs/admin/login`` (a form): an admin key in, a session cookie out."""
    mode = _auth_mode(request)
    if mode != "session":
        return await login_form(request)
    if not session.same_origin(request):
        return _html(_login_page(request, error="Sign in from this server's own page."), 403)
    body = await _read_limited(request)
    if body is None:
        return _html(_login_page(request, error="The form is too large."), 413)
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    except ValueError:  # more fields than the form has
        return _html(_login_page(request, error="The form is not this page's form."), 400)
    key = (fields.get("key") or [""])[0].strip()
    next_path = _safe_next((fields.get("next") or [""])[0])
    keys: ApiKeys = request.app.state.session_keys
    roles = keys.roles_for(key) if key else frozenset()
    if Role.ADMIN not in roles:
        # Neither the key nor a hint of it is logged; the access log has the 401 or 403.
        error = (
            "This key's role cannot use the dashboard: sign in with an admin key."
            if roles
            else "That key is not valid."
        )
        page = _login_page(request, error=error, next_path=next_path)
        return _html(page, 403 if roles else 401)
    ttl = _settings(request).dashboard_session_ttl_s
    response = Response(status_code=303, headers=_headers({"Location": _root(request) + next_path}))
    response.set_cookie(
        session.COOKIE,
        session.issue(key_digest(key), ttl),
        max_age=ttl,
        path=_cookie_path(request),
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    log.info("dashboard sign-in (session for %d s)", ttl)
    return response


async def logout(request: Request) -> Response:
    """``POST /ojs/admin/logout``: forget the cookie in this browser."""
    if not session.same_origin(request):
        return Response("cross-origin logout refused", 403, _headers(), media_type="text/plain")
    location = f"{_root(request)}{BASE}/login" if _auth_mode(request) != "open" else BASE
    response = Response(status_code=303, headers=_headers({"Location": location}))
    response.delete_cookie(
        session.COOKIE,
        path=_cookie_path(request),
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


async def _read_limited(request: Request) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_LOGIN_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def dashboard_routes() -> list[Route]:
    """The dashboard's routes; the catch-all shell comes last."""
    return [
        DashboardRoute(f"{BASE}/static/{{path:path}}", static, method="GET"),
        DashboardRoute(f"{BASE}/login", login_form, method="GET"),
        DashboardRoute(f"{BASE}/login", login, method="POST"),
        DashboardRoute(f"{BASE}/logout", logout, method="POST"),
        DashboardRoute(BASE, shell, method="GET"),
        DashboardRoute(f"{BASE}/{{view:path}}", shell, method="GET"),
    ]
