"""The NATS recipes of docs/embedding.md, run as the separate processes they describe.

- ``examples/nats/worker.py`` and ``examples/nats/producer.py``: a worker process and a
  producer process on one embedded NATS (the first to start runs it, the other joins), and
  the same pair beside an ``ojs-server`` that owns the embedded NATS;
- ``examples/nats/host_app.py`` served by Hypercorn, driven by ``examples/nats/smoke_client.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ojs_nats.embedded import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "nats"
pytestmark = pytest.mark.slow


@contextmanager
def process(*argv: str, ready: str, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """A Python process of the example ``argv``; yields once it printed ``ready``; stops it
    with SIGTERM afterwards and requires a clean exit."""
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OJS_")},
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if ready in line:
                break
        else:
            raise AssertionError(f"{argv[0]} exited before {ready!r}: {''.join(seen)}")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def produce(data_dir: Path, count: int) -> dict[str, object]:
    argv = ["--data-dir", str(data_dir), "--count", str(count)]
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "producer.py"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_producer_and_a_worker_process_share_the_embedded_nats(tmp_path: Path) -> None:
    data = tmp_path / "store"
    worker = [str(EXAMPLES / "worker.py"), "--data-dir", str(data)]
    with process(*worker, ready="worker ready", cwd=tmp_path):
        owner_pid = int((data / "nats-server.pid").read_text())
        result = produce(data, 50)  # joins the worker's server
        assert int((data / "nats-server.pid").read_text()) == owner_pid
    assert result == {
        "completed": 50,
        "states": ["completed"],
        "first": {"pdf": "invoice-0.pdf"},
    }


def test_a_worker_process_joins_the_embedded_nats_of_ojs_server(tmp_path: Path) -> None:
    data, port = tmp_path / "store", free_port()
    server = ["-m", "ojs_http.cli", "--data-dir", str(data), "--port", str(port)]
    with (
        process(*server, ready="listening", cwd=tmp_path),
        process(str(EXAMPLES / "worker.py"), "--data-dir", str(data), ready="ready", cwd=tmp_path),
    ):
        created = httpx.post(
            f"http://127.0.0.1:{port}/ojs/v1/jobs",
            json={"type": "invoice.render", "args": [7], "queue": "invoices"},
        )
        assert created.status_code == 201
        url = f"http://127.0.0.1:{port}/ojs/v1/jobs/{created.json()['job']['id']}"
        deadline = time.monotonic() + 30
        while (job := httpx.get(url).json()["job"])["state"] != "completed":
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["result"] == {"pdf": "invoice-7.pdf"}


def test_the_host_app_on_nats(tmp_path: Path) -> None:
    port = free_port()
    host = [str(EXAMPLES / "host_app.py"), "--port", str(port), "--data-dir", str(tmp_path / "s")]
    with process(*host, ready="Running on", cwd=tmp_path):
        done = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "smoke_client.py"),
                f"http://127.0.0.1:{port}/jobs-api",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "completed"
    assert result["thumbnail"] == {"thumbnail": "cat.png"}
