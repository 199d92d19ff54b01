"""The dashboard in a real browser: headless Chromium (the system's) driven by Playwright,
against a real ``ojs-server`` process on a real nats-server, with API keys on.

One queue is seeded with 3 available, 1 scheduled, 1 completed and 1 dead-lettered job (plus
a cron entry, a workflow and a worker); the tests sign in through the form, check that each
view renders the seeded data, retry the dead job from its page and let a worker complete it,
and pause the queue from its page and see fetches come back empty. Every view is
screenshotted into the artifacts directory (conftest.artifacts).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import ADMIN_KEY, PRODUCER_KEY, WORKER_KEY, ServerProcess, wait_healthy
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from ojs_nats.embedded import free_port

pytestmark = pytest.mark.browser

QUEUE = "emails"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


class Seed:
    """What the seeding created, by role."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.url
        self.available: list[str] = []
        self.scheduled = self.completed = self.dead = self.workflow = ""

    def call(self, method: str, path: str, key: str, body: Any = None) -> Any:
        response = httpx.request(
            method,
            f"{self.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=30,
        )
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json()

    def enqueue(self, type_: str, args: list[Any], **options: Any) -> str:
        body = {"type": type_, "args": args, "options": {"queue": QUEUE, **options}}
        job: dict[str, Any] = self.call("POST", "/ojs/v1/jobs", PRODUCER_KEY, body)["job"]
        return str(job["id"])

    def fetch(self, worker_id: str = "seed-worker") -> list[dict[str, Any]]:
        body = {"queues": [QUEUE], "worker_id": worker_id, "count": 10}
        jobs: list[dict[str, Any]] = self.call("POST", "/ojs/v1/workers/fetch", WORKER_KEY, body)[
            "jobs"
        ]
        return jobs

    def ack(self, job_id: str, result: Any) -> None:
        body = {"job_id": job_id, "result": result, "worker_id": "seed-worker"}
        self.call("POST", "/ojs/v1/workers/ack", WORKER_KEY, body)

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.call("GET", f"/ojs/v1/jobs/{job_id}", PRODUCER_KEY)["job"]
        return job


@pytest.fixture(scope="module")
def seed(ojs_server: ServerProcess) -> Seed:
    s = Seed(ojs_server)
    # Fetches take the oldest job first: the ones to finish are enqueued, and run, first.
    s.completed = s.enqueue("report.build", [{"month": "2025-01"}])
    [got] = s.fetch()
    assert got["id"] == s.completed
    s.ack(s.completed, {"rows": 42, "file": "report-2025-01.csv"})
    s.dead = s.enqueue("payment.charge", [{"amount": 500}], retry={"max_attempts": 1})
    [got] = s.fetch()
    assert got["id"] == s.dead
    error = {
        "type": "CardDeclined",
        "message": "card declined by the issuer",
        "backtrace": ["billing/charge.py:12 in charge", "billing/gateway.py:88 in post"],
    }
    s.call(
        "POST",
        "/ojs/v1/workers/nack",
        WORKER_KEY,
        {"job_id": s.dead, "error": error, "worker_id": "seed-worker"},
    )
    assert s.job(s.dead)["state"] == "discarded"
    s.available = [
        s.enqueue("email.send", [{"to": f"user{n}@example.com", "subject": HOSTILE}])
        for n in range(3)
    ]
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    s.scheduled = s.enqueue("email.digest", [], scheduled_at=later)
    s.call(
        "POST",
        "/ojs/v1/workers/heartbeat",
        WORKER_KEY,
        {"worker_id": "seed-worker", "hostname": "worker-host-1"},
    )
    s.call(
        "POST",
        "/ojs/v1/cron",
        PRODUCER_KEY,
        {
            "name": "nightly-digest",
            "expression": "0 3 * * *",
            "job_template": {"type": "email.digest", "args": [], "options": {"queue": "digests"}},
        },
    )
    workflow = s.call(
        "POST",
        "/ojs/v1/workflows",
        PRODUCER_KEY,
        {
            "type": "chain",
            "name": "onboarding",
            "steps": [
                {"type": "user.create", "args": [], "options": {"queue": "flows"}},
                {"type": "user.welcome", "args": [], "options": {"queue": "flows"}},
            ],
        },
    )["workflow"]
    s.workflow = workflow["id"]
    return s


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def watch(page: Page, problems: list[str]) -> None:
    """Collect what must never happen: a dialog (an executed payload), a page error, a CSP
    violation or any other console error."""
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )


