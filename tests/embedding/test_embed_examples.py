"""The runnable examples of docs/embedding.md: each one runs and produces what the docs say.

Every ``examples/embedding/*.py`` exposes ``async def main()`` that runs against a
MemoryBackend and finishes by itself; a new example without an expectation here fails.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "embedding"
DOC = ROOT / "docs" / "embedding.md"

EXPECTED: dict[str, dict[str, Any]] = {
    "quickstart": {
        "sent": ["ada@example.com", "bob@mail.invalid"],
        "state": "completed",
        "attempts": 2,
        "first_error": "ConnectionError",
        "result": {"delivered_to": "bob@mail.invalid", "attempt": 2},
    },
    "middleware": {
        "stored": ["greet.user", None],
        "calls": ["greet.user trace=trace-42", "greet.user trace=trace-42"],
        "result": "HELLO BOB",
        "meta": {"trace_id": "trace-42"},
        "timed": 2,
    },
    "workflows": {
        "pipeline": "completed",
        "published": ["/tmp/intro.raw@1080p", "/tmp/intro.raw@720p"],
        "batch": "completed",
        "callback": "completed",
    },
    "mounting": {
        "prefixed": {"location": "/jobs-api/ojs/v1/jobs", "reports": ["q1: q1.pdf", "q2: q2.pdf"]},
        "root": {"location": "/ojs/v1/jobs", "reports": ["q1: q1.pdf", "q2: q2.pdf"]},
    },
    "api_tour": {
        "email": ("completed", {"ok": True, "to": "ada@example.com"}),
        "steps": ["img.resize"] * 2 + ["video.encode"] * 2 + ["video.fetch", "video.publish"],
        "middleware": ["mw", "audit-2"],
        "auth": True,
    },
    "worker_process": {
        "handed_back": ("available", 0, "shutdown"),
        "finished": ("completed", 1, "worker-2"),
        "completed": 5,
    },
}


def load(name: str) -> ModuleType:
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"embedding_example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_has_an_expectation() -> None:
    found = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    assert found == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_example_runs(name: str) -> None:
    module = load(name)
    assert module.__doc__, f"{name}.py needs a module docstring"
    assert await module.main() == EXPECTED[name]


def test_the_doc_links_every_example() -> None:
    text = DOC.read_text(encoding="utf-8")
    linked = set(re.findall(r"examples/embedding/(\w+)\.py", text))
    assert linked == set(EXPECTED)
