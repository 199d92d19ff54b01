"""The contract kit catches the compare-and-swap traps of a mutable ``Job``.

``update_job`` signals "no change" by identity (``after is before``) while ``Job`` is a mutable
attrs class. Two backends below each fall into one trap; the kit tests written for it must fail
on them (and pass on the reference memory backend, which the whole kit runs against anyway).
"""

from __future__ import annotations

import inspect
import random

import attrs
import pytest

from ojs_core.backend import Backend, JobFn
from ojs_core.clock import ManualClock
from ojs_core.errors import NotFoundError
from ojs_core.model import Job
from ojs_core.service import JobService
from ojs_core.testing import TimeControl
from ojs_core.testing.contract import protocol
from ojs_memory import MemoryBackend


class InPlaceBackend(MemoryBackend):
    """Applies an update by copying the result into the stored job: one object comes back as
    both ``before`` and ``after``, and no index is moved."""

    async def update_job(self, job_id: str, fn: JobFn) -> tuple[Job, Job]:
        stored = self._jobs.get(job_id)
        if stored is None:
            raise NotFoundError("job", job_id)
        mine = attrs.evolve(stored)
        new = fn(mine)
        if new is not mine:
            for field in attrs.fields(Job):
                setattr(stored, field.name, getattr(new, field.name))
        return stored, stored


class SharedObjectBackend(MemoryBackend):
    """Hands ``fn`` the stored job itself: what ``fn`` sets on it changes the store unseen."""

    async def update_job(self, job_id: str, fn: JobFn) -> tuple[Job, Job]:
        stored = self._jobs.get(job_id)
        if stored is None:
            raise NotFoundError("job", job_id)
        new = fn(stored)
        if new is not stored:
            self._store(stored, new)
        return stored, new


TRAPS = {
    "test_update_leaves_before_as_read": InPlaceBackend,
    "test_function_gets_a_job_the_backend_does_not_keep": SharedObjectBackend,
}


async def run_kit_test(name: str, backend: Backend) -> None:
    """Run one ``TestCompareAndSwap`` test on ``backend`` (manual time), as pytest would."""
    await backend.open()
    try:
        service = JobService(backend, clock=ManualClock(), rng=random.Random(7))
        fixtures = {
            "service": service,
            "backend": backend,
            "ojs_time": TimeControl(service, "manual"),
        }
        method = getattr(protocol.TestCompareAndSwap(), name)
        await method(**{p: fixtures[p] for p in inspect.signature(method).parameters})
    finally:
        await backend.close()


@pytest.mark.parametrize("name", sorted(TRAPS))
async def test_kit_fails_on_the_trap(name: str) -> None:
    with pytest.raises(AssertionError):
        await run_kit_test(name, TRAPS[name]())


@pytest.mark.parametrize("name", sorted(TRAPS))
async def test_kit_passes_on_the_reference_backend(name: str) -> None:
    await run_kit_test(name, MemoryBackend())
