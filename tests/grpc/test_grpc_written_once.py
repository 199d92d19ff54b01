"""What the gRPC binding shares with the HTTP binding is written once: who may call an
operation (each RPC's roles equal those of the HTTP route its docstring names, read from the
app's route table), the authentication errors, and the manifest's extensions."""

from __future__ import annotations

import inspect
import re

import grpc
import pytest
from grpc_support import Harness, as_role, field_violations

from ojs_core import manifest
from ojs_core.errors import ForbiddenError, UnauthorizedError
from ojs_grpc import auth as grpc_auth
from ojs_grpc._gen import events_pb2, service_pb2, worker_pb2
from ojs_grpc.servicer import OJSServicer
from ojs_http import auth as http_auth
from ojs_http.app import create_app
from ojs_http.routing import OJSRoute
from ojs_http.settings import HttpSettings
from ojs_memory.backend import MemoryBackend

_ROUTE = re.compile(r"^(GET|POST|PUT|DELETE) (/\S+?)[.:,]?(?:\s|$)")
#: RPCs whose docstring names no route: the HTTP operation they are the streamed form of.
_STREAMED = {"StreamJobs": ("POST", "/ojs/v1/workers/fetch")}


def _template(path: str) -> str:
    return re.sub(r"{[a-z_]+}", "{}", path)


def http_roles() -> dict[tuple[str, str], frozenset[str]]:
    """``(method, path template) -> roles`` of every route of the HTTP app ({"*"}: public)."""
    app = create_app(MemoryBackend(), HttpSettings(run_scheduler=False))
    table: dict[tuple[str, str], frozenset[str]] = {}
    for r in app.routes:
        if isinstance(r, OJSRoute):
            roles = (
                frozenset({"*"}) if r.access.public else frozenset(x.value for x in r.access.roles)
            )
            table[(r.method, _template(r.path))] = roles
    return table


def test_every_rpc_needs_the_roles_of_its_http_route() -> None:
    routes = http_roles()
    for name in grpc_auth.ACCESS:
        doc = inspect.getdoc(getattr(OJSServicer, name)) or ""
        found = _ROUTE.match(doc)
        method, path = _STREAMED[name] if found is None else found.groups()
        key = (method, _template(path))
        assert key in routes, f"{name}: its docstring names {method} {path}, not a route"
        assert grpc_auth.ACCESS[name] == routes[key], name


def test_the_authentication_errors_are_the_cores() -> None:
    for name in ("UnauthorizedError", "ForbiddenError"):
        core = {"UnauthorizedError": UnauthorizedError, "ForbiddenError": ForbiddenError}[name]
        assert getattr(grpc_auth, name) is core
        assert getattr(http_auth, name) is core


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_the_manifest_extensions_come_from_the_core(harness: Harness) -> None:
    h = harness
    answer = await h.stub.Manifest(service_pb2.ManifestRequest(), metadata=as_role("producer"))
    core = [
        *manifest.core_specs(),
        *manifest.official_extensions(h.service.backend, h.service.schemas),
    ]
    assert list(answer.extensions) == [e["uri"] for e in core]
    assert "urn:ojs:ext:backpressure" in answer.extensions


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_the_shared_field_checks_hold_on_every_rpc(harness: Harness) -> None:
    h = harness
    long_worker = "w" * 257
    for call, request, role in (
        (h.stub.Fetch, worker_pb2.FetchRequest(queues=["q"], worker_id=long_worker), "worker"),
        (h.stub.Heartbeat, worker_pb2.HeartbeatRequest(worker_id=long_worker), "worker"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=as_role(role))
        assert [f for f, _ in field_violations(err.value)] == ["worker_id"]
    for stream, path in (
        (
            h.stub.StreamJobs(
                worker_pb2.StreamJobsRequest(queues=["q"], worker_id=long_worker),
                metadata=as_role("worker"),
            ),
            "worker_id",
        ),
        # A queue name is checked even when the job id selects the channel.
        (
            h.stub.StreamEvents(
                events_pb2.StreamEventsRequest(job_id="j", queues=["Bad Queue"]),
                metadata=as_role("producer"),
            ),
            "queues[0]",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stream.read()
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(err.value)] == [path]
