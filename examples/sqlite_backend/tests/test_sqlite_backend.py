"""What the contract kit cannot see: durability across reopen, query plans, URLs, the plugin."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ojs_core.clock import ManualClock
from ojs_core.plugins import BackendOptions, installed_schemes, load_backend
from ojs_core.service import JobService
from ojs_core.states import JobState
from ojs_sqlite import SqliteBackend
from ojs_sqlite.backend import DUE_SQL, READY_SQL, SCHEMA
from ojs_sqlite.plugin import create_backend, parse_url

S = JobState


async def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "durable.db")
    clock = ManualClock()
    first = SqliteBackend(path)
    await first.open()
    svc = JobService(first, clock=clock)
    jobs = [
        (await svc.enqueue({"type": "d.job", "args": [i], "options": {"priority": i % 2}})).job
        for i in range(6)
    ]
    await svc.set_paused("held", True)
    await svc.register_cron(
        {"name": "nightly", "expression": "0 3 * * *", "job_template": {"type": "d.cron"}}
    )
    wf = await svc.create_workflow({"type": "chain", "steps": [{"type": "d.a"}, {"type": "d.b"}]})
    claimed = (await svc.fetch(["default"]))[0]
    await first.close()

    second = SqliteBackend(path)
    await second.open()
    try:
        svc = JobService(second, clock=clock)
        assert (await svc.get(claimed.id)) == claimed
        assert (await svc.queue_stats("held")).paused
        assert [c.name for c in await svc.crons()] == ["nightly"]
        assert (await svc.get_workflow(wf["id"]))["state"] == "running"
        later = (await svc.enqueue({"type": "d.job", "args": ["later"]})).job
        order = [j.id for j in await svc.fetch(["default"], count=10)]
        odd = [j.id for j in jobs if j.priority == 1 and j.id != claimed.id]
        even = [j.id for j in jobs if j.priority == 0]
        # Priority, then FIFO - and the FIFO counter carried on where it stopped.
        assert order == [*odd, *even, wf["steps"][0]["job_id"], later.id]
    finally:
        await second.close()


def _plan(sql: str, args: tuple[object, ...]) -> str:
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", args).fetchall()
    return " | ".join(r[-1] for r in rows)


def test_claim_walks_the_ready_index() -> None:
    plan = _plan(READY_SQL, ("q", 0, 0, 10))
    assert "USING INDEX jobs_ready" in plan
    assert "SCAN" not in plan
    assert "TEMP B-TREE" not in plan  # ordered by the index, no sort


def test_timers_read_the_due_index() -> None:
    plan = _plan(DUE_SQL, (0, 10))
    assert "USING INDEX jobs_due" in plan
    assert "SCAN" not in plan
    assert "TEMP B-TREE" not in plan


def test_dead_letter_listing_reads_its_index() -> None:
    sql = "SELECT body FROM jobs WHERE dead_seq IS NOT NULL ORDER BY dead_seq DESC LIMIT ? OFFSET ?"
    plan = _plan(sql, (10, 0))
    assert "jobs_dead" in plan
    assert "TEMP B-TREE" not in plan


@pytest.mark.parametrize(
    ("url", "path", "params"),
    [
        ("sqlite:///var/lib/ojs.db", "/var/lib/ojs.db", {}),
        ("sqlite://relative.db", "relative.db", {}),
        ("sqlite://:memory:", ":memory:", {}),
        ("sqlite", ":memory:", {}),
        ("sqlite:///x.db?synchronous=normal", "/x.db", {"synchronous": "normal"}),
    ],
)
def test_parse_url(url: str, path: str, params: dict[str, str]) -> None:
    assert parse_url(url) == (path, params)


def test_registered_as_the_sqlite_scheme(tmp_path: Path) -> None:
    assert "sqlite" in installed_schemes()
    backend = load_backend(f"sqlite://{tmp_path}/p.db?synchronous=normal")
    assert isinstance(backend, SqliteBackend)
    assert backend.path == f"{tmp_path}/p.db"
    assert backend.synchronous == "NORMAL"
    with pytest.raises(ValueError, match="synchronous"):
        create_backend("sqlite:///x.db?synchronous=sometimes", BackendOptions())


async def test_memory_database_works_and_closing_is_idempotent() -> None:
    backend = load_backend("sqlite://:memory:")
    await backend.open()
    svc = JobService(backend)
    job = (await svc.enqueue({"type": "m.job", "args": []})).job
    assert (await svc.fetch(["default"]))[0].id == job.id
    await backend.close()
    await backend.close()
    health = await backend.health()
    assert not health.ok
