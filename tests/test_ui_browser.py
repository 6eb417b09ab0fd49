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


APP_HOMES: dict[str, Path] = {}  # the app's URL -> its data directory


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
    APP_HOMES[url] = data / "home"
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
    subprocess.run(["pkill", "-f", "--", f"--data-dir {data / 'home'}"], check=False)  # the app's job processes


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


def colored_pixels(png: bytes) -> int:
    """Pixels of a screenshot that are clearly coloured (chart lines), not grey or white (axes, grid)."""
    import io

    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb.max(-1) - rgb.min(-1)) > 80).sum())


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.mark.slow
def test_bad_input_shows_an_inline_error_and_submits_nothing(page):
    cases = [
        ("train-optimizer-learning-rate", "abc", "optimizer.learning_rate"),
        ("train-model", "", "model.name"),
        ("train-time-budget-minutes", "-5", "time_budget_minutes"),
        ("weight-partial", "-1", "rewards.weights"),  # geneval 1 + partial -1: the weights sum to 0
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
    print(f"Start to done: {time.monotonic() - started:.1f} s")
    final = int(re.search(r"iteration (\d+)/(\d+)", page.locator("#jobs-summary").inner_text()).group(1))
    assert final >= 20  # the default job ends on its time budget, complete at the iteration it reached
    page.wait_for_selector("#jobs-grid img", timeout=20_000)
    assert page.locator("#jobs-grid img").get_attribute("src")
    assert f"iteration {final}" in page.locator("#jobs-grid-slider").inner_text()
    line = page.locator('#jobs-rewards path[aria-roledescription="line mark"]').first
    line.wait_for(timeout=20_000)
    assert line.get_attribute("d").count("L") >= final - 1  # a reward curve through every iteration
    legend = page.locator("#jobs-rewards").get_by_text("reward_mean (smoothed)")
    legend.wait_for(timeout=10_000)  # the trend's line, named in the legend
    chart, label = page.locator("#jobs-rewards").bounding_box(), legend.bounding_box()
    assert label["y"] + label["height"] <= chart["y"] + chart["height"]  # inside the chart, not cut off
    assert colored_pixels(page.locator("#jobs-rewards").screenshot()) > 200  # the curves are drawn, not bare axes
    log = page.locator("#jobs-log textarea").input_value()
    assert re.search(r"iteration \d+/\d+ · reward \d\.\d+ · \d+\.\d s/it · ETA", log), log
    assert "Loading" not in log  # the run's own progress, not the libraries' loading bars
    page.locator("#jobs-table").get_by_text("vgrpo", exact=True).last.click()  # a row picks its job
    page.wait_for_function("document.querySelector('#jobs-selected input')?.value === '1'", timeout=10_000)
    page.wait_for_timeout(3000)  # the refresh the click starts
    shot(page, "jobs")

    page.get_by_role("tab", name="Compare").click()
    page.wait_for_function(
        f"document.querySelector('#compare-checkpoints')?.innerText.includes('iteration {final}')", timeout=20_000
    )
    page.click("#compare-generate")
    page.wait_for_function("document.querySelectorAll('#compare-gallery img').length >= 12", timeout=180_000)
    accuracy = page.locator("#compare-accuracy").inner_text()
    assert "base model" in accuracy and f"job 1 iter {final}" in accuracy
    header = page.locator("#compare-gallery th").all_inner_texts()
    assert header[1:3] == ["base model", f"job 1 iter {final}"]  # one column per checkpoint, named on top
    assert "geneval" in page.locator("#compare-gallery td").first.inner_text()  # the reward under each image
    shot(page, "compare")

    page.get_by_role("tab", name="Export").click()
    page.wait_for_function(
        f"document.querySelector('#export-checkpoint input')?.value.includes('iteration {final}')", timeout=20_000
    )
    page.click("#export-button")
    page.locator("#export-ok").wait_for(timeout=30_000)
    with page.expect_download() as download_info:
        page.click("#export-download")
    target = tmp_path / "exported.safetensors"
    download_info.value.save_as(target)
    with safe_open(str(target), framework="pt") as handle:
        keys = list(handle.keys())
        assert handle.metadata()["iterations"] == str(final)
    assert keys and all(KOHYA_KEY.match(k) for k in keys)
    shot(page, "export")


def pair_shown(page) -> str:
    """The left image's source once a pair is on screen."""
    page.wait_for_selector("#label-left img", timeout=120_000)
    return page.locator("#label-left img").get_attribute("src")


def session_count(page) -> int:
    match = re.search(r"This session: (\d+)", page.locator("#label-counter").inner_text())
    return int(match.group(1)) if match else -1


def press_and_wait(page, key: str, expected: int) -> float:
    """Press a shortcut; seconds until the counter says `expected` and a new pair is on screen."""
    before = pair_shown(page)
    started = time.monotonic()
    page.keyboard.press(key)
    page.wait_for_function(
        "([n, src]) => { const c = document.querySelector('#label-counter')?.innerText || '';"
        " const img = document.querySelector('#label-left img');"
        " return c.includes('This session: ' + n) && img && img.getAttribute('src') !== src; }",
        arg=[expected, before],
        timeout=60_000,
    )
    return time.monotonic() - started


@pytest.mark.slow
def test_a_person_labels_with_the_keyboard_fits_and_trains_on_the_reward(page, app_url):
    from storage.data_dir import DataDir
    from studio.api import Studio

    page.get_by_role("tab", name="Label").click()
    page.click("#label-start")
    pair_shown(page)
    assert page.locator("#label-prompt").inner_text().strip()
    shot(page, "label")
    page.locator("#label-prompt").click()  # keys act when no text field has the focus

    latencies = []
    for n, key in enumerate(["1", "2", "1", "2", "3", "1", "2", "1", "2", "1"], start=1):
        latencies.append(press_and_wait(page, key, n))
    page.keyboard.press("Backspace")  # undo the tenth: its pair comes back
    page.wait_for_function("document.querySelector('#label-counter')?.innerText.includes('This session: 9')")
    for n, key in ((10, "2"), (11, "1")):
        latencies.append(press_and_wait(page, key, n))
    latencies.sort()
    print(
        f"\nlabel to next pair in the browser: median {latencies[len(latencies) // 2]:.2f} s, "
        f"max {latencies[-1]:.2f} s over {len(latencies)} labels"
    )

    page.get_by_text("Fit a preference reward on every label").click()
    field(page, "label-fit-name").fill("browser-taste")
    page.click("#label-fit")
    page.locator("#label-fit-ok").wait_for(timeout=120_000)
    assert "pref:browser-taste@v1" in page.locator("#label-fit-ok").inner_text()
    assert "11 labels" in page.locator("#label-fit-ok").inner_text()
    shot(page, "label_fit")

    page.get_by_role("tab", name="Train").click()
    fresh_form(page)
    page.locator("#train-preference input").click()
    page.get_by_role("option", name="pref:browser-taste").click()
    page.wait_for_function(
        "document.querySelector('#train-preference-card')?.innerText.includes('pref:browser-taste@v1')",
        timeout=20_000,
    )
    field(page, "weight-preference").fill("0.5")
    field(page, "weight-preference").press("Tab")
    page.click("#train-start")
    page.locator("#train-ok").wait_for(timeout=20_000)
    job_id = int(re.search(r"Job (\d+) queued", page.locator("#train-ok").inner_text()).group(1))
    shot(page, "train_preference")

    studio = Studio(DataDir(APP_HOMES[app_url]))
    labels = studio.labels.all()
    assert len(labels) == 11 and sorted(r.choice for r in labels).count("tie") == 1
    assert all(studio.labels.load_image(r.image_a).shape == (32, 32, 3) for r in labels)
    assert studio.job_config(job_id)["rewards"]["weights"]["pref:browser-taste@v1"] == 0.5


@pytest.mark.slow
def test_a_model_put_in_models_is_listed_with_its_family_and_brings_its_defaults(page, app_url, tmp_path):
    import shutil

    from tiny_pipelines import tiny_sd15

    from storage.data_dir import DataDir
    from studio.api import Studio

    home = APP_HOMES[app_url]
    shutil.copytree(tiny_sd15(tmp_path), home / "models" / "my-sd15")
    fresh_form(page)
    page.get_by_role("tab", name="Jobs").click()
    page.get_by_role("tab", name="Train").click()  # opening Train lists the models put there since
    page.locator("#train-model input").click()
    page.get_by_role("option", name="my-sd15 · Stable Diffusion 1.x / 2.x").click()
    page.wait_for_function(
        "document.querySelector('#train-rollout-steps textarea, #train-rollout-steps input')?.value === '20'",
        timeout=20_000,
    )
    shot(page, "train_model_family")
    page.click("#train-start")
    page.locator("#train-ok").wait_for(timeout=20_000)
    job_id = int(re.search(r"Job (\d+) queued", page.locator("#train-ok").inner_text()).group(1))
    studio = Studio(DataDir(home))
    config = studio.job_config(job_id)
    studio.jobs.cancel(job_id)
    assert config["model"] == {**config["model"], "name": "my-sd15", "resolution": None}
    assert config["rollout"]["guidance_scale"] == 5.0 and config["rollout"]["steps"] == 20
    assert config["lora"]["target_modules"] == ["to_q", "to_k", "to_v", "to_out.0"]
