"""The web dashboard's server side: the shell, static files, login, the session cookie and
its CSRF rules, security headers, and a mount prefix (docs/dashboard.md).

The app runs over a MemoryBackend through httpx's ASGI transport; the browser tests
(tests/browser/) drive the same pages in Chromium.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from ojs_http import create_app, lifespan
from ojs_http.auth import ApiKeys, Role, key_digest
from ojs_http.dashboard import session
from ojs_http.dashboard.pages import SECURITY_HEADERS
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

KEYS = "admin:KA-secret-admin-key,producer:KP-producer-key,worker:KW-worker-key"
ADMIN_KEY = "KA-secret-admin-key"
ORIGIN = "http://test"
DASH = {"X-OJS-Dashboard": "1", "Origin": ORIGIN}
STATIC = Path(__file__).parents[2] / "ojs_http/src/ojs_http/dashboard/static"


def make_app(keys: ApiKeys | None, **settings: Any) -> Starlette:
    options: dict[str, Any] = {"run_scheduler": False, **settings}
    return create_app(MemoryBackend(), HttpSettings(**options), auth=keys)


@asynccontextmanager
async def client_for(
    app: Starlette, base_url: str = ORIGIN, lifespan_of: Starlette | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        lifespan(lifespan_of or app),
        httpx.AsyncClient(transport=transport, base_url=base_url) as client,
    ):
        yield client


@asynccontextmanager
async def serve(
    keys: ApiKeys | None = None, base_url: str = ORIGIN, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(make_app(keys, **settings), base_url) as client:
        yield client


async def login(client: httpx.AsyncClient, key: str = ADMIN_KEY, **headers: str) -> httpx.Response:
    return await client.post(
        "/ojs/admin/login",
        data={"key": key, "next": "/ojs/admin/jobs?state=active"},
        headers={"Origin": ORIGIN, **headers},
    )


def cookie_of(response: httpx.Response) -> str:
    match = re.search(rf"{session.COOKIE}=([^;]+)", response.headers.get("set-cookie", ""))
    assert match, response.headers
    return match.group(1)


# -- pages and headers ----------------------------------------------------------------------


def assert_security_headers(response: httpx.Response) -> None:
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


@pytest.mark.parametrize(
    "path", ["/ojs/admin", "/ojs/admin/", "/ojs/admin/jobs", "/ojs/admin/jobs/x/y"]
)
async def test_every_dashboard_url_answers_the_shell_with_strict_headers(path: str) -> None:
    async with serve() as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["Cache-Control"] == "no-store"
    assert_security_headers(response)
    body = response.text
    assert 'data-root=""' in body
    assert 'data-auth="open"' in body
    assert '<script type="module" src="/ojs/admin/static/app.js">' in body
    # No inline script or style: the CSP would block it.
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body) is None
    assert "<style" not in body
    assert "style=" not in body


async def test_static_files_are_served_with_their_types_and_etags() -> None:
    async with serve() as client:
        js = await client.get("/ojs/admin/static/app.js")
        assert js.status_code == 200
        assert js.headers["content-type"].startswith("text/javascript")
        assert_security_headers(js)
        again = await client.get(
            "/ojs/admin/static/app.js", headers={"If-None-Match": js.headers["ETag"]}
        )
        assert again.status_code == 304
        css = await client.get("/ojs/admin/static/app.css")
        assert css.headers["content-type"].startswith("text/css")
        view = await client.get("/ojs/admin/static/views/jobs.js")
        assert view.status_code == 200
        for bad in ("nope.js", "..%2Fpages.py", "__init__.py", "views"):
            assert (await client.get(f"/ojs/admin/static/{bad}")).status_code == 404


def test_the_front_end_never_parses_data_as_html() -> None:
    # Job args, errors and names are hostile input: every view builds text nodes (dom.js).
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"srcdoc|DOMParser|createContextualFragment"
    )
    files = sorted(STATIC.rglob("*.js"))
    assert len(files) >= 10
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert forbidden.search(text) is None, path


async def test_no_dashboard_when_disabled() -> None:
    async with serve(dashboard=False) as client:
        assert (await client.get("/ojs/admin")).status_code == 404


async def test_open_server_needs_no_login() -> None:
    async with serve() as client:
        response = await client.get("/ojs/admin/login")
        assert response.status_code == 303
        assert response.headers["Location"] == "/ojs/admin"


# -- login ----------------------------------------------------------------------------------


async def test_without_a_session_the_shell_sends_to_the_login_form() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        response = await client.get("/ojs/admin/jobs?state=dead")
        assert response.status_code == 303
        assert (
            response.headers["Location"] == "/ojs/admin/login?next=/ojs/admin/jobs%3Fstate%3Ddead"
        )
        form = await client.get(response.headers["Location"])
        assert form.status_code == 200
        assert_security_headers(form)
        assert '<form method="post" action="/ojs/admin/login"' in form.text
        assert 'value="/ojs/admin/jobs?state=dead"' in form.text
        assert 'type="password"' in form.text


async def test_an_admin_key_signs_in_with_a_strict_session_cookie() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        response = await login(client)
        assert response.status_code == 303
        assert response.headers["Location"] == "/ojs/admin/jobs?state=active"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Path=/;" in cookie or cookie.endswith("Path=/")
        assert "Max-Age=43200" in cookie
        # Plain http to a host that is not loopback: Secure (the cookie only comes back on
        # https, which is where a public dashboard belongs).
        assert "Secure" in cookie
        value = cookie_of(response)
        assert ADMIN_KEY not in value
        assert key_digest(ADMIN_KEY).hex() not in value
        client.cookies.set(session.COOKIE, value)
        shell = await client.get("/ojs/admin")
        assert shell.status_code == 200
        assert 'data-auth="session"' in shell.text


@pytest.mark.parametrize(
    ("base_url", "mode", "secure"),
    [
        ("http://localhost:8080", "auto", False),
        ("http://127.0.0.1:8080", "auto", False),
        ("https://localhost", "auto", True),
        ("http://jobs.example.com", "auto", True),
        ("http://127.0.0.1", "always", True),
        ("https://jobs.example.com", "never", False),
    ],
)
async def test_secure_flag(base_url: str, mode: str, secure: bool) -> None:
    async with serve(ApiKeys.load(KEYS), base_url=base_url, dashboard_cookie_secure=mode) as client:
        response = await client.post(
            "/ojs/admin/login", data={"key": ADMIN_KEY}, headers={"Sec-Fetch-Site": "same-origin"}
        )
        assert response.status_code == 303
        assert ("Secure" in response.headers["set-cookie"]) is secure


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        ("wrong-key", 401, "That key is not valid."),
        ("", 401, "That key is not valid."),
        ("KP-producer-key", 403, "sign in with an admin key"),
        ("KW-worker-key", 403, "sign in with an admin key"),
    ],
)
async def test_a_wrong_or_non_admin_key_does_not_sign_in(
    key: str, status: int, message: str
) -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        response = await login(client, key)
        assert response.status_code == status
        assert "set-cookie" not in response.headers
        assert message in response.text
        assert key not in response.text or not key


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": ORIGIN},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_a_login_posted_from_another_site_is_refused(headers: dict[str, str]) -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        response = await client.post("/ojs/admin/login", data={"key": ADMIN_KEY}, headers=headers)
        assert response.status_code == 403
        assert "set-cookie" not in response.headers


async def test_a_login_without_origin_headers_is_refused() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        response = await client.post("/ojs/admin/login", data={"key": ADMIN_KEY})
        assert response.status_code == 403


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example",
        "/ojs/admin/../../x\\y",
        "/elsewhere",
        "/ojs/adminx",
    ],
)
async def test_login_never_redirects_off_the_dashboard(target: str) -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        response = await client.post(
            "/ojs/admin/login", data={"key": ADMIN_KEY, "next": target}, headers={"Origin": ORIGIN}
        )
        assert response.status_code == 303
        assert response.headers["Location"] == "/ojs/admin"


async def test_behind_a_proxy_that_rewrites_host_the_https_origin_decides_secure() -> None:
    # nginx's proxy_pass http://127.0.0.1:8080 sends Host: 127.0.0.1:8080 for a page the
    # browser loaded over https: the Origin says https, so the cookie is Secure.
    async with serve(ApiKeys.load(KEYS), base_url="http://127.0.0.1:8080") as client:
        response = await client.post(
            "/ojs/admin/login",
            data={"key": ADMIN_KEY},
            headers={"Sec-Fetch-Site": "same-origin", "Origin": "https://ojs.example.com"},
        )
        assert response.status_code == 303
        assert "Secure" in response.headers["set-cookie"]


async def test_a_login_form_with_extra_fields_is_a_400_not_a_500() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        fields = {"key": ADMIN_KEY, **{f"f{i}": "x" for i in range(6)}}
        response = await client.post("/ojs/admin/login", data=fields, headers={"Origin": ORIGIN})
        assert response.status_code == 400
        assert "set-cookie" not in response.headers


async def test_an_oversized_login_form_is_refused() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        response = await client.post(
            "/ojs/admin/login", data={"key": "x" * 10_000}, headers={"Origin": ORIGIN}
        )
        assert response.status_code == 413


async def test_logout_forgets_the_cookie() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        client.cookies.set(session.COOKIE, cookie_of(await login(client)))
        refused = await client.post("/ojs/admin/logout", headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403
        response = await client.post("/ojs/admin/logout", headers={"Origin": ORIGIN})
        assert response.status_code == 303
        assert response.headers["Location"] == "/ojs/admin/login"
        assert 'ojs_session=""' in response.headers["set-cookie"]
        assert "Max-Age=0" in response.headers["set-cookie"]


# -- what the cookie authorises --------------------------------------------------------------


async def signed_in(client: httpx.AsyncClient) -> None:
    client.cookies.set(session.COOKIE, cookie_of(await login(client)))


async def test_the_cookie_authorises_the_dashboards_requests() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        await signed_in(client)
        manifest = await client.get("/ojs/manifest", headers={"X-OJS-Dashboard": "1"})
        assert manifest.status_code == 200
        cron = await client.get("/ojs/v1/cron", headers={"Sec-Fetch-Site": "same-origin"})
        assert cron.status_code == 200
        # An unsafe admin call: the header and a same-origin Origin.
        quiet = await client.post("/ojs/v1/admin/workers/w-1/quiet", headers=DASH)
        assert quiet.status_code not in (401, 403), quiet.text
        fetched = await client.post(
            "/ojs/v1/admin/workers/w-1/quiet",
            headers={"X-OJS-Dashboard": "1", "Sec-Fetch-Site": "same-origin"},
        )
        assert fetched.status_code not in (401, 403), fetched.text


async def test_what_a_session_reads_is_never_cached() -> None:
    """Responses authorised by the cookie carry ``Cache-Control: no-store`` (job data stays
    out of the browser's caches); a Bearer caller's are left as the route made them."""
    async with serve(ApiKeys.load(KEYS)) as client:
        await signed_in(client)
        for path in ("/ojs/manifest", "/ojs/v1/cron", "/ojs/v1/admin/stats"):
            got = await client.get(path, headers={"X-OJS-Dashboard": "1"})
            assert got.status_code == 200, got.text
            assert got.headers.get_list("cache-control") == ["no-store"], path
        client.cookies.clear()
        bearer = await client.get("/ojs/v1/cron", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert bearer.status_code == 200
        assert "no-store" not in bearer.headers.get("cache-control", "")


async def test_the_cookie_authorises_the_event_stream_from_the_dashboard_only() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        await signed_in(client)
        # An invalid resume point answers 400 once the caller was authorised (the stream
        # would never end otherwise).
        bad_resume = {"Last-Event-ID": "x"}
        ok = await client.get(
            "/ojs/v1/events/stream?channel=all",
            headers={"Sec-Fetch-Site": "same-origin", **bad_resume},
        )
        assert ok.status_code == 400, ok.text
        foreign = await client.get(
            "/ojs/v1/events/stream?channel=all",
            headers={"Sec-Fetch-Site": "cross-site", **bad_resume},
        )
        assert foreign.status_code == 403
        bare = await client.get("/ojs/v1/events/stream?channel=all", headers=bad_resume)
        assert bare.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"X-OJS-Dashboard": "1", "Origin": "https://evil.example"},
        {"X-OJS-Dashboard": "1", "Sec-Fetch-Site": "cross-site", "Origin": ORIGIN},
        {"X-OJS-Dashboard": "1", "Sec-Fetch-Site": "same-site"},
        {"X-OJS-Dashboard": "1"},
        {"Origin": ORIGIN},
        {"Sec-Fetch-Site": "same-origin"},
    ],
)
async def test_a_cross_origin_or_headerless_change_with_the_cookie_is_refused(
    headers: dict[str, str],
) -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        await signed_in(client)
        response = await client.post("/ojs/v1/admin/workers/w-1/terminate", headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
        assert "dashboard" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ojs/v1/queues"),
        ("POST", "/ojs/v1/jobs"),
        ("DELETE", "/ojs/v1/jobs/x"),
        ("POST", "/ojs/v1/workers/fetch"),
        ("POST", "/ojs/v1/admin/reset"),
        ("POST", "/ojs/v1/cron"),
    ],
)
async def test_the_cookie_authorises_nothing_beyond_the_dashboards_routes(
    method: str, path: str
) -> None:
    async with serve(ApiKeys.load(KEYS), enable_reset=True) as client:
        await signed_in(client)
        response = await client.request(method, path, json={}, headers=DASH)
        assert response.status_code == 401


async def test_an_expired_tampered_or_revoked_cookie_is_refused() -> None:
    keys = ApiKeys.load(KEYS)
    secret = key_digest(ADMIN_KEY)
    ttl = HttpSettings().dashboard_session_ttl_s
    expired = session.issue(secret, ttl, now=time.time() - ttl - 1)
    far = session.issue(secret, ttl * 10)
    good = session.issue(secret, ttl)
    head, mac = good.rsplit(".", 1)
    # Always a different digit (a fixed "9" left a cookie whose expiry ends in 9 untouched).
    other_digit = "1" if head[-1] != "1" else "2"
    tampered = head[:-1] + other_digit + "." + mac
    producer = session.issue(key_digest("KP-producer-key"), ttl)
    async with serve(keys) as client:
        for value in (expired, far, tampered, producer, "v1.x.1.y", "garbage", good + "x"):
            client.cookies.set(session.COOKIE, value)
            response = await client.get("/ojs/manifest", headers={"X-OJS-Dashboard": "1"})
            assert response.status_code == 401, value
            assert (await client.get("/ojs/admin")).status_code == 303
        client.cookies.set(session.COOKIE, good)
        ok = await client.get("/ojs/manifest", headers={"X-OJS-Dashboard": "1"})
        assert ok.status_code == 200
        # Removing the key (what SIGHUP does after editing the keys file) ends its sessions.
        keys.replace(ApiKeys.load("admin:another-admin-key"))
        gone = await client.get("/ojs/manifest", headers={"X-OJS-Dashboard": "1"})
        assert gone.status_code == 401


async def test_bearer_keys_work_as_before_and_win_over_the_cookie() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        await signed_in(client)
        bearer = await client.get(
            "/ojs/v1/queues", headers={"Authorization": "Bearer KP-producer-key"}
        )
        assert bearer.status_code == 200
        # A wrong bearer key is a wrong key, whatever cookie comes with it.
        wrong = await client.get(
            "/ojs/manifest", headers={"Authorization": "Bearer nope", "X-OJS-Dashboard": "1"}
        )
        assert wrong.status_code == 401
        producer = await client.post(
            "/ojs/v1/admin/workers/w-1/quiet",
            headers={"Authorization": "Bearer KP-producer-key", **DASH},
        )
        assert producer.status_code == 403


async def test_a_session_is_valid_on_every_replica_with_the_same_keys() -> None:
    # Stateless: what one process signs, another (a --workers sibling, a replica) accepts.
    async with serve(ApiKeys.load(KEYS)) as first:
        value = cookie_of(await login(first))
    async with serve(ApiKeys.load(KEYS)) as second:
        second.cookies.set(session.COOKIE, value)
        response = await second.get("/ojs/manifest", headers={"X-OJS-Dashboard": "1"})
        assert response.status_code == 200
    async with serve(ApiKeys.load("admin:other-key")) as other:
        other.cookies.set(session.COOKIE, value)
        response = await other.get("/ojs/manifest", headers={"X-OJS-Dashboard": "1"})
        assert response.status_code == 401


async def test_neither_the_key_nor_the_cookie_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(ApiKeys.load(KEYS), access_log=True) as client:
        value = cookie_of(await login(client))
        await login(client, "wrong-but-secret-looking-key")
        client.cookies.set(session.COOKIE, value)
        await client.get("/ojs/manifest", headers={"X-OJS-Dashboard": "1"})
        await client.post("/ojs/v1/admin/workers/w/quiet", headers={"Origin": "https://evil.x"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "dashboard sign-in" in text
    for secret in (ADMIN_KEY, "wrong-but-secret-looking-key", value, value.rsplit(".", 1)[1]):
        assert secret not in text


def test_the_session_format() -> None:
    secret = key_digest("k")
    value = session.issue(secret, 60, now=1000)
    version, expiry, mac = value.split(".")
    assert (version, expiry, len(mac)) == ("v2", "1060", 43)
    assert secret.hex()[:16] not in value  # it names no key
    assert session.verify(value, [secret], 60, now=1059)
    assert not session.verify(value, [secret], 60, now=1060)
    assert not session.verify(value, [key_digest("other")], 60, now=1000)
    # A lifetime shortened by configuration applies to sessions already issued.
    assert not session.verify(value, [secret], 1, now=700)
    assert session.cookie_accepted("POST", "/ojs/v1/admin/queues/{name}/pause")
    assert not session.cookie_accepted("POST", "/ojs/v1/admin/reset")
    assert not session.cookie_accepted("PATCH", "/ojs/v1/cron/{name}")
    assert ApiKeys.load(KEYS).secrets_of(Role.ADMIN) == [key_digest(ADMIN_KEY)]


# -- a mount prefix -------------------------------------------------------------------------


async def test_under_a_mount_prefix_every_url_and_the_cookie_path_follow_it() -> None:
    inner = make_app(ApiKeys.load(KEYS))
    host = Starlette(routes=[Mount("/jobs-api", app=inner)])
    async with client_for(host, lifespan_of=inner) as client:
        first = await client.get("/jobs-api/ojs/admin/queues")
        assert first.status_code == 303
        assert first.headers["Location"] == "/jobs-api/ojs/admin/login?next=/ojs/admin/queues"
        form = await client.get(first.headers["Location"])
        assert 'action="/jobs-api/ojs/admin/login"' in form.text
        assert 'href="/jobs-api/ojs/admin/static/app.css"' in form.text
        response = await client.post(
            "/jobs-api/ojs/admin/login",
            data={"key": ADMIN_KEY, "next": "/ojs/admin/queues"},
            headers={"Origin": ORIGIN},
        )
        assert response.status_code == 303
        assert response.headers["Location"] == "/jobs-api/ojs/admin/queues"
        assert "Path=/jobs-api" in response.headers["set-cookie"]
        client.cookies.set(session.COOKIE, cookie_of(response))
        shell = await client.get("/jobs-api/ojs/admin/queues")
        assert shell.status_code == 200
        assert 'data-root="/jobs-api"' in shell.text
        assert 'src="/jobs-api/ojs/admin/static/app.js"' in shell.text
        assert (await client.get("/jobs-api/ojs/admin/static/app.js")).status_code == 200
        manifest = await client.get("/jobs-api/ojs/manifest", headers={"X-OJS-Dashboard": "1"})
        assert manifest.status_code == 200


def test_malformed_cookies_are_no_session_not_a_500() -> None:
    secret = key_digest("k")
    good = session.issue(secret, 60, now=1000)
    _, expiry, mac = good.split(".")
    for value in (
        f"v2.{'²' * 4}.{mac}",  # a Unicode digit: int() refuses it
        f"v2.{expiry}.{'é' * 43}",  # non-ASCII: compare_digest raises on str
        f"v2.{expiry}.{mac}=",
        f"v1.{expiry}.{mac}",
    ):
        assert not session.verify(value, [secret], 60, now=1000), value


def test_a_session_needs_the_slow_derivation_to_forge() -> None:
    # The cookie is signed with PBKDF2(sha256(key)), not sha256(key) itself: a cookie does not
    # let a fast hash of a guessed key be checked against it.
    import base64
    import hashlib
    import hmac

    secret = key_digest("admin2024")
    value = session.issue(secret, 60, now=1000)
    fast = hmac.new(secret, b"ojs-session|1060", hashlib.sha256).digest()
    assert base64.urlsafe_b64encode(fast).rstrip(b"=").decode() not in value
