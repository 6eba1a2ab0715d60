"""Browser tests: the system as ``privpoll up`` starts it, driven by Debian's Chromium.

Playwright drives the Chromium that the machine has (the Makefile's ``chromium`` step
installs Debian's package); it never downloads a browser of its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, sync_playwright

from privpoll.local.embedded import NatsServer, PostgresServer
from tests.integration.conftest import ADMIN, System, postgres

__all__ = ["ADMIN", "postgres"]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE: ViewportSize = {"width": 390, "height": 844}


def chromium_path() -> str:
    """Debian's Chromium; in CI its absence fails the run, elsewhere it skips these tests."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = (
        "Chromium is not installed, so the browser tests cannot run: `make chromium` "
        "installs Debian's package (as root; otherwise run `sudo apt-get install chromium`)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# Module scope: while Playwright's sync API is active its event loop counts as running in
# this thread, so later tests of the session could not call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[System]:
    """One running system for a module's browser tests (each test uses its own poll names)."""
    root = tmp_path_factory.mktemp("e2e")
    nats = NatsServer(root / "nats")
    nats.start()
    running = System(root / "system", nats, postgres)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        nats.stop()


@pytest.fixture
def admin(browser: Browser, site: System) -> Iterator[BrowserContext]:
    """A browser signed in as the poll creator."""
    context = browser.new_context()
    sign_in(context.new_page(), site)
    yield context
    context.close()


def sign_in(page: Page, site: System) -> None:
    page.goto(f"{site.url}/signin")
    page.get_by_label("Admin token").fill(ADMIN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.url}/polls")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
