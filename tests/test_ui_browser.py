"""The studio as a new user meets it, in headless Chromium: train, watch, compare, export; bad input.

Screenshots of each tab go to out/screenshots/ (the test's artifacts).
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from safetensors import safe_open

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "out" / "screenshots"
KOHYA_KEY = re.compile(r"^lora_unet_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).is_file():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
    pytest.skip(f"no {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    data = tmp_path_factory.mktemp("studio")
    port = free_port()
    log = open(data / "app.log", "wb")  # noqa: SIM115 - open for the app's lifetime
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--data-dir", str(data / "home")],
        cwd=Path(__file__).resolve().parents[1],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError((data / "app.log").read_text()) from None
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()
    subprocess.run(["pkill", "-f", f"--data-dir {data / 'home'}"], check=False)  # the app's job processes


@pytest.fixture(scope="module")
def page(app_url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.goto(app_url)
        page.wait_for_selector("#train-start", timeout=60_000)
        yield page
        browser.close()


def field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def fresh_form(page) -> None:
    """Reload the page: the Train form is back at its defaults."""
    page.reload()
    page.wait_for_selector("#train-start", timeout=60_000)


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.mark.slow
def test_bad_input_shows_an_inline_error_and_submits_nothing(page):
    cases = [
        ("train-optimizer-learning-rate", "abc", "optimizer.learning_rate"),
        ("train-model", "", "model.name"),
        ("train-time-budget-minutes", "-5", "time_budget_minutes"),
        ("weight-partial", "0", "rewards.weights"),
    ]
    for elem_id, bad, message in cases:
        fresh_form(page)
        box = field(page, elem_id)
        box.fill(bad)
        box.press("Tab")
        page.click("#train-start")
        error = page.locator("#train-error")
        error.wait_for(timeout=20_000)
        assert message in error.inner_text()
    shot(page, "train_error")
    page.get_by_role("tab", name="Jobs").click()
    page.wait_for_function("document.querySelector('#jobs-summary')?.innerText.includes('No jobs yet')", timeout=20_000)
    page.get_by_role("tab", name="Train").click()


@pytest.mark.slow
def test_a_new_user_trains_watches_compares_and_exports(page, tmp_path):
    fresh_form(page)
    started = time.monotonic()
    page.click("#train-start")
    page.locator("#train-ok").wait_for(timeout=20_000)
    assert "Job 1 queued" in page.locator("#train-ok").inner_text()
    shot(page, "train")

    page.get_by_role("tab", name="Jobs").click()
    page.wait_for_selector("#jobs-grid img", timeout=240_000)
    print(f"\nStart to first sample grid in the browser: {time.monotonic() - started:.1f} s")
    seen = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and "done" not in seen:
        status = page.locator("#jobs-status")
        if status.count():
            seen.add(status.inner_text().strip())
        time.sleep(0.5)
    assert {"running", "done"} <= seen, seen
    page.wait_for_selector("#jobs-grid img", timeout=20_000)
    assert page.locator("#jobs-grid img").get_attribute("src")
    assert "iteration 6" in page.locator("#jobs-grid-slider").inner_text()
    line = page.locator('#jobs-rewards path[aria-roledescription="line mark"]').first
    line.wait_for(timeout=20_000)
    assert line.get_attribute("d").count("L") >= 5  # a reward curve through all 6 iterations
    shot(page, "jobs")

    page.get_by_role("tab", name="Compare").click()
    page.wait_for_function(
        "document.querySelector('#compare-checkpoints')?.innerText.includes('iteration 6')", timeout=20_000
    )
    page.click("#compare-generate")
    page.wait_for_function("document.querySelectorAll('#compare-gallery img').length >= 12", timeout=180_000)
    accuracy = page.locator("#compare-accuracy").inner_text()
    assert "base model" in accuracy and "job 1 iter 6" in accuracy
    shot(page, "compare")

    page.get_by_role("tab", name="Export").click()
    page.wait_for_function(
        "document.querySelector('#export-checkpoint input')?.value.includes('iteration 6')", timeout=20_000
    )
    page.click("#export-button")
    page.locator("#export-ok").wait_for(timeout=30_000)
    with page.expect_download() as download_info:
        page.click("#export-download")
    target = tmp_path / "exported.safetensors"
    download_info.value.save_as(target)
    with safe_open(str(target), framework="pt") as handle:
        keys = list(handle.keys())
        assert handle.metadata()["iterations"] == "6"
    assert keys and all(KOHYA_KEY.match(k) for k in keys)
    shot(page, "export")