@pytest.fixture(scope="module")
def signed_in(browser: Browser, seed: Seed, artifacts: Path) -> Iterator[tuple[Page, list[str]]]:
    """A page signed in through the form, shared by the view tests (one session)."""
    context: BrowserContext = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    watch(page, problems)
    page.goto(f"{seed.url}/ojs/admin")
    expect(page).to_have_url(re.compile(r"/ojs/admin/login\?next="))
    page.screenshot(path=artifacts / "login.png")
    page.fill("#key", ADMIN_KEY)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{seed.url}/ojs/admin")
    try:
        yield page, problems
    finally:
        context.close()


def show(page: Page, path: str, url: str) -> None:
    page.goto(f"{url}/ojs/admin{path}")
    expect(page.locator("main[data-loaded=true]")).to_be_attached()


def test_the_login_form_refuses_wrong_and_non_admin_keys(browser: Browser, seed: Seed) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{seed.url}/ojs/admin/login")
        for key, message in (
            ("not-a-key", "That key is not valid."),
            (PRODUCER_KEY, "sign in with an admin key"),
        ):
            page.fill("#key", key)
            page.click("button[type=submit]")
            expect(page.locator("p.error")).to_contain_text(message)
        assert context.cookies() == []
        # Without a session the API refuses the page's own fetches too.
        answer = page.request.get(f"{seed.url}/ojs/v1/admin/stats")
        assert answer.status == 401
        page.fill("#key", ADMIN_KEY)
        page.click("button[type=submit]")
        expect(page.locator("main[data-loaded=true]")).to_be_attached()
        [cookie] = context.cookies()
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        assert cookie["name"] == "ojs_session"
        # Sign out: the form posts, the cookie goes, the dashboard asks for a key again.
        page.click("form.logout button")
        expect(page).to_have_url(re.compile(r"/ojs/admin/login$"))
        assert context.cookies() == []
    finally:
        context.close()


def test_overview_shows_the_queue_with_its_depth_per_state(
    signed_in: tuple[Page, list[str]], seed: Seed, artifacts: Path
) -> None:
    page, problems = signed_in
    show(page, "", seed.url)
    row = page.locator(f"tr[data-queue={QUEUE}]")
    expect(row).to_contain_text(QUEUE)
    cells = row.locator("td")
    # Queue, State, then the counts in JOB_STATES order (views/common.js).
    expect(cells.nth(1)).to_have_text("active")
    expect(cells.nth(2)).to_have_text("3")  # available
    expect(cells.nth(4)).to_have_text("1")  # scheduled
    expect(cells.nth(7)).to_have_text("1")  # completed
    expect(cells.nth(8)).to_have_text("1")  # discarded (dead letter)
    expect(page.locator(".live")).to_have_text("live")
    page.screenshot(path=artifacts / "overview.png", full_page=True)
    page.click("button[title='Switch colour theme']")
    page.screenshot(path=artifacts / "overview-dark.png", full_page=True)
    page.click("button[title='Switch colour theme']")
    assert problems == []


