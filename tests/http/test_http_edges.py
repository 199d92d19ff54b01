"""The CLI's help and version, and the HTTP edges a user meets first: reason phrases, no
redirect into a 405, one log record per unexpected error, no pid file left behind.

Real ``ojs-server`` processes where the behaviour belongs to the server (the HTTP server's status
line, the embedded nats-server's files); the ASGI app in process where it belongs to the app.
"""

from __future__ import annotations

import logging
import re
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from test_http_startup import SERVER, clean_env, free_port, run_server, server

from ojs_core.backend import Backend
from ojs_core.plugins import UnknownBackendError
from ojs_http import create_app
from ojs_http.settings import HttpSettings
from ojs_memory import MemoryBackend


def status_line(base: str, request: bytes) -> str:
    """The first line of the raw answer to ``request`` (bytes of an HTTP/1.1 request)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_status_lines_carry_reason_phrases() -> None:
    with server() as (base, _, _proc):
        assert status_line(base, b"GET /ojs/v1/health HTTP/1.1\r\nHost: x\r\n\r\n") == (
            "HTTP/1.1 200 OK"
        )
        assert status_line(base, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n") == (
            "HTTP/1.1 404 Not Found"
        )
        assert status_line(base, b"PUT /ojs/v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n") == (
            "HTTP/1.1 405 Method Not Allowed"
        )


def test_a_trailing_slash_is_not_found_not_a_redirect() -> None:
    with server() as (base, _, _proc):
        for method, path in [("GET", "/ojs/v1/jobs/"), ("POST", "/ojs/v1/jobs/")]:
            response = httpx.request(method, base + path, json={}, follow_redirects=False)
            assert response.status_code == 404, (method, path, response.status_code)
            assert response.json()["error"]["code"] == "not_found"


class _Exploding(MemoryBackend):
    async def list_queues(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("the backend broke")


async def test_an_unexpected_error_is_a_500_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    backend: Backend = _Exploding()
    await backend.open()
    app = create_app(backend, HttpSettings(run_scheduler=False), manage_backend=False)
    # raise_app_exceptions: a re-raised exception (what makes the server log it again) fails.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    with caplog.at_level(logging.ERROR):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/ojs/v1/queues")
    await backend.close()
    assert response.status_code == 500
    body = response.json()["error"]
    assert body["code"] == "internal_error"
    assert body["request_id"] == response.headers["x-request-id"]
    assert "the backend broke" not in response.text  # no internals in the answer
    records = [r for r in caplog.records if r.exc_info]
    assert len(records) == 1
    assert "GET /ojs/v1/queues" in records[0].getMessage()


def test_help_shows_every_default_and_variable_and_no_secret() -> None:
    secret = "s3cr3t-value-from-env"
    result = run_server(
        "--help", env=clean_env(OJS_NATS_PASSWORD=secret, NATS_URL=f"nats://u:{secret}@h:1")
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert secret not in text
    options = re.findall(r"^\s+(--[a-z-]+)", result.stdout, re.M)
    assert len(options) > 20
    for option in set(options) - {"--help", "--version"}:
        chunk = text[text.index(option + " ") :]
        bracket = re.search(r"\[\$(OJS_[A-Z_]+)[^\]]*; default: [^\]]*\]", chunk)
        assert bracket, f"{option} has no [$VARIABLE; default: ...] in --help"
    assert "[$OJS_PORT; default: 8080]" in text
    assert "[$OJS_BACKEND or $NATS_URL; default: embedded]" in text


def test_version() -> None:
    result = run_server("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"ojs-server \d+\.\d+\.\d+ \(ojs-core \d+\.\d+\.\d+.*\)\n", result.stdout)


def test_an_invalid_variable_is_refused_with_its_name() -> None:
    result = run_server(env=clean_env(OJS_PORT="eighty"))
    assert result.returncode != 0
    assert "$OJS_PORT" in result.stderr


def test_a_clean_exit_leaves_no_pid_file(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [*SERVER, "--data-dir", str(data), "--port", str(port)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening" in line:
                break
        assert (data / "nats-server.pid").exists()
        assert httpx.get(f"http://127.0.0.1:{port}/ojs/v1/health").status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert not (data / "nats-server.pid").exists()


def test_a_missing_backend_names_the_package_to_install() -> None:
    for scheme, package in [("embedded", "ojs-nats[embedded]"), ("nats", "ojs-nats")]:
        message = str(UnknownBackendError(f"{scheme}://x", scheme, ["memory"]))
        assert f"pip install '{package}'" in message
    result = run_server("--backend", "redis://127.0.0.1")
    assert result.returncode != 0
    assert "no plugin for scheme 'redis'" in result.stderr
    assert "installed schemes:" in result.stderr


def test_retention_flags_are_checked() -> None:
    ok = run_server("--retain-completed", "PT1H", "--dead-letter-max", "0", "--check-config")
    assert ok.returncode == 0, ok.stderr
    bad = run_server("--retain-discarded", "30 days", "--check-config")
    assert bad.returncode != 0
    assert "--retain-discarded" in bad.stderr
    negative = run_server("--dead-letter-max", "-1", "--check-config")
    assert negative.returncode != 0
    assert "--dead-letter-max" in negative.stderr


def test_retention_flags_reach_the_service() -> None:
    from ojs_http.cli import parse_args
    from ojs_http.startup import retention_settings

    args = parse_args(["--retain-completed", "PT1H", "--retain-workers", "0"])
    retention = retention_settings(args)
    assert retention.completed == timedelta(hours=1)
    assert retention.cancelled == timedelta(days=7)
    assert retention.workers is None
    assert retention.dead_letter_max_count == 10_000


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent``, by the parent pid in each ``/proc/N/stat``
    (``/proc/N/task/T/children`` is a snapshot the kernel does not promise complete while
    the process runs: proc(5))."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:  # gone since the listing
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        if int(stat.rsplit(b")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*SERVER, "--workers", "2", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        listening = 0
        for line in proc.stdout:
            listening += "listening" in line
            if listening == 2:
                break
        children = [pid for pid in _children(proc.pid) if b"ojs_http.cli" in _cmdline(pid)]
        assert len(children) == 1  # one sibling; the embedded nats-server is the other child
        ids = {
            httpx.post(
                f"http://127.0.0.1:{port}/ojs/v1/jobs", json={"type": "w.job", "args": []}
            ).json()["job"]["id"]
            for _ in range(20)
        }
        assert len(ids) == 20
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert (
        not Path(f"/proc/{children[0]}").exists()
        or b"Z" in Path(f"/proc/{children[0]}/stat").read_bytes().rsplit(b")", 1)[1][:3]
    )


def test_workers_refuse_the_memory_backend() -> None:
    done = run_server("--workers", "2", "--backend", "memory", "--check-config")
    assert done.returncode != 0
    assert "--workers" in done.stderr


def test_exhausted_jobs_flag_reaches_the_service() -> None:
    from ojs_http.cli import parse_args

    assert parse_args([]).exhausted_jobs == "dead_letter"
    assert parse_args(["--exhausted-jobs", "discard"]).exhausted_jobs == "discard"
    app = create_app(MemoryBackend(), HttpSettings(exhausted="discard"))
    assert app.state.service.exhausted == "discard"
    assert create_app(MemoryBackend()).state.service.exhausted == "dead_letter"
