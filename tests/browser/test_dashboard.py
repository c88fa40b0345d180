"""The dashboard in a real browser (Debian's headless Chromium) against a real local system: PostgreSQL, moto's SQS,
the relay and pollers running ``test.work``, the operations API on a free port with static tokens.

An operator sees a dead run, retries it from its detail panel and sees it succeed; cancels a pending one; a read-only
token sees the same data, the charts included, and not one action button. The admin test also writes the
documentation screenshot: into the test's temporary folder on every run, and over ``docs/dashboard.png`` with
``CONVEYOR_UPDATE_SCREENSHOT=1`` (so a test run leaves the working tree as it found it).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psycopg
import pytest

pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[dev]'")

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from shared.outbox import enqueue
from shared.runtime import JobContext, PermanentJobError, job_handler
from tests.browser.conftest import ADMIN_TOKEN, READER_TOKEN
from tests.support import WORK, Work

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
# Every control that acts on the system, by its data-testid: none may exist for a read-only caller.
ACTION_TESTIDS = (
    "retry-button", "cancel-button", "cancel-reason", "pause-button", "resume-button", "redrive-button",
    "job-redrive-button", "trigger-form", "trigger-button",
)  # fmt: skip
ACTION_LABELS = {"Retry", "Cancel", "Pause", "Resume", "Redrive", "Redrive job", "Trigger"}


class Switchable:
    """``test.work``'s handler for these tests: it fails for good while ``broken`` is set (the bug an operator fixes
    before retrying), and always for a payload marked ``permanent``."""

    def __init__(self) -> None:
        self.broken = threading.Event()
        self.broken.set()
        self.handler = job_handler(WORK, self.work)

    def work(self, payload: Work, ctx: JobContext) -> None:
        if self.broken.is_set():
            raise PermanentJobError("the handler is broken until the fix is deployed")
        if payload.permanent:
            raise PermanentJobError(f"job {payload.n} can never work")


def add(conn: psycopg.Connection, n: int, **options) -> str:
    """Enqueue a ``test.work`` job (committed: the connection is in autocommit) and return its id as the API spells it."""
    return str(enqueue(conn, WORK, Work(n=n, permanent=options.pop("permanent", False)), **options))


def wait_status(conn: psycopg.Connection, job_id: str, status: str, timeout: float = 30) -> None:
    """Wait until the ledger says so (the system, not the page: the page is then told to refresh)."""
    deadline = time.monotonic() + timeout
    current = None
    while time.monotonic() < deadline:
        row = conn.execute("SELECT status FROM conveyor.runs WHERE id = %s", (job_id,)).fetchone()
        current = row[0] if row else None
        if current == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} is {current}, not {status}, after {timeout} s")


class Dashboard:
    """The page as an operator uses it. The page re-renders on every refresh, so every look-up is retried when an
    element it found was replaced meanwhile."""

    def __init__(self, driver, url: str) -> None:
        self.driver = driver
        self.url = url

    def wait(self, condition, timeout: float = 20, message: str = ""):
        return WebDriverWait(
            self.driver, timeout, poll_frequency=0.1,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(lambda _d: condition(), message)  # fmt: skip

    def find(self, testid: str, **data: str):
        selector = f'[data-testid="{testid}"]' + "".join(f'[data-{k}="{v}"]' for k, v in data.items())
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def open(self, token: str) -> None:
        self.driver.get(f"{self.url}#token={token}")
        self.wait(lambda: self.find("queue-row", queue="work"), message="the queue table never showed the work queue")

    def refresh(self) -> None:
        """What an operator does instead of waiting for the 5 s auto-refresh: press Filter."""
        self.driver.find_element(By.CSS_SELECTOR, '#filters button[type="submit"]').click()

    def read(self, script: str, *args):
        """Read the page in one script: nothing found in it can be replaced by a refresh before it is read."""
        return self.driver.execute_script(script, *args)

    def row_status(self, job_id: str) -> str | None:
        return self.read(
            "const row = document.querySelector(`[data-testid=run-row][data-id='${arguments[0]}']`);"
            "return row ? row.dataset.status : null;", job_id,
        )  # fmt: skip

    def text(self, testid: str) -> str:
        return self.read(f"const e = document.querySelector('[data-testid={testid}]'); return e ? e.innerText : '';")

    def wait_row(self, job_id: str, *statuses: str) -> str:
        self.refresh()
        return self.wait(
            lambda: self.row_status(job_id) in statuses and self.row_status(job_id),
            message=f"run {job_id} never showed as {' or '.join(statuses)}",
        )

    def open_run(self, job_id: str) -> None:
        def click() -> bool:
            self.find("run-row", id=job_id)[0].click()
            detail = self.driver.find_element(By.CSS_SELECTOR, '[data-testid="run-detail"]')
            return detail.is_displayed() and detail.get_attribute("data-id") == job_id

        self.wait(click, message=f"the detail panel of {job_id} never opened")

    def detail_status(self) -> str | None:
        return self.read("const b = document.querySelector('[data-testid=run-status]'); return b ? b.dataset.status : null;")

    def wait_detail(self, *statuses: str, timeout: float = 20) -> str:
        return self.wait(
            lambda: self.detail_status() in statuses and self.detail_status(), timeout,
            message=f"the detail panel never showed {' or '.join(statuses)} (it shows {self.detail_status()})",
        )  # fmt: skip

    def click(self, testid: str) -> None:
        self.wait(lambda: self.find(testid)[0].click() or True, message=f"no {testid} to click")

    def script_errors(self) -> list[str]:
        """Errors the page's own scripts threw (the console's network lines, a 409 or a 503 health, are answers)."""
        return [e["message"] for e in self.driver.get_log("browser") if e.get("source") == "javascript"]

    def banner(self) -> str:
        banner = self.driver.find_element(By.CSS_SELECTOR, '[data-testid="error-banner"]')
        return banner.text if banner.is_displayed() else ""


@pytest.fixture
def switchable() -> Switchable:
    return Switchable()


@pytest.fixture
def dashboard(browser, dashboard_factory, switchable) -> Dashboard:
    runtime = dashboard_factory(handlers={"test.work": switchable.handler})
    return Dashboard(browser, runtime.api.url)


def test_a_dead_run_retried_from_its_detail_panel_succeeds(dashboard, conn, switchable, tmp_path):
    dead = add(conn, 1)
    wait_status(conn, dead, "dead")
    dashboard.open(ADMIN_TOKEN)
    assert dashboard.wait_row(dead, "failed", "dead") == "dead"

    # The fix is deployed; a few more runs, so the page (and the screenshot) shows runs in different states.
    switchable.broken.clear()
    done = [add(conn, n) for n in (2, 3)]
    hopeless = add(conn, 4, permanent=True)
    later = add(conn, 5, delay=3600)
    for job_id in done:
        wait_status(conn, job_id, "succeeded")
    wait_status(conn, hopeless, "dead")

    dashboard.open_run(dead)
    assert dashboard.wait_detail("dead") == "dead"
    assert not dashboard.find("cancel-button")   # a finished run cannot be cancelled: no button for it
    dashboard.click("retry-button")

    assert dashboard.wait_detail("succeeded", timeout=30) == "succeeded"
    assert dashboard.wait_row(dead, "succeeded") == "succeeded"
    assert dashboard.banner() == ""
    # The detail keeps the lineage: the failed attempt and who retried it.
    assert "the handler is broken" in dashboard.text("attempts")
    assert "retry" in dashboard.text("audit")
    assert dashboard.row_status(later) == "pending"

    # The documentation screenshot: runs in four states, the work queue's jobs shown, the retried run's detail open.
    dashboard.click("queue-expand")
    dashboard.wait(lambda: dashboard.find("job-row", job="test.work"), message="the job rows never opened")
    dashboard.driver.execute_script("window.scrollTo(0, 0)")
    target = SCREENSHOT if os.environ.get("CONVEYOR_UPDATE_SCREENSHOT") == "1" else tmp_path / "dashboard.png"
    assert dashboard.driver.save_screenshot(str(target))
    assert target.stat().st_size > 10_000
    assert dashboard.script_errors() == []


def test_a_pending_run_is_cancelled_with_the_cancel_button(dashboard, conn):
    pending = add(conn, 1, delay=3600)
    dashboard.open(ADMIN_TOKEN)
    assert dashboard.wait_row(pending, "pending") == "pending"

    dashboard.open_run(pending)
    assert dashboard.wait_detail("pending") == "pending"
    assert not dashboard.find("retry-button")   # nothing to retry in a run that has not run
    dashboard.click("cancel-button")

    assert dashboard.wait_detail("cancelled") == "cancelled"
    assert dashboard.wait_row(pending, "cancelled") == "cancelled"
    wait_status(conn, pending, "cancelled")
    assert dashboard.banner() == ""
    assert dashboard.script_errors() == []


def test_a_read_only_token_sees_everything_but_not_one_action_button(dashboard, conn):
    dead = add(conn, 1)
    pending = add(conn, 2, delay=3600)
    wait_status(conn, dead, "dead")

    dashboard.open(READER_TOKEN)
    dashboard.wait(lambda: dashboard.text("scope") == "jobs:read", message="the header never showed the scopes")
    assert len(dashboard.find("scope")) == 1
    assert dashboard.wait_row(dead, "dead") == "dead"
    assert dashboard.row_status(pending) == "pending"
    dashboard.click("queue-expand")
    dashboard.wait(lambda: dashboard.find("job-row", job="test.work"), message="the job rows never opened")

    # The charts render: uPlot draws into a canvas inside each chart's container.
    for window in ("1h", "24h"):
        dashboard.wait(
            lambda w=window: dashboard.driver.find_elements(By.CSS_SELECTOR, f'[data-testid="chart-{w}"] canvas'),
            message=f"the {window} chart never rendered",
        )

    # The detail of a dead run (an admin retries it from here) and of a pending one (an admin cancels it).
    for job_id, status in ((dead, "dead"), (pending, "pending")):
        dashboard.open_run(job_id)
        assert dashboard.wait_detail(status) == status
        assert dashboard.text("run-id") == job_id
        for testid in ACTION_TESTIDS:
            assert not dashboard.find(testid), f"a read-only caller sees {testid}"
        labels = set(dashboard.read("return [...document.querySelectorAll('button')].map(b => b.textContent.trim());"))
        assert not labels & ACTION_LABELS, f"a read-only caller sees buttons {labels & ACTION_LABELS}"
    assert dashboard.banner() == ""
    assert dashboard.script_errors() == []
