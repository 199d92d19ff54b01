"""The official Python SDK's dead-letter flow, unchanged, against a real ``ojs-server`` on the
memory backend and the embedded NATS default: a job that exhausts its attempts through an SDK
worker is in ``list_dead_letter_jobs`` (the SDK's ``RetryPolicy`` cannot ask for the dead
letter: the server's default keeps exhausted jobs there), ``retry_dead_letter_job`` completes
it, ``delete_dead_letter_job`` removes another. Skipped without the SDK's git mirror."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_http_sdk_progress import sdk_src
from test_http_startup import clean_env, server

__all__ = ["sdk_src"]

CLIENT = Path(__file__).with_name("sdk_dead_letter_client.py")


@pytest.mark.parametrize("backend", ["memory", "embedded"])
def test_the_sdks_dead_letter_flow(sdk_src: Path, backend: str, tmp_path: Path) -> None:
    args = ["--backend", backend, "--data-dir", str(tmp_path / "store")]
    with server("--log-level", "warning", *args) as (base, _lines, _proc):
        run = subprocess.run(
            [sys.executable, str(CLIENT), base],
            env=clean_env(PYTHONPATH=str(sdk_src)),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["dead"] == seen["ids"]
    assert seen["retried_state"] == "completed"
    assert seen["dead_after"] == []
