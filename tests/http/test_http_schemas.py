"""The schema registry over HTTP (memory backend): the spec's routes (by job type and version)
and the official SDK's (by URI), JSON Schema checks of ``args`` at enqueue in each mode,
breaking-change detection, and errors that name the field."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from test_http_binding import V1, error_of, serve

INVOICE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "prefixItems": [
        {
            "type": "object",
            "required": ["customer_id", "amount"],
            "properties": {
                "customer_id": {"type": "string"},
                "amount": {"type": "integer", "minimum": 0},
                "note": {"type": "string", "maxLength": 100},
            },
        }
    ],
}


async def _register(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(f"{V1}/schemas", json=body)


async def test_register_get_list_versions_and_delete() -> None:
    async with serve() as (_, client):
        created = await _register(
            client, job_type="invoice.generate", version="1.0.0", schema=INVOICE
        )
        assert created.status_code == 201, created.text
        record = created.json()["schema"]
        assert (record["job_type"], record["version"], record["schema"]) == (
            "invoice.generate",
            "1.0.0",
            INVOICE,
        )
        assert record["uri"] == "urn:ojs:schema:invoice.generate:1.0.0"
        again = await _register(client, job_type="invoice.generate", version="1.0.0", schema={})
        error_of(again, 409)
        wider = {**INVOICE, "description": "adds nothing breaking"}
        assert (
            await _register(client, job_type="invoice.generate", version="1.1.0", schema=wider)
        ).status_code == 201

        latest = (await client.get(f"{V1}/schemas/invoice.generate")).json()["schema"]
        assert latest["version"] == "1.1.0"
        versions = (await client.get(f"{V1}/schemas/invoice.generate/versions")).json()
        assert [(v["version"], v["is_latest"]) for v in versions["versions"]] == [
            ("1.1.0", True),
            ("1.0.0", False),
        ]
        listing = (await client.get(f"{V1}/schemas", params={"limit": 1})).json()
        assert len(listing["schemas"]) == 1
        assert listing["pagination"]["total"] == 2

        gone = await client.delete(f"{V1}/schemas/invoice.generate/1.1.0")
        assert gone.status_code == 200, gone.text
        assert (await client.get(f"{V1}/schemas/invoice.generate")).json()["version"] == "1.0.0"
        error_of(await client.delete(f"{V1}/schemas/invoice.generate/1.1.0"), 404)
        error_of(await client.get(f"{V1}/schemas/nobody.registered"), 404)


async def test_the_sdks_uri_routes() -> None:
    uri = "https://schemas.example.com/email/send/v1"
    async with serve() as (_, client):
        created = await _register(
            client, uri=uri, type="email.send", version="1.0.0", schema={"type": "array"}
        )
        assert created.status_code == 201, created.text
        got = await client.get(f"{V1}/schemas/{quote(uri, safe='')}")
        assert got.status_code == 200, got.text
        assert (got.json()["uri"], got.json()["type"]) == (uri, "email.send")
        deleted = await client.delete(f"{V1}/schemas/{quote(uri, safe='')}")
        assert deleted.json()["deleted"] is True
        error_of(await client.get(f"{V1}/schemas/{quote(uri, safe='')}"), 404)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"version": "1.0.0", "schema": {}}, "job_type"),
        ({"job_type": "t", "version": "one", "schema": {}}, "version"),
        ({"job_type": "t", "version": "1.0.0", "schema": []}, "schema"),
        ({"job_type": "t", "version": "1.0.0", "schema": {"type": 12}}, "schema"),
        ({"job_type": "t", "version": "1.0.0", "schema": {}, "uri": "no scheme"}, "uri"),
    ],
)
async def test_bad_registrations_name_the_field(body: dict[str, Any], path: str) -> None:
    async with serve() as (_, client):
        err = error_of(await client.post(f"{V1}/schemas", json=body), 400)
        assert err["details"]["validation_errors"][0]["path"] == path


async def test_a_breaking_change_needs_a_major_version() -> None:
    async with serve() as (_, client):
        await _register(client, job_type="inv", version="1.0.0", schema=INVOICE["prefixItems"][0])
        stricter = {
            **INVOICE["prefixItems"][0],
            "required": ["customer_id", "amount", "currency"],
            "properties": {
                "customer_id": {"type": "integer"},
                "amount": {"type": "integer", "minimum": 0},
                "note": {"type": "string", "maxLength": 50},
                "currency": {"type": "string"},
            },
            "additionalProperties": False,
        }
        refused = await _register(client, job_type="inv", version="1.1.0", schema=stricter)
        err = error_of(refused, 422)
        assert err["details"]["breaking_changes"] == [
            "Required field 'currency' was added",
            "Field 'customer_id' changed type from string to integer",
            "Field 'note': maxLength narrowed from 100 to 50",
            "additionalProperties was set to false",
        ]
        assert (
            await _register(client, job_type="inv", version="2.0.0", schema=stricter)
        ).status_code == 201


async def _invoice(client: httpx.AsyncClient, args: list[Any]) -> httpx.Response:
    return await client.post(f"{V1}/jobs", json={"type": "invoice.generate", "args": args})


async def test_strict_mode_refuses_bad_args_with_each_failing_path() -> None:
    async with serve(schema_validation="strict") as (_, client):
        await _register(client, job_type="invoice.generate", version="1.0.0", schema=INVOICE)
        refused = await _invoice(client, [{"customer_id": 7, "amount": -1}])
        err = error_of(refused, 422, "validation_error")
        assert [e["path"] for e in err["details"]["validation_errors"]] == [
            "args[0].amount",
            "args[0].customer_id",
        ]
        assert err["details"]["schema"]["version"] == "1.0.0"
        ok = await _invoice(client, [{"customer_id": "c1", "amount": 5}])
        assert ok.status_code == 201
        assert "warnings" not in ok.json()
        untyped = await client.post(f"{V1}/jobs", json={"type": "other", "args": [1]})
        assert untyped.status_code == 201  # no schema, no check
        batch = await client.post(
            f"{V1}/jobs/batch",
            json={
                "jobs": [
                    {"type": "invoice.generate", "args": [{"customer_id": "c", "amount": 1}]},
                    {"type": "invoice.generate", "args": [{"customer_id": "c"}]},
                ]
            },
        )
        assert error_of(batch, 422)["details"]["index"] == 1  # and neither job was stored


async def test_warn_mode_stores_the_job_and_says_why() -> None:
    async with serve() as (_, client):  # warn is the default, as the spec recommends
        await _register(client, job_type="invoice.generate", version="1.0.0", schema=INVOICE)
        stored = await _invoice(client, [{"customer_id": "c1"}])
        assert stored.status_code == 201
        assert stored.json()["warnings"] == [
            "Schema validation warning: args[0]: 'amount' is a required property"
        ]


async def test_off_mode_only_stores_schemas() -> None:
    async with serve(schema_validation="off") as (_, client):
        await _register(client, job_type="invoice.generate", version="1.0.0", schema=INVOICE)
        stored = await _invoice(client, ["anything"])
        assert stored.status_code == 201
        assert "warnings" not in stored.json()


async def test_a_job_naming_its_schema_uri_is_checked_against_it() -> None:
    async with serve(schema_validation="strict") as (_, client):
        await _register(
            client,
            uri="urn:x:strings",
            type="t",
            version="1.0.0",
            schema={"type": "array", "items": {"type": "string"}},
        )
        await _register(
            client,
            uri="urn:x:numbers",
            type="t",
            version="2.0.0",
            schema={"type": "array", "items": {"type": "number"}},
        )
        named = await client.post(
            f"{V1}/jobs", json={"type": "t", "args": ["a"], "schema": "urn:x:strings"}
        )
        assert named.status_code == 201, named.text
        latest = await client.post(f"{V1}/jobs", json={"type": "t", "args": ["a"]})
        error_of(latest, 422)  # checked against 2.0.0, the latest


# -- hostile schemas (each failed before ojs_core.json_schema) ------------------------------


async def test_a_deleted_and_reregistered_schema_is_the_one_checked() -> None:
    async with serve(schema_validation="strict") as (_, client):
        ints = {"type": "array", "prefixItems": [{"type": "integer"}]}
        strings = {"type": "array", "prefixItems": [{"type": "string"}]}
        await _register(client, job_type="t", version="1.0.0", schema=ints)
        error_of(await client.post(f"{V1}/jobs", json={"type": "t", "args": ["x"]}), 422)
        assert (await client.delete(f"{V1}/schemas/t/1.0.0")).status_code == 200
        assert (
            await _register(client, job_type="t", version="1.0.0", schema=strings)
        ).status_code == 201
        assert (
            await client.post(f"{V1}/jobs", json={"type": "t", "args": ["x"]})
        ).status_code == 201


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"$ref": "http://169.254.169.254/latest/meta-data"}, "points outside"),
        ({"$ref": "#/$defs/missing"}, "cannot be evaluated"),
        ({"$ref": "#"}, "recurse"),
        ({"type": "string", "pattern": "(a)\\1"}, "not supported (RE2)"),
    ],
)
async def test_schemas_that_fetch_loop_or_backtrack_are_refused(
    schema: dict[str, Any], reason: str
) -> None:
    async with serve() as (_, client):
        err = error_of(await _register(client, job_type="t", version="1.0.0", schema=schema), 400)
        assert reason in err["message"], err


async def test_a_deeply_nested_schema_is_a_400_not_a_500() -> None:
    nested: dict[str, Any] = {"type": "array"}
    for _ in range(150):
        nested = {"allOf": [nested]}
    async with serve() as (_, client):
        err = error_of(await _register(client, job_type="t", version="1.0.0", schema=nested), 400)
        assert "deeper" in err["message"]


async def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    # ^(a+)+$ on "aaaa...!" takes exponential time with Python's re; RE2 answers at once.
    schema = {"type": "array", "items": {"type": "string", "pattern": "^(a+)+$"}}
    async with serve(schema_validation="strict") as (_, client):
        assert (
            await _register(client, job_type="t", version="1.0.0", schema=schema)
        ).status_code == 201
        refused = await client.post(f"{V1}/jobs", json={"type": "t", "args": ["a" * 5000 + "!"]})
        assert error_of(refused, 422)["details"]["validation_errors"][0]["path"] == "args[0]"


async def test_an_oversized_version_is_a_400() -> None:
    async with serve() as (_, client):
        body = {"job_type": "t", "version": "1.0." + "9" * 5000, "schema": {}}
        err = error_of(await client.post(f"{V1}/schemas", json=body), 400)
        assert err["details"]["validation_errors"][0]["path"] == "version"


async def test_a_job_naming_an_unregistered_version_is_not_checked_against_another() -> None:
    async with serve(schema_validation="strict") as (_, client):
        await _register(
            client, job_type="t", version="2.0.0", schema={"type": "array", "maxItems": 0}
        )
        old = await client.post(
            f"{V1}/jobs", json={"type": "t", "args": [1], "meta": {"version": "1.0.0"}}
        )
        assert old.status_code == 201, old.text
