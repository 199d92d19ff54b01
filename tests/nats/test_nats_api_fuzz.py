"""The API fuzzed from its OpenAPI document over the NATS backend (the real nats-server).

The fuzzer is ``tests/http/api_fuzz.py`` (the memory run is ``tests/http/test_http_openapi.py``):
every documented operation with positive and negative data, no 5xx, every response as
documented, with authentication off and on.
"""

from __future__ import annotations

import sys
from pathlib import Path

from starlette.applications import Starlette

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))

from api_fuzz import fuzz

from ojs_http import create_app
from ojs_http.auth import ApiKeys
from ojs_http.settings import HttpSettings
from ojs_nats.backend import NatsBackend

EXAMPLES = 3


def app_on(nats_url: str, keys: ApiKeys | None = None) -> Starlette:
    settings = HttpSettings(run_scheduler=False)
    return create_app(NatsBackend(nats_url), settings, auth=keys)


def test_fuzz_nats_without_auth(nats_url: str) -> None:
    statuses = fuzz(lambda: app_on(nats_url), token=None, examples_per_operation=EXAMPLES)
    assert any(k.startswith("POST /ojs/v1/jobs ") and k.endswith(" 201") for k in statuses)


def test_fuzz_nats_with_auth(nats_url: str) -> None:
    keys = ApiKeys.load("admin:KA,producer:KP")
    statuses = fuzz(
        lambda: app_on(nats_url, keys), token="KP", seed_token="KA", examples_per_operation=2
    )
    assert any(k.endswith(" 403") for k in statuses)
    assert any(k.startswith("POST /ojs/v1/jobs ") and k.endswith(" 201") for k in statuses)
