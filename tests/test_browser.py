"""End to end in a real browser: Debian's chromium driven by Playwright against `streamlit run app.py`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)"
    ),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ARTIFACTS.mkdir(exist_ok=True)
    # The server's output goes to a file: an unread pipe fills up (64 KB of warnings) and blocks the server.
    log_path = ARTIFACTS / "streamlit.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        log.close()
        pytest.fail("streamlit did not start: " + log_path.read_text()[-4000:])
    yield url
    server.terminate()
    try:  # a slider move still computing on a loaded machine can delay the graceful shutdown
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)
    log.close()


def _wait_until_idle(page, timeout_s: float = 120.0) -> None:
    """Wait until the script run has finished: no 'running' icon in two checks 0.5 s apart.

    Keys pressed while a run is still rendering can be lost when the slider is re-rendered.
    """
    deadline, quiet = time.time() + timeout_s, 0
    while time.time() < deadline and quiet < 2:
        running = page.locator('[data-testid="stStatusWidgetRunningIcon"]').count() > 0
        quiet = 0 if running else quiet + 1
        time.sleep(0.5)


def _hold_arrow_key(page, slider, presses: int) -> None:
    slider.focus()
    for _ in range(presses):
        page.keyboard.press("ArrowRight")


def _metric(page, label: str) -> str:
    card = page.locator('[data-testid="stMetric"]', has_text=label).first
    return card.locator('[data-testid="stMetricValue"]').inner_text()


def test_slider_prunes_live_and_charts_render(app_url):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        page.goto(f"{app_url}/")
        page.get_by_text("Unpruned kNN top-1").wait_for(timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / "backbone_page.png"), full_page=True)
        page.goto(f"{app_url}/explorer")
        page.get_by_text("Speed-up").first.wait_for(timeout=120_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        _wait_until_idle(page)
        before = _metric(page, "FLOPs"), _metric(page, "Parameters")
        mlp = page.get_by_role("slider", name="MLP sparsity (fraction of neurons removed)")
        head = page.get_by_role("slider", name="Head sparsity (fraction of heads removed)")
        overall = page.get_by_role("slider", name=re.compile("^Overall sparsity"))
        _hold_arrow_key(page, mlp, presses=12)  # as fast as a held key: several reruns are abandoned part-way
        expect(mlp).to_have_attribute("aria-valuetext", "0.60", timeout=20_000)  # the keys moved it
        _wait_until_idle(page)
        # The move sticks (a two-way slider coupling once snapped it back to 0 here) and the metrics follow.
        expect(mlp).to_have_attribute("aria-valuetext", "0.60")
        after = _metric(page, "FLOPs"), _metric(page, "Parameters")
        assert after != before, "moving the MLP slider did not change the metrics"
        _hold_arrow_key(page, overall, presses=12)  # the overall slider sets both along the published path
        expect(head).to_have_attribute("aria-valuetext", "0.45", timeout=20_000)
        _wait_until_idle(page)
        expect(mlp).to_have_attribute("aria-valuetext", "0.60")
        expect(head).to_have_attribute("aria-valuetext", "0.45")
        assert _metric(page, "FLOPs") != after[0], "moving the overall slider did not change the metrics"
        assert page.locator(".js-plotly-plot").count() >= 4
        assert page.locator(".js-plotly-plot .main-svg").count() >= 4  # plotly drew them
        assert page.get_by_text("Traceback").count() == 0
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "explorer_page.png"), full_page=True)
        # Compare & budget: a sweep of the published path, its trade-off charts, then the budget's pick
        # opened in the explorer (one browser session, so the session state carries over).
        page.goto(f"{app_url}/compare")
        page.get_by_role("button", name="Run sweep").click()
        page.get_by_text("Best within budget").wait_for(timeout=180_000)
        _wait_until_idle(page)
        assert page.locator(".js-plotly-plot .main-svg").count() >= 2  # accuracy vs FLOPs and vs latency
        assert page.get_by_text("Traceback").count() == 0
        best = page.locator('[data-testid="stAlertContentSuccess"]').inner_text()
        chosen = re.search(r"MLP (\d\.\d\d), heads (\d\.\d\d)", best)
        assert chosen, best
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "compare_sweep.png"), full_page=True)
        page.get_by_role("button", name="Open in the explorer").click()
        page.get_by_text("Speed-up").first.wait_for(timeout=120_000)
        _wait_until_idle(page)
        expect(mlp).to_have_attribute("aria-valuetext", chosen.group(1), timeout=20_000)
        expect(head).to_have_attribute("aria-valuetext", chosen.group(2), timeout=20_000)
        for path, ready in (("scores", "Load scores"), ("compare", "Run sweep"), ("export", "Export folder name")):
            page.goto(f"{app_url}/{path}")
            page.get_by_text(ready).first.wait_for(timeout=120_000)
            time.sleep(1.0)
            assert page.get_by_text("Traceback").count() == 0
            page.screenshot(path=str(ARTIFACTS / f"{path}_page.png"), full_page=True)
        browser.close()
    # An exception in a script thread the browser never showed (e.g. a superseded rerun) still lands here.
    server_log = (ARTIFACTS / "streamlit.log").read_text()
    assert "Traceback" not in server_log, server_log[-4000:]
