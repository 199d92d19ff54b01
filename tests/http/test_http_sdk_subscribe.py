"""The official Python SDK's ``ojs.subscribe`` functions, unchanged, against a real
``ojs-server`` process (memory backend and the embedded NATS default): ``subscribe_job``
receives a job's events (its stream ends after the terminal one) and ``subscribe_queue``
receives the events of jobs enqueued into a queue while it listens.

Skipped like ``test_http_sdk_progress.py`` when the SDK's git mirror is not available.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_http_sdk_progress import sdk_src
from test_http_startup import clean_env, server

__all__ = ["sdk_src"]

CLIENT = Path(__file__).with_name("sdk_subscribe_client.py")


def _subscriber(sdk: Path, base: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(CLIENT), base, *args],
        env=clean_env(PYTHONPATH=str(sdk)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline()) == {"ready": True}
    return proc


def _events(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("backend", ["memory", "embedded"])
def test_subscribe_job_receives_the_events_of_a_finished_job(
    sdk_src: Path, backend: str, tmp_path: Path
) -> None:
    store = ["--backend", backend, "--data-dir", str(tmp_path / "store")]
    with server("--log-level", "warning", *store) as (base, _lines, _proc):
        created = httpx.post(f"{base}/ojs/v1/jobs", json={"type": "sdk.sub", "args": []})
        job_id = created.json()["job"]["id"]
        fetched = httpx.post(f"{base}/ojs/v1/workers/fetch", json={"queues": ["default"]})
        assert [j["id"] for j in fetched.json()["jobs"]] == [job_id]
        assert httpx.post(f"{base}/ojs/v1/workers/ack", json={"job_id": job_id}).status_code == 200
        events = _events(_subscriber(sdk_src, base, "job", job_id, "10"))
    assert events, "no event reached the SDK"
    last = events[-1]
    assert last["type"] == "job.completed"
    data = last["data"]
    assert isinstance(data, dict)
    assert job_id in json.dumps(data)
    assert len(events) == 1  # a finished job: its final state once, then the stream ends


@pytest.mark.parametrize("backend", ["memory", "embedded"])
def test_subscribe_queue_receives_new_jobs_of_the_queue(
    sdk_src: Path, backend: str, tmp_path: Path
) -> None:
    store = ["--backend", backend, "--data-dir", str(tmp_path / "store")]
    with server("--log-level", "warning", *store) as (base, _lines, _proc):
        proc = _subscriber(sdk_src, base, "queue", "sdkq", "1")
        enqueued = []
        deadline = time.monotonic() + 30
        while proc.poll() is None:  # the stream may open after the first enqueue: repeat
            assert time.monotonic() < deadline, "the SDK heard nothing"
            body = {"type": "sdk.sub", "args": [], "options": {"queue": "sdkq"}}
            enqueued.append(httpx.post(f"{base}/ojs/v1/jobs", json=body).json()["job"]["id"])
            time.sleep(0.2)
        (event,) = _events(proc)
    assert event["type"] == "job.enqueued"
    assert any(job_id in json.dumps(event["data"]) for job_id in enqueued)
