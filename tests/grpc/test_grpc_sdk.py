"""Interoperability: the official Python SDK's gRPC transport (``ojs.transport.grpc``,
unchanged, from its git mirror) pushes, fetches, acks and reads a job, and reads health and
the manifest, against ``ojs-server --grpc-port`` with API keys on.

The SDK builds its messages from the default descriptor pool with an API that protobuf 5
removed, so it runs in an environment of its own (``uv run --with 'protobuf<5'``) with our
``ojs.v1`` descriptors handed over as a ``FileDescriptorSet``. Skipped when the SDK's mirror,
uv, or that environment is not available (CI has no GitHub access).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_support import ojs_server
from test_grpc_server import server_env

from ojs_grpc._gen import events_pb2, job_pb2, queue_pb2, service_pb2, worker_pb2, workflow_pb2

MIRROR = Path("/work/.mirror/openjobspec+ojs-python-sdk/repo")
CLIENT = Path(__file__).with_name("sdk_grpc_client.py")
KEYS_USED = ("producer-key", "worker-key")
SDK_ENV = ["--with", "protobuf>=4.25,<5", "--with", "grpcio>=1.60", "--with", "httpx>=0.27"]


@pytest.fixture(scope="module")
def sdk_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """The command running the SDK's Python, and the SDK's ``src``; skips when unavailable."""
    git_dir = Path(os.environ.get("OJS_SDK_GIT_DIR", MIRROR))
    git, uv = shutil.which("git"), shutil.which("uv")
    if git is None or uv is None or not git_dir.is_dir():
        pytest.skip(f"the official SDK's git mirror (or git, or uv) is not available ({git_dir})")
    tree = tmp_path_factory.mktemp("ojs-python-sdk")
    archive = subprocess.run(
        [git, f"--git-dir={git_dir}", "archive", "HEAD", "src"], capture_output=True, timeout=60
    )
    if archive.returncode != 0:
        pytest.skip("cannot export the SDK")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True, timeout=60)
    command = [uv, "run", "--no-project", *SDK_ENV, "python"]
    probe = subprocess.run(
        [*command, "-c", "import ojs.transport.grpc, google.protobuf, grpc"],
        env=_env(tree / "src"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode != 0:
        pytest.skip(f"no environment for the SDK here: {probe.stderr.strip()[-300:]}")
    return command, tree / "src"


def _env(sdk_src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYTHONPATH"] = str(sdk_src)
    return env


def descriptor_set(path: Path) -> Path:
    """Our ``ojs.v1`` files, dependencies first, as a ``FileDescriptorSet``."""
    files = descriptor_pb2.FileDescriptorSet()
    for module in (job_pb2, events_pb2, queue_pb2, worker_pb2, workflow_pb2, service_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    path.write_bytes(files.SerializeToString())
    return path


def test_the_official_sdk_grpc_transport(sdk_run: tuple[list[str], Path], tmp_path: Path) -> None:
    command, sdk_src = sdk_run
    descriptors = descriptor_set(tmp_path / "ojs.pb")
    with ojs_server("--backend", "memory", env=server_env()) as (_base, port, _lines):
        done = subprocess.run(
            [*command, str(CLIENT), f"127.0.0.1:{port}", str(descriptors), *KEYS_USED],
            env=_env(sdk_src),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["fetched"] == [seen["pushed"]]
    assert seen["args"] == ["hello", 2]
    assert seen["acked"] == {"acknowledged": True}
    assert seen["state"] == "completed"
    assert seen["health"] == "ok"
    assert seen["protocols"] == ["http", "grpc"]
