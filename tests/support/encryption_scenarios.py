"""Encrypted payloads (``ojs-encryption.md``) pass through the server untouched, on every
backend (``tests/http/test_http_encryption.py`` on memory, ``tests/nats/test_nats_encryption.py``
on a real nats-server).

The server never decodes: an SDK's codec puts ``{"ojs_encoded": true, "encoding", "data"}``
objects (base64 of the nonce, ciphertext and tag) in ``args`` and the codec chain in
``meta["ojs.codec.encodings"]`` / ``meta["ojs.codec.key_id"]``. Each read below must give
them back exactly as sent: through enqueue (single and bulk), info, fetch, a retry, the dead
letter, a manual retry and completion.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import httpx
from nats_support import eventually

from ojs_core import jsonio
from ojs_core.service import JobService

V1 = "/ojs/v1"

#: What an AES-256-GCM codec writes: version byte, 12-byte nonce, ciphertext, 16-byte tag.
CIPHERTEXT = base64.b64encode(b"\x01" + os.urandom(12) + os.urandom(300) + os.urandom(16)).decode()
#: Bytes chosen so that the base64 holds "+", "/" and "=" (characters JSON encoders like to
#: escape or normalise).
OPAQUE = base64.b64encode(b"\xfb\xff\xfe\x00\x10>?" * 9 + b"\xff").decode()
ARGS: list[Any] = [
    {"ojs_encoded": True, "encoding": "binary/encrypted+zstd", "data": CIPHERTEXT},
    OPAQUE,
]
META: dict[str, Any] = {
    "ojs.codec.encodings": ["zstd/plain", "binary/encrypted"],
    "ojs.codec.key_id": "key-2026-02",
    "tenant": "ünïcode ✓",
}


def assert_untouched(job: dict[str, Any], raw: bytes | None = None) -> None:
    """``args`` and ``meta`` exactly as sent: equal values, equal JSON bytes, and the
    ciphertext verbatim in the response text."""
    assert job["args"] == ARGS
    assert jsonio.dumps(job["args"]) == jsonio.dumps(ARGS)
    for key, value in META.items():
        assert job["meta"][key] == value, key
        assert jsonio.dumps(job["meta"][key]) == jsonio.dumps(value)
    assert "ojs_encoded" in job["args"][0]
    if raw is not None:
        assert CIPHERTEXT.encode() in raw
        assert OPAQUE.encode() in raw


async def _fetch_one(client: httpx.AsyncClient, queue: str) -> tuple[dict[str, Any], bytes]:
    response = await client.post(
        f"{V1}/workers/fetch", json={"queues": [queue], "worker_id": "w-enc"}
    )
    assert response.status_code == 200, response.text
    (job,) = response.json()["jobs"]
    return job, response.content


async def _get(client: httpx.AsyncClient, job_id: str) -> tuple[dict[str, Any], bytes]:
    response = await client.get(f"{V1}/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()["job"]
    return job, response.content


async def full_life(client: httpx.AsyncClient, service: JobService, queue: str) -> None:
    """Enqueue, fetch, fail and retry, fail into the dead letter, retry by hand, complete:
    every read gives the encoded payload back unchanged."""
    retry = {
        "max_attempts": 2,
        "initial_interval": "PT0.001S",
        "max_interval": "PT0.001S",
        "jitter": False,
        "on_exhaustion": "dead_letter",
    }
    created = await client.post(
        f"{V1}/jobs",
        json={
            "type": "payment.process",
            "args": ARGS,
            "meta": META,
            "options": {"queue": queue, "retry": retry},
        },
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    assert_untouched(created.json()["job"], created.content)
    assert_untouched(*await _get(client, job_id))

    job, raw = await _fetch_one(client, queue)
    assert (job["id"], job["attempt"]) == (job_id, 1)
    assert_untouched(job, raw)
    nack = await client.post(
        f"{V1}/workers/nack", json={"job_id": job_id, "error": {"message": "decrypt failed"}}
    )
    assert nack.json()["state"] == "retryable", nack.text
    assert_untouched(*await _get(client, job_id))

    async def due() -> bool:
        await service.run_timers()
        return (await _get(client, job_id))[0]["state"] == "available"

    await eventually(due, within=10, what="the retry to become available")
    job, raw = await _fetch_one(client, queue)
    assert (job["id"], job["attempt"]) == (job_id, 2)
    assert_untouched(job, raw)
    nack = await client.post(
        f"{V1}/workers/nack", json={"job_id": job_id, "error": {"message": "x"}}
    )
    assert nack.json()["state"] == "discarded", nack.text

    dead = await client.get(f"{V1}/dead-letter", params={"limit": 100})
    assert dead.status_code == 200, dead.text
    (listed,) = [j for j in dead.json()["jobs"] if j["id"] == job_id]
    assert_untouched(listed, dead.content)
    admin = await client.get(f"{V1}/admin/jobs/{job_id}")
    assert admin.status_code == 200, admin.text
    assert_untouched(admin.json().get("job", admin.json()), admin.content)

    retried = await client.post(f"{V1}/dead-letter/{job_id}/retry")
    assert retried.status_code == 200, retried.text
    job, raw = await _fetch_one(client, queue)
    assert job["id"] == job_id
    assert_untouched(job, raw)
    ack = await client.post(f"{V1}/workers/ack", json={"job_id": job_id, "result": {"ok": True}})
    assert ack.status_code == 200
    final, raw = await _get(client, job_id)
    assert final["state"] == "completed"
    assert_untouched(final, raw)


async def batch_and_bulk(client: httpx.AsyncClient, queue: str) -> None:
    """The batch and bulk enqueues keep the payload too."""
    envelope = {"type": "payment.process", "args": ARGS, "meta": META, "queue": queue}
    batch = await client.post(f"{V1}/jobs/batch", json={"jobs": [envelope]})
    assert batch.status_code == 201, batch.text
    assert_untouched(batch.json()["jobs"][0], batch.content)
    bulk = await client.post(f"{V1}/jobs/bulk", json={"jobs": [envelope], "atomicity": "atomic"})
    assert bulk.status_code == 201, bulk.text
    bulk_id = bulk.json()["items"][0]["job"]["id"]
    assert_untouched(*await _get(client, bulk_id))
    for _ in range(2):
        job, raw = await _fetch_one(client, queue)
        assert_untouched(job, raw)


async def manifest(client: httpx.AsyncClient) -> None:
    """Declared as the experimental extension with the spec's version."""
    body = (await client.get("/ojs/manifest")).json()
    declared = {e["uri"]: e for e in body["extensions"]["experimental"]}
    enc = declared["urn:ojs:ext:experimental:encryption"]
    assert (enc["name"], enc["version"]) == ("encryption", "0.1.0")
