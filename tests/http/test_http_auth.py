"""API keys with roles: every route's declared access, 401/403, authenticators, keys files.

The app runs over a MemoryBackend through httpx's ASGI transport (as in test_http_binding).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request

from ojs_http import create_app
from ojs_http.auth import ApiKeys, AuthConfigError, Role, first_of
from ojs_http.dashboard.pages import DashboardRoute
from ojs_http.openapi import EVENT_STREAM
from ojs_http.routing import METRICS, PRODUCER, OJSRoute, OJSWebSocketRoute
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

V1 = "/ojs/v1"
KEYS = "admin:KA,producer:KP,worker:KW"
TOKENS = {"admin": "KA", "producer": "KP", "worker": "KW"}

#: The issue's table, route by route: who besides admin may call it ("public": anyone).
EXPECTED = {
    ("GET", "/ojs/manifest"): {"producer", "worker"},
    ("GET", "/ojs/v1/health"): "public",
    ("GET", "/ojs/v1/ready"): "public",
    ("GET", "/metrics"): {"producer", "worker"},
    ("GET", "/ojs/v1/events"): {"producer"},
    ("GET", "/ojs/v1/events/stream"): {"producer"},
    ("GET", "/ojs/v1/jobs/{job_id}/events"): {"producer"},
    ("GET", "/ojs/v1/queues/{name}/events"): {"producer"},
    ("GET", "/ojs/v1/openapi.json"): {"producer", "worker"},
    ("GET", "/ojs/docs"): "public",
    ("GET", "/ojs/docs/{name}"): "public",
    ("POST", "/ojs/v1/admin/reset"): set(),
    ("POST", "/ojs/v1/jobs"): {"producer"},
    ("POST", "/ojs/v1/jobs/batch"): {"producer"},
    ("POST", "/ojs/v1/jobs/bulk"): {"producer"},
    ("POST", "/ojs/v1/jobs/bulk/cancel"): {"producer"},
    ("POST", "/ojs/v1/jobs/bulk/retry"): set(),
    ("POST", "/ojs/v1/jobs/bulk/delete"): set(),
    ("GET", "/ojs/v1/jobs/{job_id}"): {"producer", "worker"},
    ("DELETE", "/ojs/v1/jobs/{job_id}"): {"producer"},
    ("POST", "/ojs/v1/jobs/{job_id}/activate"): {"producer"},
    ("POST", "/ojs/v1/jobs/{job_id}/ack"): {"worker"},
    ("POST", "/ojs/v1/workers/fetch"): {"worker"},
    ("POST", "/ojs/v1/workers/ack"): {"worker"},
    ("POST", "/ojs/v1/workers/ack/batch"): {"worker"},
    ("POST", "/ojs/v1/workers/nack"): {"worker"},
    ("POST", "/ojs/v1/workers/heartbeat"): {"worker"},
    ("GET", "/ojs/v1/workers"): set(),
    ("POST", "/ojs/v1/admin/workers/{worker_id}/{directive}"): set(),
    ("GET", "/ojs/v1/queues"): {"producer", "worker"},
    ("GET", "/ojs/v1/queues/{name}/stats"): {"producer", "worker"},
    ("POST", "/ojs/v1/queues/{name}/pause"): set(),
    ("POST", "/ojs/v1/queues/{name}/resume"): set(),
    ("GET", "/ojs/v1/admin/queues/{name}/config"): set(),
    ("PUT", "/ojs/v1/admin/queues/{name}/config"): set(),
    ("GET", "/ojs/v1/admin/queues/{name}/rate-limit"): set(),
    ("PUT", "/ojs/v1/admin/queues/{name}/rate-limit"): set(),
    ("DELETE", "/ojs/v1/admin/queues/{name}/rate-limit"): set(),
    ("GET", "/ojs/v1/rate-limits"): {"producer", "worker"},
    ("GET", "/ojs/v1/rate-limits/{key}"): {"producer", "worker"},
    ("PUT", "/ojs/v1/rate-limits/{key}"): set(),
    ("DELETE", "/ojs/v1/rate-limits/{key}"): set(),
    ("GET", "/ojs/v1/admin/tenants"): set(),
    ("GET", "/ojs/v1/admin/tenants/{tenant_id}"): set(),
    ("PUT", "/ojs/v1/admin/tenants/{tenant_id}"): set(),
    ("PUT", "/ojs/v1/admin/tenants/{tenant_id}/limits"): set(),
    ("DELETE", "/ojs/v1/admin/tenants/{tenant_id}"): set(),
    ("GET", "/ojs/v1/admin/tenants/{tenant_id}/stats"): set(),
    ("GET", "/ojs/v1/admin/tenants/{tenant_id}/jobs"): set(),
    ("GET", "/ojs/v1/admin/noisy-tenants"): set(),
    ("GET", "/ojs/v1/admin/pools"): set(),
    ("GET", "/ojs/v1/admin/pools/{name}"): set(),
    ("PUT", "/ojs/v1/admin/pools/{name}"): set(),
    ("DELETE", "/ojs/v1/admin/pools/{name}"): set(),
    ("GET", "/ojs/v1/admin/scheduling/stats"): set(),
    ("GET", "/ojs/v1/dead-letter"): set(),
    ("POST", "/ojs/v1/dead-letter/{job_id}/retry"): set(),
    ("DELETE", "/ojs/v1/dead-letter/{job_id}"): set(),
    ("POST", "/ojs/v1/workflows"): {"producer"},
    ("GET", "/ojs/v1/workflows/{workflow_id}"): {"producer"},
    ("DELETE", "/ojs/v1/workflows/{workflow_id}"): {"producer"},
    ("POST", "/ojs/v1/cron"): {"producer"},
    ("GET", "/ojs/v1/cron"): {"producer"},
    ("GET", "/ojs/v1/cron/{name}"): {"producer"},
    ("PATCH", "/ojs/v1/cron/{name}"): {"producer"},
    ("DELETE", "/ojs/v1/cron/{name}"): {"producer"},
    ("PUT", "/ojs/v1/jobs/{job_id}/progress"): {"worker"},
    ("POST", "/ojs/v1/workers/progress"): {"worker"},
    ("GET", "/ojs/v1/jobs/{job_id}/progress"): {"producer", "worker"},
    ("GET", "/ojs/v1/workflows/{workflow_id}/progress"): {"producer"},
    ("POST", "/ojs/v1/jobs/{job_id}/checkpoint"): {"worker"},
    ("PUT", "/ojs/v1/jobs/{job_id}/checkpoint"): {"worker"},
    ("GET", "/ojs/v1/jobs/{job_id}/checkpoint"): {"producer", "worker"},
    ("DELETE", "/ojs/v1/jobs/{job_id}/checkpoint"): {"worker"},
    # The schema registry (docs/extensions.md).
    ("GET", "/ojs/v1/schemas"): {"producer", "worker"},
    ("POST", "/ojs/v1/schemas"): set(),
    ("GET", "/ojs/v1/schemas/{job_type}/versions"): {"producer", "worker"},
    ("DELETE", "/ojs/v1/schemas/{job_type}/{version}"): set(),
    ("GET", "/ojs/v1/schemas/{ref:path}"): {"producer", "worker"},
    ("DELETE", "/ojs/v1/schemas/{ref:path}"): set(),
    ("GET", "/ojs/v1/admin/schemas"): set(),
    ("GET", "/ojs/v1/admin/schemas/{job_type}"): set(),
    ("GET", "/ojs/v1/admin/schemas/{job_type}/{version}"): set(),
    # The webhooks extension (docs/webhooks.md): the admin role only.
    **{
        (method, f"/ojs/v1/webhooks/subscriptions{path}"): set()
        for method, path in (
            ("POST", ""),
            ("GET", ""),
            ("GET", "/{id}"),
            ("PATCH", "/{id}"),
            ("DELETE", "/{id}"),
            ("POST", "/{id}/test"),
            ("POST", "/{id}/rotate-secret"),
            ("GET", "/{id}/deliveries"),
        )
    },
    ("GET", "/ojs/v1/webhooks/deliveries"): set(),
    ("GET", "/ojs/v1/webhooks/deliveries/{id}"): set(),
    ("POST", "/ojs/v1/webhooks/deliveries/{id}/retry"): set(),
    # The admin API (docs/admin.md): the admin role only.
    **{
        (method, f"/ojs/v1/admin{path}"): set()
        for method, path in (
            ("GET", "/stats"),
            ("GET", "/queues"),
            ("GET", "/queues/{name}"),
            ("POST", "/queues/{name}/pause"),
            ("POST", "/queues/{name}/resume"),
            ("DELETE", "/queues/{name}/jobs"),
            ("GET", "/jobs"),
            ("POST", "/jobs/bulk/{action}"),
            ("GET", "/jobs/{job_id}"),
            ("POST", "/jobs/{job_id}/retry"),
            ("POST", "/jobs/{job_id}/cancel"),
            ("GET", "/dead-letter"),
            ("DELETE", "/dead-letter"),
            ("GET", "/dead-letter/stats"),
            ("POST", "/dead-letter/retry"),
            ("POST", "/dead-letter/{job_id}/retry"),
            ("DELETE", "/dead-letter/{job_id}"),
            ("GET", "/workflows"),
            ("PATCH", "/cron/{name}"),
            ("GET", "/workers"),
            ("GET", "/workers/{worker_id}"),
            ("DELETE", "/workers/{worker_id}"),
        )
    },
    **{
        route: roles
        for prefix in ("/ojs/v1", "/ojs/v1/ojs/v1")
        for route, roles in {
            ("POST", f"{prefix}/checkpoints/{{job_id}}"): {"worker"},
            ("DELETE", f"{prefix}/checkpoints/{{job_id}}"): {"worker"},
            ("GET", f"{prefix}/checkpoints/{{job_id}}/resume"): {"producer", "worker"},
        }.items()
    },
}


def make_app(auth: Any = None, **settings: Any) -> Starlette:
    options: dict[str, Any] = {"enable_reset": True, "run_scheduler": False, **settings}
    return create_app(MemoryBackend(), HttpSettings(**options), auth=auth)


@asynccontextmanager
async def serve(auth: Any = None, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(auth, **settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ojs_routes(app: Starlette) -> list[OJSRoute]:
    return [r for r in app.routes if isinstance(r, OJSRoute)]


def concrete(path: str) -> str:
    if path == "/ojs/docs/{name}":
        return "/ojs/docs/ojs-docs.js"
    return re.sub(
        r"{directive}", "quiet", re.sub(r"{(job_id|workflow_id|worker_id|name)}", "x", path)
    )


# -- the route table ------------------------------------------------------------------------


def test_every_route_of_the_app_declares_who_may_call_it() -> None:
    app = make_app(ApiKeys.load(KEYS))
    assert app.routes, "the app has no routes"
    undeclared = [
        r for r in app.routes if not isinstance(r, OJSRoute | OJSWebSocketRoute | DashboardRoute)
    ]
    assert undeclared == [], f"routes without a declared access: {undeclared}"
    # The dashboard's pages hold no data (tests/http/test_http_dashboard.py): public.
    pages = {(r.method, r.path) for r in app.routes if isinstance(r, DashboardRoute)}
    assert pages == {
        ("GET", "/ojs/admin"),
        ("GET", "/ojs/admin/{view:path}"),
        ("GET", "/ojs/admin/static/{path:path}"),
        ("GET", "/ojs/admin/login"),
        ("POST", "/ojs/admin/login"),
        ("POST", "/ojs/admin/logout"),
    }
    assert {r.access for r in app.routes if isinstance(r, DashboardRoute)} == {"public"}
    sockets = {r.path: r.access for r in app.routes if isinstance(r, OJSWebSocketRoute)}
    assert sockets == {"/ojs/v1/ws": PRODUCER}
    declared = {(r.method, r.path): r.access for r in ojs_routes(app)}
    # Every route is in the table above, with the table's roles, and vice versa.
    assert set(declared) == set(EXPECTED)
    for key, access in declared.items():
        want = EXPECTED[key]
        if want == "public":
            assert access.public, key
        else:
            assert not access.public, key
            assert {r.value for r in access.roles} == want, key


def test_metrics_policy_is_a_setting() -> None:
    assert METRICS.is_public(HttpSettings())
    assert not METRICS.is_public(HttpSettings(metrics_public=False))
    assert METRICS.role_names() == ["admin", "producer", "worker"]


async def test_done_when_matrix_every_route_401_403_and_admin() -> None:
    # The done-when: with OJS_API_KEYS="admin:KA,producer:KP,worker:KW", every route
    # but health answers 401 without a key and with a wrong one, 403 for a role that may not,
    # and works for admin (and for each role that may).
    # /metrics is public by default; ojs-server asks for a key on a non-loopback bind.
    app = make_app(ApiKeys.load(KEYS))
    async with serve(ApiKeys.load(KEYS), metrics_public=False) as client:
        for route in ojs_routes(app):
            if route.path == "/ojs/v1/admin/reset":
                continue  # wipes the store; checked on its own below
            path = concrete(route.path)
            want = EXPECTED[(route.method, route.path)]

            async def call(headers: dict[str, str], r: OJSRoute = route, p: str = path) -> int:
                if r.doc.media_type == EVENT_STREAM:
                    # An event stream never ends: an invalid resume point makes it a 400
                    # once the caller's roles were checked.
                    headers = headers | {"Last-Event-ID": "not-a-number"}
                response = await client.request(r.method, p, json={}, headers=headers)
                assert response.status_code < 500, (r.method, p, response.text)
                return response.status_code

            if want == "public":
                assert await call({}) == 200
                continue
            assert await call({}) == 401, path
            assert await call(bearer("wrong")) == 401, path
            for role, token in TOKENS.items():
                status = await call(bearer(token))
                if role == "admin" or role in want:
                    assert status not in (401, 403), (route.method, path, role, status)
                else:
                    assert status == 403, (route.method, path, role, status)
        for token, status in (("KP", 403), ("KW", 403), ("KA", 200)):
            response = await client.post(f"{V1}/admin/reset", headers=bearer(token))
            assert response.status_code == status


async def test_401_body_and_challenge() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        response = await client.get(f"{V1}/queues")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="ojs"'
        err = response.json()["error"]
        assert err["code"] == "unauthorized"
        assert err["retryable"] is False
        assert err["request_id"] == response.headers["X-Request-Id"]
        wrong = await client.get(f"{V1}/queues", headers=bearer("nope"))
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
        basic = await client.get(f"{V1}/queues", headers={"Authorization": "Basic S0E6"})
        assert basic.status_code == 401
        lower = await client.get(f"{V1}/queues", headers={"Authorization": "bearer KA"})
        assert lower.status_code == 200


async def test_403_names_the_roles_needed() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        response = await client.post(f"{V1}/queues/q/pause", headers=bearer("KP"))
        assert response.status_code == 403
        err = response.json()["error"]
        assert err["code"] == "forbidden"
        assert err["details"]["required_roles"] == ["admin"]
        assert "KP" not in response.text


async def test_a_wrong_method_is_still_405_before_auth() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        response = await client.put(f"{V1}/jobs")
        assert response.status_code == 405


async def test_without_auth_every_route_is_open_as_before() -> None:
    async with serve() as client:
        assert (await client.get(f"{V1}/queues")).status_code == 200
        assert (await client.get(f"{V1}/dead-letter")).status_code == 200


async def test_the_producer_worker_flow_with_keys() -> None:
    async with serve(ApiKeys.load(KEYS)) as client:
        p, w = bearer("KP"), bearer("KW")
        created = await client.post(f"{V1}/jobs", json={"type": "t", "args": []}, headers=p)
        assert created.status_code == 201
        assert (await client.post(f"{V1}/jobs", json={"type": "t"}, headers=w)).status_code == 403
        fetched = await client.post(f"{V1}/workers/fetch", json={"queues": ["default"]}, headers=w)
        job_id = fetched.json()["jobs"][0]["id"]
        assert (
            await client.post(f"{V1}/workers/fetch", json={"queues": ["default"]}, headers=p)
        ).status_code == 403
        acked = await client.post(f"{V1}/workers/ack", json={"job_id": job_id}, headers=w)
        assert acked.json()["state"] == "completed"
        assert (await client.get(f"{V1}/jobs/{job_id}", headers=p)).status_code == 200


# -- authenticators -------------------------------------------------------------------------


async def test_a_host_callable_authenticates() -> None:
    def by_header(request: Request) -> str | None:
        return {"s1": "producer", "s2": "admin"}.get(request.headers.get("x-session", ""))

    async with serve(by_header) as client:
        assert (await client.get(f"{V1}/queues")).status_code == 401
        assert (await client.get(f"{V1}/queues", headers={"x-session": "s1"})).status_code == 200
        paused = await client.post(f"{V1}/queues/q/pause", headers={"x-session": "s1"})
        assert paused.status_code == 403
        paused = await client.post(f"{V1}/queues/q/pause", headers={"x-session": "s2"})
        assert paused.status_code == 200


async def test_an_async_callable_may_grant_several_roles() -> None:
    async def both(request: Request) -> list[str]:
        return ["producer", "worker"]

    async with serve(both) as client:
        assert (await client.post(f"{V1}/jobs", json={"type": "t", "args": []})).status_code == 201
        fetched = await client.post(f"{V1}/workers/fetch", json={"queues": ["default"]})
        assert fetched.status_code == 200
        assert (await client.get(f"{V1}/workers")).status_code == 403


async def test_an_unknown_role_from_a_callable_is_anonymous() -> None:
    async with serve(lambda request: "superuser") as client:
        assert (await client.get(f"{V1}/queues")).status_code == 401


async def test_first_of_tries_each_authenticator() -> None:
    keys = ApiKeys.load("worker:KW")
    chain = first_of(keys, lambda r: "admin" if r.headers.get("x-admin") else None)
    async with serve(chain) as client:
        assert (await client.get(f"{V1}/queues", headers=bearer("KW"))).status_code == 200
        assert (await client.get(f"{V1}/workers", headers={"x-admin": "1"})).status_code == 200
        assert (await client.get(f"{V1}/workers", headers=bearer("KW"))).status_code == 403


# -- API keys -------------------------------------------------------------------------------


def test_keys_compare_every_entry_and_match_exactly() -> None:
    keys = ApiKeys([("producer", "abc"), ("worker", "abd"), ("admin", "xyz"), ("admin", "xyz")])
    assert keys.roles_for("abc") == {Role.PRODUCER}
    assert keys.roles_for("xyz") == {Role.ADMIN}
    assert keys.roles_for("abd") == {Role.WORKER}
    assert keys.roles_for("ab") == frozenset()
    assert keys.roles_for("abcd") == frozenset()
    assert keys.roles_for("") == frozenset()


def test_keys_file_with_comments_and_env(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("# ops keys\n\nadmin:ka-1\n  worker : kw-1 \nPRODUCER:kp-1\n")
    keys = ApiKeys.load("producer:kp-2", f)
    assert len(keys) == 4
    assert keys.roles_for("kw-1") == {Role.WORKER}
    assert keys.roles_for("kp-1") == {Role.PRODUCER}
    assert keys.roles_for("kp-2") == {Role.PRODUCER}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("admin:s3cret\nroot:s3cret-2\n", "line 2: unknown role 'root'"),
        ("s3cret\n", "line 1: expected ROLE:KEY"),
        ("admin:\n", "line 1: the key is empty"),
        ("admin:s3 cret\n", "line 1: the key is empty or contains whitespace"),
        ("admin:s3cret\nworker:s3cret\n", "line 2: this key is already listed with another role"),
    ],
)
def test_bad_keys_files_name_the_line_never_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    f = tmp_path / "keys"
    f.write_text(text)
    with pytest.raises(AuthConfigError) as info:
        ApiKeys.load(None, f)
    assert message in str(info.value)
    assert "s3cret" not in str(info.value)


def test_bad_env_entry_names_the_entry() -> None:
    with pytest.raises(AuthConfigError, match="OJS_API_KEYS entry 2: unknown role"):
        ApiKeys.load("admin:k1,boss:k2")


def test_replace_swaps_the_keys() -> None:
    keys = ApiKeys.load("admin:old")
    keys.replace(ApiKeys.load("admin:new"))
    assert keys.roles_for("old") == frozenset()
    assert keys.roles_for("new") == {Role.ADMIN}