def test_jobs_view_filters_pages_and_shows_hostile_args_as_text(
    signed_in: tuple[Page, list[str]], seed: Seed, artifacts: Path
) -> None:
    page, problems = signed_in
    listed = seed.call("GET", f"/ojs/v1/admin/jobs?queue={QUEUE}", ADMIN_KEY)
    if listed["pagination"]["total"] == 0:
        # Until the NATS backend indexes jobs by queue and state (ojs_nats list_jobs lists the
        # dead letter only), the admin API answers an empty page there: nothing to render.
        pytest.xfail("the NATS backend does not list jobs by queue yet (admin API: empty page)")
    show(page, f"/jobs?queue={QUEUE}", seed.url)
    expect(page.locator("tr[data-job]")).to_have_count(6)
    page.select_option("select[name=state]", "available")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"state=available"))
    expect(page.locator("tr[data-job]")).to_have_count(3)
    page.screenshot(path=artifacts / "jobs.png", full_page=True)
    # Look a job up by id; its hostile argument is shown as text, never run.
    page.fill("input[name=id]", seed.available[0])
    page.click("form.lookup button[type=submit]")
    expect(page).to_have_url(f"{seed.url}/ojs/admin/jobs/{seed.available[0]}")
    expect(page.locator("pre.json").first).to_contain_text(HOSTILE.replace('"', '\\"'))
    assert page.locator("main img[src=x]").count() == 0
    assert "pwned" not in page.title()
    assert problems == []


def test_job_view_shows_errors_backtrace_and_timeline(
    signed_in: tuple[Page, list[str]], seed: Seed, artifacts: Path
) -> None:
    page, problems = signed_in
    show(page, f"/jobs/{seed.dead}", seed.url)
    expect(page.locator(".error-item")).to_contain_text("card declined by the issuer")
    expect(page.locator("pre.backtrace")).to_contain_text("billing/gateway.py:88 in post")
    expect(page.locator(".timeline li[data-event='job.enqueued']")).to_have_count(1)
    expect(page.locator(".timeline li[data-event='job.started']")).to_have_count(1)
    page.screenshot(path=artifacts / "job.png", full_page=True)
    show(page, f"/jobs/{seed.completed}", seed.url)
    expect(page.locator("section.card", has_text="Result")).to_contain_text("report-2025-01.csv")
    assert problems == []


def test_other_views_render_the_seeded_data(
    signed_in: tuple[Page, list[str]], seed: Seed, artifacts: Path
) -> None:
    page, problems = signed_in
    show(page, "/queues", seed.url)
    expect(page.locator(f"tr[data-queue={QUEUE}]")).to_be_visible()
    page.screenshot(path=artifacts / "queues.png", full_page=True)
    show(page, "/workers", seed.url)
    expect(page.locator("tr[data-worker=seed-worker]")).to_contain_text("running")
    page.screenshot(path=artifacts / "workers.png", full_page=True)
    show(page, "/cron", seed.url)
    row = page.locator("tr[data-cron=nightly-digest]")
    expect(row).to_contain_text("0 3 * * *")
    row.get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("disabled")
    row.get_by_role("button", name="Enable").click()
    expect(row).to_contain_text("enabled")
    page.screenshot(path=artifacts / "cron.png", full_page=True)
    show(page, "/workflows", seed.url)
    expect(page.locator(f"tr[data-workflow='{seed.workflow}']")).to_contain_text("onboarding")
    page.screenshot(path=artifacts / "workflows.png", full_page=True)
    page.click(f"tr[data-workflow='{seed.workflow}'] a")
    expect(page.locator("tr[data-step]")).to_have_count(2)
    expect(page.locator("tr[data-step]").first).to_contain_text("user.create")
    page.screenshot(path=artifacts / "workflow.png", full_page=True)
    show(page, "/settings", seed.url)
    expect(page.locator("main")).to_contain_text("ojs-python")
    page.screenshot(path=artifacts / "settings.png", full_page=True)
    assert problems == []


