"""``ojs-server --grpc-port`` as a real process, with API keys on: a grpcio client enqueues,
receives the job on a streamed fetch, acks it and reads it back; registers a cron entry and
receives the job it fires; runs a workflow; health and reflection answer without a key; wrong
or missing keys are refused; the port speaks TLS when given a certificate. On a real
nats-server (the session's), and HTTP sees what gRPC did."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_support import KEYS, as_role, error_info, free_port, ojs_server

from ojs_grpc._gen import (
    job_pb2,
    queue_pb2,
    service_pb2,
    service_pb2_grpc,
    worker_pb2,
    workflow_pb2,
)

PRODUCER, WORKER, ADMIN = as_role("producer"), as_role("worker"), as_role("admin")


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OJS_", "NATS_URL"))}
    env["OJS_API_KEYS"] = ",".join(f"{next(iter(r))}:{k}" for k, r in KEYS.items())
    return env


async def test_ojs_server_serves_grpc_beside_http(nats_url: str) -> None:
    with ojs_server("--backend", nats_url, env=server_env()) as (base, port, _lines):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.OJSServiceStub(channel)
            await _health_and_reflection(channel)
            await _auth_refusals(stub)
            job_id = await _enqueue_stream_ack_get(stub)
            await _cron_fires_onto_the_stream(stub)
            await _workflow(stub)
        # Both bindings share one backend: HTTP reads what gRPC did, and both declare both.
        headers = {"Authorization": "Bearer producer-key"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            job = (await http.get(f"/ojs/v1/jobs/{job_id}")).json()["job"]
            assert (job["state"], job["result"]) == ("completed", {"ok": True})
            manifest = (await http.get("/ojs/manifest")).json()
            assert manifest["protocols"] == ["http", "grpc"]


async def _health_and_reflection(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "ojs.v1.OJSService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="ojs.v1.OJSService"),
    ]
    answers = [a async for a in reflection.ServerReflectionInfo(iter(requests))]
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"ojs.v1.OJSService", "grpc.health.v1.Health"} <= names
    assert answers[1].file_descriptor_response.file_descriptor_proto


async def _auth_refusals(stub: service_pb2_grpc.OJSServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Enqueue(job_pb2.EnqueueRequest(type="a.b"))
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PauseQueue(queue_pb2.PauseQueueRequest(queue="q"), metadata=PRODUCER)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(err.value).reason == "forbidden"
    # The OJS Health RPC is public, as /ojs/v1/health is.
    health = await stub.Health(service_pb2.HealthRequest())
    assert health.status == service_pb2.HEALTH_STATUS_OK


async def _enqueue_stream_ack_get(stub: service_pb2_grpc.OJSServiceStub) -> str:
    stream = stub.StreamJobs(
        worker_pb2.StreamJobsRequest(queues=["e2e"], worker_id="e2e-1", max_concurrent=2),
        metadata=WORKER,
    )
    created = await stub.Enqueue(
        job_pb2.EnqueueRequest(
            type="e2e.job",
            args=[struct_pb2.Value(string_value="x")],
            options=job_pb2.EnqueueOptions(queue="e2e"),
        ),
        metadata=PRODUCER,
    )
    pushed = await asyncio.wait_for(stream.read(), 10)
    assert (pushed.id, pushed.state) == (created.job.id, job_pb2.JOB_STATE_ACTIVE)
    result = struct_pb2.Struct()
    result.update({"ok": True})
    await stub.Ack(worker_pb2.AckRequest(job_id=pushed.id, result=result), metadata=WORKER)
    got = await stub.GetJob(job_pb2.GetJobRequest(job_id=pushed.id), metadata=PRODUCER)
    assert got.job.state == job_pb2.JOB_STATE_COMPLETED
    stream.cancel()
    return pushed.id


async def _cron_fires_onto_the_stream(stub: service_pb2_grpc.OJSServiceStub) -> None:
    registered = await stub.RegisterCron(
        service_pb2.RegisterCronRequest(
            name="every-second",
            cron="@every 1s",
            type="cron.tick",
            options=job_pb2.EnqueueOptions(queue="ticks"),
        ),
        metadata=PRODUCER,
    )
    assert registered.HasField("next_run_at")
    listed = await stub.ListCron(service_pb2.ListCronRequest(), metadata=PRODUCER)
    assert [(e.name, e.type, e.options.queue) for e in listed.entries] == [
        ("every-second", "cron.tick", "ticks")
    ]
    stream = stub.StreamJobs(worker_pb2.StreamJobsRequest(queues=["ticks"]), metadata=WORKER)
    fired = await asyncio.wait_for(stream.read(), 15)
    assert fired.type == "cron.tick"
    assert fired.meta["cron_name"] == "every-second"
    stream.cancel()
    await stub.UnregisterCron(
        service_pb2.UnregisterCronRequest(name="every-second"), metadata=PRODUCER
    )


async def _workflow(stub: service_pb2_grpc.OJSServiceStub) -> None:
    created = await stub.CreateWorkflow(
        workflow_pb2.CreateWorkflowRequest(
            name="two-steps",
            steps=[
                workflow_pb2.WorkflowStep(
                    id="first", type="wf.first", options=job_pb2.EnqueueOptions(queue="wf")
                ),
                workflow_pb2.WorkflowStep(
                    id="second",
                    type="wf.second",
                    depends_on=["first"],
                    options=job_pb2.EnqueueOptions(queue="wf"),
                ),
            ],
        ),
        metadata=PRODUCER,
    )
    workflow = created.workflow
    stream = stub.StreamJobs(
        worker_pb2.StreamJobsRequest(queues=["wf"], worker_id="wf-1"), metadata=WORKER
    )
    for step in workflow.steps:
        pushed = await asyncio.wait_for(stream.read(), 10)
        assert pushed.id == step.job_id
        await stub.Ack(worker_pb2.AckRequest(job_id=pushed.id), metadata=WORKER)
    stream.cancel()
    got = await stub.GetWorkflow(
        workflow_pb2.GetWorkflowRequest(workflow_id=workflow.id), metadata=PRODUCER
    )
    assert got.workflow.state == workflow_pb2.WORKFLOW_STATE_COMPLETED
    assert [s.state for s in got.workflow.steps] == [workflow_pb2.WORKFLOW_STEP_STATE_COMPLETED] * 2


async def test_the_grpc_port_speaks_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    for extra in cert.cert_chain_pems[1:]:
        with (tmp_path / "cert.pem").open("ab") as f:
            f.write(extra.bytes())
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    tls = [
        "--grpc-tls-cert",
        str(tmp_path / "cert.pem"),
        "--grpc-tls-key",
        str(tmp_path / "key.pem"),
    ]
    with ojs_server(
        "--backend", "memory", *tls, env=server_env(), grpc_credentials=credentials
    ) as (_base, port, lines):
        async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
            stub = service_pb2_grpc.OJSServiceStub(channel)
            created = await stub.Enqueue(job_pb2.EnqueueRequest(type="tls.job"), metadata=PRODUCER)
            assert created.job.type == "tls.job"
        async with grpc.aio.insecure_channel(f"localhost:{port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await service_pb2_grpc.OJSServiceStub(plain).Health(
                    service_pb2.HealthRequest(), timeout=5
                )
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert any(f"grpcs://127.0.0.1:{port}" in line for line in lines)


def test_a_public_grpc_bind_without_keys_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OJS_", "NATS_URL"))}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "ojs_http.cli", "--backend", "memory", "--host", "0.0.0.0"),
            *("--port", str(free_port()), "--grpc-port", str(free_port())),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to serve --host 0.0.0.0 without authentication" in done.stderr
