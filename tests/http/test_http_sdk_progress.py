"""The official Python SDK, unchanged, against a real ``ojs-server`` process (memory backend, and
embedded NATS): ``report_progress`` and ``DurableContext`` (resume, checkpoint, complete, on the
SDK's doubled base path).

The SDK (``openjobspec`` 0.4.0, import ``ojs``) is not on PyPI. The test exports it from a git
mirror of ``github.com/openjobspec/ojs-python-sdk`` (``OJS_SDK_GIT_DIR``, else the workspace's
mirror path) into a temporary directory and runs ``sdk_progress_worker.py`` in a subprocess with
the SDK's ``src`` on ``PYTHONPATH``. Without the mirror (CI has no GitHub access), git, or an
importable SDK, the test is skipped. No SDK code is copied into this repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_http_startup import clean_env, server

MIRROR = Path("/work/.mirror/openjobspec+ojs-python-sdk/repo")
WORKER = Path(__file__).with_name("sdk_progress_worker.py")


@pytest.fixture(scope="module")
def sdk_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SDK's ``src`` directory, exported from its git mirror; skips when unavailable."""
    git_dir = Path(os.environ.get("OJS_SDK_GIT_DIR", MIRROR))
    git = shutil.which("git")
    if git is None or not git_dir.is_dir():
        pytest.skip(f"the official SDK's git mirror is not available ({git_dir})")
    tree = tmp_path_factory.mktemp("ojs-python-sdk")
    archive = subprocess.run(
        [git, f"--git-dir={git_dir}", "archive", "HEAD", "src"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if archive.returncode != 0:
        pytest.skip(f"cannot export the SDK: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True, timeout=60)
    src = tree / "src"
    probe = subprocess.run(
        [sys.executable, "-c", "import ojs; ojs.DurableContext; ojs.report_progress"],
        env=clean_env(PYTHONPATH=str(src)),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if probe.returncode != 0:
        pytest.skip(f"the SDK does not import here: {probe.stderr.strip()[-500:]}")
    return src


@pytest.mark.parametrize("backend", ["memory", "embedded"])
def test_sdk_reports_progress_and_resumes_from_its_checkpoint(
    sdk_src: Path, backend: str, tmp_path: Path
) -> None:
    args = ["--backend", backend, "--data-dir", str(tmp_path / "store")]
    with server("--log-level", "warning", *args) as (base, _lines, _proc):
        run = subprocess.run(
            [sys.executable, str(WORKER), base],
            env=clean_env(PYTHONPATH=str(sdk_src)),
            capture_output=True,
            text=True,
            check=False,
            timeout=90,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    first, second = seen["attempts"]
    # Attempt 1: nothing to replay; the report is stored and read back by the SDK itself.
    assert (first["attempt"], first["replaying"]) == (1, False)
    assert first["progress"]["progress"] == 0.4
    assert first["progress"]["message"] == "rows fetched"
    assert first["progress"]["data"] == {"rows": 3}
    # Attempt 2: the SDK found the checkpoint (resume, doubled path) and replayed the side
    # effect from its log instead of calling it again.
    assert (second["attempt"], second["replaying"]) == (2, True)
    assert seen["side_effect_calls"] == 1
    assert second["progress"]["progress"] == 0.4  # reported afresh in the new attempt
    job = seen["job"]
    assert job["state"] == "completed", job
    assert job["result"] == {"rows": [1, 2, 3]}
    assert "checkpoint" not in job
    assert seen["progress"]["progress"] == 1.0
    assert seen["checkpoint_status"] == 404
