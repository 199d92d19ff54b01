"""What the browser tests share: the API keys and an ``ojs-server`` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx

ADMIN_KEY = "browser-admin-key-0123456789abcdef"
PRODUCER_KEY = "browser-producer-key-0123456789abcdef"
WORKER_KEY = "browser-worker-key-0123456789abcdef"
KEYS = f"admin:{ADMIN_KEY},producer:{PRODUCER_KEY},worker:{WORKER_KEY}"


class ServerProcess:
    """An ``ojs-server`` process and what its output said."""

    def __init__(self, argv: list[str], port: int, prefix: str = "") -> None:
        self.url = f"http://127.0.0.1:{port}{prefix}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OJS_")}
        env["OJS_API_KEYS"] = KEYS
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ojs_http.cli", "--port", str(port), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if "listening" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or self.proc.poll() is not None:
            self.stop()
            raise AssertionError("ojs-server did not start:\n" + "".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ojs/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not become healthy")
