"""ojs-server's observability flags: /metrics exposure rules, JSON logs, the access log.

Real processes (``python -m ojs_http.cli``), as in test_http_startup.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
from test_http_startup import SERVER, clean_env, free_port, run_server, server


def check(*args: str, keys: str | None = "admin:KA") -> str:
    env = clean_env(**({"OJS_API_KEYS": keys} if keys else {}))
    done = run_server("--backend", "memory", "--check-config", *args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_metrics_need_a_key_on_a_public_bind_with_credentials() -> None:
    public = ("--host", "0.0.0.0", "--port", str(free_port()))
    assert "metrics on /metrics with a key" in check(*public)
    assert "metrics public on /metrics" in check(*public, "--metrics-public")
    assert "metrics off" in check(*public, "--no-metrics")
    # On loopback the scrape stays open (a local agent), keys or not.
    assert "metrics public on /metrics" in check("--host", "127.0.0.1")
    assert "metrics public on /metrics" in check("--host", "127.0.0.1", keys=None)


def test_environment_variables_set_the_flags() -> None:
    env = clean_env(OJS_API_KEYS="admin:KA", OJS_METRICS_PUBLIC="1")
    done = run_server("--backend", "memory", "--host", "0.0.0.0", "--check-config", env=env)
    assert "metrics public on /metrics" in done.stdout
    env = clean_env(OJS_NO_METRICS="true")
    done = run_server("--backend", "memory", "--check-config", env=env)
    assert "metrics off" in done.stdout
    bad = run_server("--backend", "memory", "--log-format", "xml", "--check-config")
    assert bad.returncode == 2
    assert "--log-format" in bad.stderr


def test_json_logs_access_log_metrics_and_readiness_of_a_running_server() -> None:
    with server("--log-format", "json", "--access-log") as (base, lines, _):
        assert httpx.get(f"{base}/ojs/v1/ready").status_code == 200
        job = httpx.post(f"{base}/ojs/v1/jobs", json={"type": "a.b", "args": []}).json()["job"]
        got = httpx.get(f"{base}/ojs/v1/jobs/{job['id']}", headers={"X-Request-ID": "cli-1"})
        assert got.headers["X-Request-Id"] == "cli-1"
        scrape = httpx.get(f"{base}/metrics")
        assert scrape.status_code == 200
        assert 'ojs_job_enqueued_total{queue="default",type="a.b"} 1.0' in scrape.text
    records = [json.loads(line) for line in lines if line.startswith("{")]
    access = [r for r in records if r.get("logger") == "ojs.access"]
    mine = next(r for r in access if r.get("request_id") == "cli-1")
    assert mine["ojs.job.id"] == job["id"]
    assert mine["http.route"] == "/ojs/v1/jobs/{job_id}"
    assert all("timestamp" in r and "level" in r for r in records)


def test_workers_report_the_counters_of_every_process(tmp_path: Path) -> None:
    # --workers 2: the kernel spreads connections between the processes; every scrape, whichever
    # process answers it, sums both (prometheus-client's multiprocess mode).
    port = free_port()
    proc = subprocess.Popen(
        [*SERVER, "--workers", "2", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        listening = 0
        for line in proc.stdout:
            listening += "listening" in line
            if listening == 2:
                break
        for _ in range(20):  # a new connection each: both processes get some
            r = httpx.post(f"{base}/ojs/v1/jobs", json={"type": "w.job", "args": []})
            assert r.status_code == 201
        for _ in range(6):
            text = httpx.get(f"{base}/metrics").text
            assert 'ojs_job_enqueued_total{queue="default",type="w.job"} 20.0' in text
            assert 'ojs_queue_depth{queue="default",state="available"} 20.0' in text
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