def test_retrying_a_dead_letter_job_from_the_page_runs_it_to_completion(
    signed_in: tuple[Page, list[str]], seed: Seed, artifacts: Path
) -> None:
    page, problems = signed_in
    show(page, "/dead-letter", seed.url)
    row = page.locator(f"tr[data-job='{seed.dead}']")
    expect(row).to_contain_text("payment.charge")
    expect(row).to_contain_text("card declined by the issuer")
    page.screenshot(path=artifacts / "dead-letter.png", full_page=True)
    row.get_by_role("button", name="Retry").click()
    expect(page.locator(".toast.ok")).to_contain_text("retried")
    expect(page.locator(f"tr[data-job='{seed.dead}']")).to_have_count(0)
    # A worker takes what the queue holds and completes it, the retried job among them.
    deadline = time.monotonic() + 30
    while seed.job(seed.dead)["state"] != "completed":
        assert time.monotonic() < deadline, seed.job(seed.dead)
        for job in seed.fetch():
            seed.ack(job["id"], {"done": True})
        time.sleep(0.1)
    # The job's page shows it completed (live update or refresh), with the worker's result.
    show(page, f"/jobs/{seed.dead}", seed.url)
    expect(page.locator("h1 + .actions .badge, .actions .badge").first).to_have_text("completed")
    expect(page.locator(".timeline li[data-event='job.completed']")).to_have_count(1)
    assert problems == []


def test_pausing_the_queue_from_the_page_stops_fetches(
    signed_in: tuple[Page, list[str]], seed: Seed, artifacts: Path
) -> None:
    page, problems = signed_in
    show(page, "/queues", seed.url)
    row = page.locator(f"tr[data-queue={QUEUE}]")
    row.get_by_role("button", name="Pause").click()
    expect(row.locator(".badge")).to_have_text("paused")
    page.screenshot(path=artifacts / "queues-paused.png", full_page=True)
    waiting = seed.enqueue("email.send", [{"to": "late@example.com"}])
    assert seed.fetch() == []
    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".badge")).to_have_text("active")
    assert [j["id"] for j in seed.fetch()] == [waiting]
    assert problems == []


def test_purging_the_dead_letter_queue_asks_first(
    signed_in: tuple[Page, list[str]], seed: Seed
) -> None:
    page, problems = signed_in
    dead = seed.enqueue("payment.charge", [], retry={"max_attempts": 1})
    [got] = seed.fetch()
    assert got["id"] == dead
    seed.call(
        "POST",
        "/ojs/v1/workers/nack",
        WORKER_KEY,
        {"job_id": dead, "error": {"message": "boom"}, "worker_id": "seed-worker"},
    )
    show(page, "/dead-letter", seed.url)
    expect(page.locator(f"tr[data-job='{dead}']")).to_be_visible()
    page.get_by_role("button", name="Purge").click()
    expect(page.locator(".confirm-question")).to_contain_text("for good")
    page.get_by_role("button", name="Confirm purge").click()
    expect(page.locator(".toast.ok")).to_contain_text("Purged 1")
    expect(page.locator("p.empty")).to_have_text("The dead-letter queue is empty.")
    assert problems == []


def test_under_a_mount_prefix(browser: Browser, artifacts: Path) -> None:
    # ojs-server --path-prefix mounts the app in a host app: every URL the pages build, the
    # redirects and the cookie's path follow the prefix.
    server = ServerProcess(
        ["--backend", "memory", "--path-prefix", "/jobs-api"], free_port(), "/jobs-api"
    )
    context = browser.new_context()
    try:
        wait_healthy(server.url)
        s = Seed(server)
        s.enqueue("email.send", [])
        page = context.new_page()
        problems: list[str] = []
        watch(page, problems)
        page.goto(f"{server.url}/ojs/admin/queues")
        expect(page).to_have_url(re.compile(r"/jobs-api/ojs/admin/login\?next="))
        page.fill("#key", ADMIN_KEY)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{server.url}/ojs/admin/queues")
        [cookie] = context.cookies()
        assert cookie["path"] == "/jobs-api"
        row = page.locator(f"tr[data-queue={QUEUE}]")
        row.get_by_role("button", name="Pause").click()
        expect(row.locator(".badge")).to_have_text("paused")
        expect(page.locator(".live")).to_have_text("live")
        page.click("a[data-path='/jobs']")
        expect(page).to_have_url(f"{server.url}/ojs/admin/jobs")
        expect(page.locator("tr[data-job]")).to_have_count(1)
        page.screenshot(path=artifacts / "mounted-jobs.png", full_page=True)
        assert problems == []
    finally:
        context.close()
        server.stop()
