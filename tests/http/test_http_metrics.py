"""GET /metrics over the binding: job and HTTP metrics, route templates, who may scrape.

The app runs over a MemoryBackend through httpx's ASGI transport; the exposition is parsed
with prometheus-client's own parser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ojs_http import create_app
from ojs_http.auth import ApiKeys
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend

V1 = "/ojs/v1"


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample of the exposition, or ``None``."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


@asynccontextmanager
async def serve(auth: Any = None, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(MemoryBackend(), HttpSettings(run_scheduler=False, **settings), auth=auth)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


async def test_jobs_run_over_http_show_in_the_exposition() -> None:
    async with serve() as client:
        ids = []
        for kind in ("mail.send", "mail.send", "img.resize"):
            r = await client.post(
                f"{V1}/jobs", json={"type": kind, "args": [], "retry": {"max_attempts": 1}}
            )
            ids.append(r.json()["job"]["id"])
        fetched = await client.post(f"{V1}/workers/fetch", json={"queues": ["default"], "count": 3})
        jobs = fetched.json()["jobs"]
        assert len(jobs) == 3
        for job in jobs:
            if job["type"] == "mail.send":
                await client.post(f"{V1}/workers/ack", json={"job_id": job["id"], "result": 1})
            else:
                error = {"code": "boom", "message": "no"}
                await client.post(f"{V1}/workers/nack", json={"job_id": job["id"], "error": error})
        await client.get(f"{V1}/jobs/{ids[0]}")
        await client.get(f"{V1}/jobs/{ids[1]}")
        await client.get("/no/such/route")

        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = response.text
        families = {f.name for f in text_string_to_metric_families(text)}
        assert {
            "ojs_job_enqueued",
            "ojs_job_completed",
            "ojs_job_failed",
            "ojs_job_retried",
            "ojs_job_cancelled",
            "ojs_job_expired",
            "ojs_job_duration_seconds",
            "ojs_job_queue_time_seconds",
            "ojs_queue_depth",
            "ojs_workers_active",
            "ojs_http_requests",
            "ojs_http_request_duration_seconds",
        } <= families
        mail = {"queue": "default", "type": "mail.send"}
        assert value(text, "ojs_job_enqueued_total", **mail) == 2
        assert value(text, "ojs_job_completed_total", **mail) == 2
        assert value(text, "ojs_job_failed_total", queue="default", type="img.resize") == 1
        assert value(text, "ojs_job_queue_time_seconds_count", **mail) == 2
        assert value(text, "ojs_queue_depth", queue="default", state="completed") == 2
        assert value(text, "ojs_queue_depth", queue="default", state="discarded") == 1

        # One series per route template; never a raw path (a job id in a label).
        by_route = {"method": "GET", "route": "/ojs/v1/jobs/{job_id}", "status": "200"}
        assert value(text, "ojs_http_requests_total", **by_route) == 2
        assert (
            value(
                text, "ojs_http_requests_total", method="POST", route="/ojs/v1/jobs", status="201"
            )
            == 3
        )
        assert (
            value(text, "ojs_http_requests_total", method="GET", route="_unmatched", status="404")
            == 1
        )
        assert not any(job_id in text for job_id in ids)
        assert (
            value(
                text,
                "ojs_http_request_duration_seconds_count",
                method="POST",
                route="/ojs/v1/workers/ack",
            )
            == 2
        )


async def test_queue_stats_carry_the_recent_activity() -> None:
    async with serve() as client:
        await client.post(f"{V1}/jobs", json={"type": "a.b", "args": []})
        job = (await client.post(f"{V1}/workers/fetch", json={"queues": ["default"]})).json()[
            "jobs"
        ][0]
        await client.post(f"{V1}/workers/ack", json={"job_id": job["id"]})
        stats = (await client.get(f"{V1}/queues/default/stats")).json()["stats"]
        assert stats["completed_last_hour"] == 1
        assert stats["failed_last_hour"] == 0
        assert stats["throughput_per_second"] > 0
        assert stats["avg_duration_ms"] >= 0
        assert stats["avg_wait_ms"] >= 0


async def test_metrics_need_a_key_unless_public() -> None:
    keys = ApiKeys.load("admin:KA,worker:KW")
    async with serve(keys, metrics_public=False) as client:
        assert (await client.get("/metrics")).status_code == 401
        worker = await client.get("/metrics", headers={"Authorization": "Bearer KW"})
        assert worker.status_code == 200
        # health and readiness stay open, as load balancers call them without keys
        assert (await client.get(f"{V1}/health")).status_code == 200
        assert (await client.get(f"{V1}/ready")).status_code == 200
    async with serve(keys, metrics_public=True) as client:
        assert (await client.get("/metrics")).status_code == 200


async def test_metrics_can_be_turned_off() -> None:
    async with serve(metrics=False) as client:
        assert (await client.get("/metrics")).status_code == 404
        paths = (await client.get(f"{V1}/openapi.json")).json()["paths"]
        assert "/metrics" not in paths
    async with serve() as client:
        paths = (await client.get(f"{V1}/openapi.json")).json()["paths"]
        assert "/metrics" in paths
        assert "/ojs/v1/ready" in paths
