"""Enqueue, fetch and acknowledge jobs over HTTP with the standard library only.

``python smoke_client.py http://127.0.0.1:8000/jobs-api`` talks to ``host_app.py`` (or to any
OJS server: pass its base URL without ``/ojs/v1``). It enqueues a job, fetches it as a worker,
acknowledges it and reads it back ``completed``; then it asks the host's own endpoint for a
thumbnail and waits until the host's in-process worker completed it. Exits non-zero on any
mismatch.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any


def call(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One JSON request; returns the status and the decoded body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def expect(condition: bool, what: object) -> None:
    """Stop with ``what`` when ``condition`` is false (asserts vanish under ``python -O``)."""
    if not condition:
        raise SystemExit(f"smoke check failed: {what}")


def check(base: str) -> dict[str, Any]:
    """The round trip through ``base`` (e.g. ``http://127.0.0.1:8000/jobs-api``)."""
    api = base.rstrip("/") + "/ojs/v1"
    job = {"type": "smoke.test", "args": ["hello"], "queue": "smoke"}
    status, created = call("POST", f"{api}/jobs", job)
    expect(status == 201, (status, created))
    job_id = created["job"]["id"]
    fetch = {"queues": ["smoke"], "worker_id": "smoke-1"}
    status, fetched = call("POST", f"{api}/workers/fetch", fetch)
    expect(status == 200 and [j["id"] for j in fetched["jobs"]] == [job_id], (status, fetched))
    status, acked = call("POST", f"{api}/workers/ack", {"job_id": job_id, "result": {"ok": 1}})
    expect(status == 200 and acked["state"] == "completed", (status, acked))
    status, got = call("GET", f"{api}/jobs/{job_id}")
    expect(status == 200 and got["job"]["state"] == "completed", (status, got))
    host = base.rstrip("/").rsplit("/", 1)[0]
    status, ordered = call("POST", f"{host}/thumbnails/cat")
    expect(status == 202, (status, ordered))
    deadline = time.monotonic() + 20
    while True:
        _, thumb = call("GET", f"{api}/jobs/{ordered['job_id']}")
        if thumb["job"]["state"] == "completed":
            break
        expect(time.monotonic() < deadline, thumb)
        time.sleep(0.05)
    return {"job": job_id, "state": got["job"]["state"], "thumbnail": thumb["job"]["result"]}


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/jobs-api")))
