"""The optional record capabilities: :class:`~ojs_core.schema_registry.SchemaStore` (the schema
registry's records) and :class:`~ojs_core.backend.WorkflowListing` (workflows newest first).
A backend without one is skipped, not failed."""

from __future__ import annotations

import pytest

from ...backend import WorkflowListing
from ...errors import ConflictError, NotFoundError
from ...schema_registry import ArgsSchemaError, SchemaStore
from ...service import JobService
from ...states import JobState
from ..helpers import push
from ._base import KitTest

__all__ = ["TestSchemaStore", "TestWorkflowListing"]

_OBJECT = {
    "type": "array",
    "prefixItems": [
        {"type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}}
    ],
}


class TestSchemaStore(KitTest):
    """Schemas stored by URI, once; listed; deleted; and applied at enqueue."""

    async def test_put_list_delete(self, service: JobService) -> None:
        """A URI is taken once; a deleted schema's URI can be registered again."""
        if not isinstance(service.backend, SchemaStore):
            pytest.skip("the backend has no schema registry")
        first = await service.schemas.register(
            {"job_type": "mail.send", "version": "1.0.0", "schema": _OBJECT}
        )
        assert first.uri == "urn:ojs:schema:mail.send:1.0.0"
        sdk = await service.schemas.register(
            {
                "uri": "https://schemas.example/mail/2",
                "type": "mail.send",
                "version": "2.0.0",
                "schema": {"type": "array"},
            }
        )
        stored = {r.uri: r for r in await service.backend.list_schemas()}
        assert stored == {first.uri: first, sdk.uri: sdk}
        with pytest.raises(ConflictError):
            await service.schemas.register(
                {"job_type": "mail.send", "version": "1.0.0", "schema": {}}
            )
        assert await service.backend.put_schema(first) is False
        assert (await service.schemas.find("mail.send")).version == "2.0.0"
        assert [r.version for r in await service.schemas.versions("mail.send")] == [
            "2.0.0",
            "1.0.0",
        ]
        await service.schemas.delete("mail.send", "2.0.0")
        assert await service.backend.delete_schema(sdk.uri) is False
        with pytest.raises(NotFoundError):
            await service.schemas.find(sdk.uri)
        assert await service.backend.put_schema(sdk) is True

    async def test_strict_mode_refuses_args_that_do_not_match(self, service: JobService) -> None:
        """Strict: 422 naming the path, nothing stored; a matching job is stored."""
        if not isinstance(service.backend, SchemaStore):
            pytest.skip("the backend has no schema registry")
        service.schemas.mode = "strict"
        await service.schemas.register(
            {"job_type": "mail.send", "version": "1.0.0", "schema": _OBJECT}
        )
        with pytest.raises(ArgsSchemaError) as refused:
            await push(service, "mail.send", [{"to": 7}], queue="schemas")
        assert refused.value.details["validation_errors"][0]["path"] == "args[0].to"
        assert (await service.queue_stats("schemas")).counts.get(JobState.AVAILABLE, 0) == 0
        await push(service, "mail.send", [{"to": "ada@example.com"}], queue="schemas")


class TestWorkflowListing(KitTest):
    """Workflows newest first, paginated, with the total."""

    async def test_newest_first(self, service: JobService) -> None:
        """Three workflows page out newest first."""
        backend = service.backend
        if not isinstance(backend, WorkflowListing):
            pytest.skip("the backend cannot list workflows")
        made = []
        for name in ("a", "b", "c"):
            view = await service.create_workflow(
                {"type": "chain", "name": name, "steps": [{"type": "s", "args": []}]}
            )
            made.append(view["id"])
        first, total = await backend.list_workflows(2, 0)
        assert ([w.id for w in first], total) == ([made[2], made[1]], 3)
        rest, _ = await backend.list_workflows(2, 2)
        assert [w.id for w in rest] == [made[0]]
