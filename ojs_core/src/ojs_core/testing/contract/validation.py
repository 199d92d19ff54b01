"""Input the service refuses before anything is stored, and huge values it must survive.

Each of these once crashed a server (an overflow deep in a transition) instead of answering
with a validation error: the request must be refused whole, leaving the store empty.
"""

from __future__ import annotations

from typing import Any

import pytest

from ...errors import ValidationError
from ...service import JobService
from ..helpers import expect_stats, fetch_one, push
from ..timecontrol import TimeControl
from ._base import KitTest

__all__ = ["TestValidation"]


class TestValidation(KitTest):
    """Out-of-range and malformed input is a ValidationError and writes nothing."""

    @pytest.mark.parametrize(
        "options",
        [
            pytest.param({"delay_ms": 10**30}, id="delay_ms-overflow"),
            pytest.param({"scheduled_at": "+P99999999999D"}, id="relative-time-overflow"),
            pytest.param({"retry": {"initial_interval": 1e308}}, id="interval-seconds-overflow"),
            pytest.param({"retry": {"initial_interval": -1}}, id="negative-interval-seconds"),
            pytest.param({"unique": {"on_conflict": ["reject"]}}, id="on_conflict-not-a-string"),
        ],
    )
    async def test_out_of_range_options(
        self, service: JobService, ojs_time: TimeControl, options: dict[str, Any]
    ) -> None:
        """Values beyond what a timestamp or duration can hold are refused up front."""
        with pytest.raises(ValidationError):
            await service.enqueue({"type": "x.y", "args": [], "options": options})
        assert await service.fetch(["default"]) == []
        await expect_stats(ojs_time, service, "default")

    async def test_unique_period_beyond_the_duration_bound(self, service: JobService) -> None:
        """Durations are bounded (100 years): a unique period beyond is refused by path."""
        with pytest.raises(ValidationError) as err:
            await push(service, unique={"keys": ["type"], "period": "P99999999999D"})
        assert err.value.path == "options.unique.period"

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({"steps": [{"id": "a", "type": "x.a", "depends_on": [["a"]]}]}, id="dep"),
            pytest.param({"steps": [{"id": "a", "type": "x.a", "options": 5}]}, id="dag-options"),
            pytest.param({"type": "chain", "steps": [{"type": "x.a", "options": 5}]}, id="options"),
        ],
    )
    async def test_malformed_workflows(
        self, service: JobService, ojs_time: TimeControl, body: dict[str, Any]
    ) -> None:
        """A malformed workflow writes neither a record nor any of its jobs."""
        with pytest.raises(ValidationError):
            await service.create_workflow(body)
        assert await service.fetch(["default"]) == []
        await expect_stats(ojs_time, service, "default")

    @pytest.mark.parametrize(
        "options",
        [
            pytest.param({"visibility_timeout_ms": 10**15}, id="visibility"),
            pytest.param({"timeout_ms": 10**15}, id="timeout"),
        ],
    )
    async def test_huge_job_timeouts_are_refused_or_work(
        self, service: JobService, options: dict[str, Any]
    ) -> None:
        """A timeout of 30,000 years is either refused at enqueue or claimable like any."""
        try:
            job = await push(service, **options)
        except ValidationError:
            return
        assert (await fetch_one(service)).id == job.id
