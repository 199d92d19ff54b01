"""ojs-server's safe start-up: refusing public binds without keys, test mode, key reloading.

Real processes: ``python -m ojs_http.cli`` on a free loopback port with the memory backend.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ojs_http.shutdown_watch import LIMIT_S
from ojs_http.startup import check_exposure, is_loopback

SERVER = [sys.executable, "-m", "ojs_http.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OJS_", "NATS_URL"))}
    env.update(extra)
    return env


def run_server(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, *args], env=env or clean_env(), capture_output=True, text=True, timeout=60
    )


@contextmanager
def server(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, list[str], subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [*SERVER, "--backend", "memory", "--port", str(port), *args],
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{base}/ojs/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        lines: list[str] = []
        yield base, lines, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            # Longer than the server's own bound on its shutdown, which logs where it stuck.
            out, _ = proc.communicate(timeout=LIMIT_S + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(f"ojs-server did not exit after SIGTERM:\n{out[-8000:]}") from None
        lines.extend(out.splitlines())


def eventually_status(url: str, token: str, status: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        got = httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code
        if got == status:
            return
        assert time.monotonic() < deadline, f"{url} with {token!r}: {got}, want {status}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("ojs.example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_exposure_rules() -> None:
    ok = {"has_auth": False, "insecure_no_auth": False, "test_mode": False}
    assert check_exposure("127.0.0.1", **ok) is None
    assert check_exposure("127.0.0.1", **(ok | {"test_mode": True})) is None
    assert check_exposure("0.0.0.0", **(ok | {"has_auth": True})) is None
    assert check_exposure("0.0.0.0", **(ok | {"insecure_no_auth": True})) is None
    refusal = check_exposure("0.0.0.0", **ok)
    assert refusal is not None
    assert "OJS_API_KEYS" in refusal
    assert "--insecure-no-auth" in refusal
    # Test mode never on a public bind, with or without auth.
    for extra in ({"has_auth": True}, {"insecure_no_auth": True}):
        refusal = check_exposure("0.0.0.0", **(ok | {"test_mode": True} | extra))
        assert refusal is not None
        assert "loopback" in refusal


def test_public_bind_without_keys_exits_with_the_explanation() -> None:
    done = run_server("--host", "0.0.0.0", "--backend", "memory", "--port", str(free_port()))
    assert done.returncode == 2
    assert "OJS_API_KEYS" in done.stderr
    assert "--api-keys-file" in done.stderr
    assert "--insecure-no-auth" in done.stderr


def test_enable_reset_on_a_public_bind_exits_even_with_keys() -> None:
    done = run_server(
        "--host",
        "0.0.0.0",
        "--backend",
        "memory",
        "--enable-reset",
        env=clean_env(OJS_API_KEYS="admin:KA"),
    )
    assert done.returncode == 2
    assert "loopback" in done.stderr


def test_a_malformed_keys_file_exits_naming_the_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("admin:topsecret\nboss:other\n")
    done = run_server("--backend", "memory", "--api-keys-file", str(keys))
    assert done.returncode != 0
    assert "line 2: unknown role 'boss'" in done.stderr
    assert "topsecret" not in done.stderr + done.stdout


def test_help_shows_no_secret_from_the_environment() -> None:
    done = run_server(
        "--help",
        env=clean_env(
            OJS_API_KEYS="admin:topsecret-1",
            OJS_NATS_PASSWORD="topsecret-2",
            OJS_NATS_TOKEN="topsecret-3",
        ),
    )
    assert done.returncode == 0
    assert "--api-keys-file" in done.stdout
    assert "--nats-creds" in done.stdout
    assert "topsecret" not in done.stdout


def test_loopback_without_keys_works_and_test_mode_resets() -> None:
    with server("--enable-reset") as (base, lines, _):
        assert httpx.get(f"{base}/ojs/v1/queues").status_code == 200
        assert httpx.post(f"{base}/ojs/v1/admin/reset").status_code == 200
    assert any("no authentication" in line and "test mode" in line for line in lines), lines


def test_keys_from_env_and_file_reload_on_sighup(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# first generation\nworker:gen-1\n")
    env = clean_env(OJS_API_KEYS="admin:env-admin")
    with server("--api-keys-file", str(keys), env=env) as (base, _, proc):
        url = f"{base}/ojs/v1/queues"
        assert httpx.get(url).status_code == 401
        eventually_status(url, "gen-1", 200)
        eventually_status(url, "env-admin", 200)
        keys.write_text("worker:gen-2\n")
        proc.send_signal(signal.SIGHUP)
        eventually_status(url, "gen-2", 200)
        eventually_status(url, "gen-1", 401)
        eventually_status(url, "env-admin", 200)
        # A broken file keeps the keys in force.
        keys.write_text("nonsense\n")
        proc.send_signal(signal.SIGHUP)
        keys.write_text("worker:gen-3\n")
        proc.send_signal(signal.SIGHUP)
        eventually_status(url, "gen-3", 200)  # the broken generation was skipped, not applied
        eventually_status(url, "gen-2", 401)


def test_startup_lines_redact_the_backend_password_and_a_signal_stops_the_connect() -> None:
    # The server says what it opens before it connects; the NATS port has nobody on it, so it
    # keeps trying (up to 30 s) until SIGTERM, which must stop it at once.
    port, dead = free_port(), free_port()
    proc = subprocess.Popen(
        [*SERVER, "--backend", f"nats://ojs:hunter2@127.0.0.1:{dead}", "--port", str(port)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "opening the backend" in first
        assert "nats://ojs:***@127.0.0.1" in first
        assert "hunter2" not in first
        # Let it try to connect a while (failed attempts are logged at debug), then stop it.
        time.sleep(2)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert time.monotonic() - stopped < 5
        assert proc.returncode == 0
    finally:
        proc.kill()
    assert "hunter2" not in out
    assert "listening" not in out  # it never was


def test_an_unreachable_backend_exits_with_the_reason() -> None:
    port, dead = free_port(), free_port()
    done = run_server(
        "--backend",
        f"nats://ojs:hunter2@127.0.0.1:{dead}",
        "--port",
        str(port),
        env=clean_env(OJS_NATS_CONNECT_TIMEOUT="1"),
    )
    assert done.returncode != 0
    assert "could not open the backend" in done.stderr
    assert "could not connect to NATS at nats://127.0.0.1" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_a_contradiction_in_nats_credentials_exits_without_the_secret() -> None:
    done = run_server(
        "--backend", "nats://ojs:hunter2@127.0.0.1:1", env=clean_env(OJS_NATS_TOKEN="t0ken-secret")
    )
    assert done.returncode != 0
    assert "both in the server URL and as options" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert "t0ken-secret" not in done.stderr + done.stdout


def test_limits_from_flags_and_env() -> None:
    env = clean_env(OJS_LIMITS="max_batch_jobs=2")
    with server("--limit", "max_fetch_count=3", env=env) as (base, _, _):
        jobs = [{"type": "t", "args": []}] * 3
        batch = httpx.post(f"{base}/ojs/v1/jobs/batch", json={"jobs": jobs})
        assert batch.status_code == 413
        assert batch.json()["error"]["max_batch_size"] == 2
        fetch = httpx.post(f"{base}/ojs/v1/workers/fetch", json={"queues": ["q"], "count": 4})
        assert fetch.status_code == 400
        assert fetch.json()["error"]["details"]["maximum"] == 3


def test_an_unknown_limit_exits_listing_the_limits() -> None:
    done = run_server("--backend", "memory", "--limit", "max_jobs=5")
    assert done.returncode != 0
    assert "unknown limit 'max_jobs'" in done.stderr
    assert "max_batch_jobs" in done.stderr
