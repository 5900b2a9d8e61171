"""The home pages in a real browser: Debian's Chromium driven by Playwright, against the shared
app (inbound key on) and emulator. The key is typed once into the page; every screenshot is
kept under tests/artifacts/browser/ (its path printed) for a person to look at.

Waits are Playwright's own, on what the page shows, with generous deadlines; nothing sleeps.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from tests.helpers.e2e import INBOUND_KEY
from tests.helpers.processes import REPO_ROOT, ServiceProcess

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "browser"
# A loaded 2-core machine: pages and runs get this long before a wait fails.
WAIT_MS = 30_000
# The emulator answers each prompt after this long: a run lasts long enough to be watched.
SLOW = "[[emulator:ttft=0.25]]"


expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"No Chromium at {CHROMIUM}: `apt-get install chromium` (make test does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, app: ServiceProcess) -> Iterator[Page]:
    """A fresh tab (its own session storage) whose requests are all recorded."""
    context = browser.new_context(base_url=app.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    urls: list[str] = []
    tab.on("request", lambda request: urls.append(_url(request)))
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not [url for url in urls if INBOUND_KEY in url], "the key went into a URL"
    assert not [url for url in urls if not url.startswith(app.url)], "a request left the service"
    assert not errors, f"script errors: {errors}"


def _url(request: Request) -> str:
    return request.url


Shot = Callable[[Page, str], Path]


@pytest.fixture
def shot(e2e_report: list[str]) -> Shot:
    """Saves a full-page screenshot; its path is listed at the end of the test run."""

    def take(page: Page, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        e2e_report.append(f"screenshot: {path}")
        return path

    return take


def enter_key(page: Page, path: str = "/") -> None:
    page.goto(path)
    expect(page.locator("#key-form")).to_be_visible()
    page.fill("#key-input", INBOUND_KEY)
    page.click("#key-form button")
    expect(page.locator("#key-form")).to_have_count(0)


def start_run(client: httpx.Client, prompts: bytes, **fields: Any) -> str:
    response = client.post(
        "/benchmark?background=true",
        files={"prompt_file": ("prompts.txt", prompts, "text/plain")},
        data={"model": "emulator/small", "max_tokens": "8", **fields},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_for_end(client: httpx.Client, run_id: str) -> None:
    with client.stream("GET", f"/benchmarks/{run_id}/events") as events:
        for line in events.iter_lines():
            if line == "event: summary":
                return
    raise AssertionError(f"the events of {run_id} ended without a summary")


def test_the_form_shows_the_apis_message_then_starts_a_run_followed_to_its_end(
    page: Page, shot: Shot
) -> None:
    enter_key(page, "/new")
    expect(page.locator("#field-runs")).to_have_value("5")  # the service's default
    page.fill("#field-model", "emulator/small, emulator/large")
    page.set_input_files(
        "#field-prompt_file",
        {"name": "p.txt", "mimeType": "text/plain", "buffer": f"one {SLOW}\ntwo\n".encode()},
    )
    page.fill("#field-max_tokens", "8")
    page.fill("#field-runs", "0")
    page.click("#start")

    expect(page.locator('.field-error[data-for="runs"]')).to_contain_text(
        "greater than or equal to 1"
    )
    shot(page, "form-validation")
    page.fill("#field-runs", "3")
    page.fill("#field-label", "from the browser")
    page.click("#start")

    page.wait_for_url("**/runs/**")
    expect(page.locator("main")).to_have_attribute("data-status", "completed")
    expect(page.locator("#latency-cdf")).to_be_visible()
    expect(page.locator("h1 + .label")).to_have_text("from the browser")
    expect(page.locator("#comparison tbody tr")).to_have_count(2)
    shot(page, "run-completed")


def test_a_running_run_is_followed_live_and_cancelled_from_its_page(
    page: Page, client: httpx.Client, shot: Shot
) -> None:
    run_id = start_run(client, f"slow {SLOW}\n".encode(), runs="100", label="to cancel")
    enter_key(page, f"/runs/{run_id}")

    expect(page.locator("main")).to_have_attribute("data-status", "running")
    plain = client.get(f"/runs/{run_id}").text  # as read with no script: it reloads itself
    assert '<noscript><meta http-equiv="refresh"' in plain and 'id="run-progress"' in plain
    # Progress arrives through /events, with no reload of the page.
    expect(page.locator("#progress-text")).not_to_contain_text("0/100 requests")
    shot(page, "run-live")
    page.click("#cancel")

    expect(page.locator("main")).to_have_attribute("data-status", "cancelled")
    state = client.get(f"/benchmarks/{run_id}").json()
    assert state["status"] == "cancelled"
    assert 0 < state["finished_requests"] < 100
    shot(page, "run-cancelled")


def test_two_runs_ticked_on_the_list_are_compared_with_intervals(
    page: Page, client: httpx.Client, shot: Shot
) -> None:
    prompts = "\n".join(f"prompt {n}" for n in range(10)).encode()
    slower = "\n".join(f"prompt {n} [[emulator:ttft=0.05]]" for n in range(10)).encode()
    # One after the other: the earlier run is the baseline.
    first = start_run(client, prompts, runs="2", concurrency="4", label="quick")
    wait_for_end(client, first)
    second = start_run(client, slower, runs="2", concurrency="4", label="slower ttft")
    wait_for_end(client, second)

    enter_key(page, "/")
    page.check(f'#runs input[value="{first}"]')
    page.check(f'#runs input[value="{second}"]')
    page.click("#compare")

    table = page.locator("#series-0")
    expect(table).to_be_visible()
    ttft = table.locator("tr", has_text="ttft p50")
    expect(ttft.locator("td.verdict")).to_contain_text("slower (")
    expect(page.locator("#compared-runs")).to_contain_text("slower ttft")
    shot(page, "compare")


def test_the_list_shows_a_run_going_from_running_to_completed(
    page: Page, client: httpx.Client, shot: Shot
) -> None:
    run_id = start_run(client, f"a {SLOW}\nb {SLOW}\n".encode(), runs="4", label="watched")
    enter_key(page, "/")

    row = page.locator(f'#runs tr[data-run="{run_id}"]')
    expect(row).to_have_attribute("data-status", "running")
    shot(page, "home-running")
    expect(row).to_have_attribute("data-status", "completed")
    expect(row).to_contain_text("watched")
    shot(page, "home")


def test_a_sweep_is_followed_step_by_step_then_shows_its_curves(
    page: Page, client: httpx.Client, shot: Shot
) -> None:
    prompts = "\n".join(f"p{n} [[emulator:ttft=0.1]]" for n in range(4)).encode()
    run_id = start_run(
        client, prompts, sweep="concurrency", sweep_values="1,2,4", runs="2", label="a sweep"
    )
    enter_key(page, f"/runs/{run_id}")

    expect(page.locator("main")).to_have_attribute("data-status", "completed")
    expect(page.locator("h2", has_text="Sweep")).to_be_visible()
    expect(page.locator("h2:has-text('Sweep') ~ svg polyline").first).to_be_visible()
    shot(page, "sweep")
