"""The browser tests' fixtures: Debian's headless Chromium, driven by Selenium through Debian's chromedriver, and a
local runtime serving the operations API and dashboard on a free port with static tokens.

No browser or driver is ever downloaded: Selenium is pointed at the system's binaries and Selenium Manager is kept
offline. Where they are not installed the tests skip and say how to install them (``.ci/run`` does, as root).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.local.runtime import LocalConfig, LocalRuntime
from shared.operations.scopes import ALL_SCOPES, Scope
from tests.support import registry as test_registry

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING = "Debian's chromium and chromium-driver are not installed: apt-get install chromium chromium-driver"

ADMIN_TOKEN = "admin-token-for-the-browser-test"
READER_TOKEN = "read-only-token-for-the-browser-test"
TOKENS = {ADMIN_TOKEN: frozenset(ALL_SCOPES), READER_TOKEN: frozenset({Scope.READ})}

# The page's size on a laptop: what the documentation screenshot shows.
WINDOW = (1366, 900)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    if not all(os.access(path, os.X_OK) for path in (CHROMIUM, CHROMEDRIVER)):
        pytest.skip(MISSING)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager would otherwise look for (and fetch) a browser and driver of its own.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--lang=en-US", "--force-device-scale-factor=1", "--hide-scrollbars",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.set_window_size(*WINDOW)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dashboard_factory(db_url: str, stage: str, aws_endpoint: str) -> Iterator[Callable[..., LocalRuntime]]:
    """Start a LocalRuntime with the API on a free port and the static tokens; stopped (environment restored) after.
    Its ``api.url`` is the dashboard's address."""
    started: list[LocalRuntime] = []
    saved = dict(os.environ)

    def start(handlers: dict | None = None, **config) -> LocalRuntime:
        runtime = LocalRuntime(
            test_registry,
            LocalConfig(**{
                "stage": stage, "database_url": db_url, "scheduler": False, "handlers": handlers or {},
                "api_port": 0, "api_tokens": TOKENS, **config,
            }),  # fmt: skip
            out=lambda _line: None,
        )
        started.append(runtime)
        runtime.start()
        return runtime

    yield start
    for runtime in started:
        runtime.stop()
    os.environ.clear()
    os.environ.update(saved)

