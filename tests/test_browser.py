"""End to end in a real browser: Debian's chromium driven by Playwright against `streamlit run app.py`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import ROOT

from devtools.browser_harness import (
    CHROMIUM,
    free_port,
    launch_chromium,
    misplacement_js,
    server_stats,
    server_stats_at_rest,
    start_app,
    stop_app,
)

ARTIFACTS = ROOT / "test-artifacts"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)"
    ),
]


def _start_or_fail(log_path: Path):
    """(base URL, server process) of ``streamlit run app.py`` on a free port; the test fails if it does not start."""
    port = free_port()
    server = start_app(port, log_path, timeout_s=90)
    if server is None:
        pytest.fail("streamlit did not start: " + log_path.read_text()[-4000:])
    return f"http://127.0.0.1:{port}", server


@pytest.fixture(scope="module")
def app_server():
    ARTIFACTS.mkdir(exist_ok=True)
    url, server = _start_or_fail(ARTIFACTS / "streamlit.log")
    yield url, server
    stop_app(server)


@pytest.fixture(scope="module")
def app_url(app_server):
    return app_server[0]


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
    card = page.locator(".svc-card", has=page.locator(".svc-label", has_text=label)).first  # ui/instant_cards
    return card.locator(".svc-value").inner_text()


def _page_knn_images(page, config: str) -> int | None:
    """The live kNN set the page used for ``config`` (its caption: 'on subset: 764 of 1,797 images')."""
    caption = page.get_by_text(f"kNN for {config}").first.inner_text()
    match = re.search(r"subset: ([\d,]+) of", caption)
    return int(match.group(1).replace(",", "")) if match else None


def _expected(mlp_sparsity: float, head_sparsity: float, images: int | None = None) -> tuple[str, str]:
    """FLOPs card and kNN card values for a configuration, computed here with the library (``images``: the
    page's estimate set; None = the full test split, what the landscape holds)."""
    from snapvit_core.data import load_knn_splits
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.evaluation.features import KnnEvaluator
    from snapvit_core.explorer import Explorer
    from snapvit_core.scoring.scores_io import load_scores

    backbone = load_backbone("embedded", False, "cpu")
    explorer = Explorer(backbone, load_scores(ROOT / "scores" / "embedded.xnes.safetensors"), "cpu")
    splits = load_knn_splits("embedded", backbone.data_config, limit_per_split=2000)
    explorer.attach_knn(KnnEvaluator.from_splits(splits))
    flops = explorer.cost(mlp_sparsity, head_sparsity).cost.flops / 1e6
    knn = 100 * explorer.evaluate(mlp_sparsity, head_sparsity, ("knn",), knn_images=images).knn_top1  # as the page
    return f"{flops:.1f}", f"{knn:.2f}"


def _wait_for_knn(page, config: str = "", timeout_s: float = 60.0) -> str:
    """The kNN card's value once its caption names ``config`` (e.g. '(MLP 0.60, head 0.00)') and
    nothing on the page says 'updating…'."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if page.get_by_text("updating…").count() == 0 and page.get_by_text(f"kNN for {config}").count() > 0:
            value = _metric(page, "kNN top-1 (%)")
            if value and value != "updating…":
                return value
        time.sleep(0.1)
    raise AssertionError("the kNN card stayed 'updating…'")


def _overlay_misplacement(page) -> list[tuple[str, float, float]]:
    """(mark, dx, dy) px between each mark laid over a chart (ui/chart_overlay.py) and where plotly draws its
    data: a star or cross at its (x, y), a keep boundary at its x and its block's row centre, a bar's centre x
    and its top edge."""
    return page.evaluate(misplacement_js("[class*='st-key-overlay_box_']"))


def _assert_overlays_in_place(page, config: tuple[float, float]) -> int:
    """The star, the pruned heads' crosses, the kept/pruned bars and the keep boundaries sit on plotly's own
    mapping of their data (within 1.5 px), one bar pair and boundary per block, the star on ``config``.
    Returns the number of crossed-out heads."""
    marks = _overlay_misplacement(page)
    names = [name for name, _, _ in marks]
    blocks = page.locator(".keep-boundary").first.evaluate(
        "(mark) => Math.round(mark.closest(\"[class*='st-key-overlay_box_']\")"
        ".querySelector('.js-plotly-plot')._fullLayout.yaxis.range[0] + 0.5)"
    )
    assert names.count("keep-boundary") == names.count("kept-bar") == names.count("pruned-bar") == blocks >= 6, marks
    assert names.count("landscape-current") == 1, marks
    assert all(abs(dx) <= 1.5 and abs(dy) <= 1.5 for _, dx, dy in marks), marks
    star = page.locator(".landscape-current")
    assert (float(star.get_attribute("data-x")), float(star.get_attribute("data-y"))) == config
    return names.count("pruned-head")


def app_tracebacks(server_log: str) -> list[str]:
    """Tracebacks in the server log, less the web server's own noise when a browser tab closes mid-send
    (starlette's WebSocketDisconnected, which Streamlit logs with a traceback; not an app error)."""
    blocks = server_log.split("Traceback (most recent call last):")[1:]
    return [block for block in blocks if "WebSocketDisconnect" not in block and "websockets" not in block]


def test_explorer_held_arrow_key_ends_on_the_final_configuration(app_url):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    expected_flops = _expected(0.6, 0.0)[0]
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(f"{app_url}/")
        page.get_by_text("Unpruned kNN top-1").wait_for(timeout=120_000)
        _wait_until_idle(page)
        page.screenshot(path=str(ARTIFACTS / "backbone_page.png"), full_page=True)
        page.goto(f"{app_url}/explorer")
        page.get_by_text("Speed-up (predicted)").first.wait_for(timeout=120_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        _wait_for_knn(page, "(MLP 0.00, head 0.00)", 120)
        _wait_until_idle(page)
        assert _metric(page, "Speed-up (predicted)") == "1.00 x"
        mlp = page.get_by_role("slider", name="MLP sparsity (fraction of neurons removed)")
        head = page.get_by_role("slider", name="Head sparsity (fraction of heads removed)")
        overall = page.get_by_role("slider", name=re.compile("^Overall sparsity"))
        _hold_arrow_key(page, mlp, presses=12)  # as fast as a held key: several reruns are abandoned part-way
        expect(mlp).to_have_attribute("aria-valuetext", "0.60", timeout=20_000)
        knn = _wait_for_knn(page, "(MLP 0.60, head 0.00)")
        _wait_until_idle(page)
        expect(mlp).to_have_attribute("aria-valuetext", "0.60")  # the move sticks
        assert _metric(page, "FLOPs (MFLOPs)") == expected_flops
        # the exact full-test-set value from the shipped landscape: the library must agree
        assert _page_knn_images(page, "(MLP 0.60, head 0.00)") is None
        assert page.get_by_text("kNN for (MLP 0.60, head 0.00) on the full test set").count() > 0
        expected_knn = _expected(0.6, 0.0)[1]
        assert _metric(page, "kNN top-1 (%)") == knn == expected_knn, (knn, expected_knn)
        assert page.get_by_text("updating…").count() == 0
        assert page.locator(".js-plotly-plot .main-svg").count() >= 4  # plotly drew all four charts
        _assert_overlays_in_place(page, (0.6, 0.0))  # the star and the keep boundaries followed the move
        assert page.get_by_text("Accuracy landscape: all 400 configurations computed").count() > 0
        _hold_arrow_key(page, overall, presses=12)  # the overall slider sets both along the published path
        expect(head).to_have_attribute("aria-valuetext", "0.45", timeout=20_000)
        _wait_for_knn(page, "(MLP 0.60, head 0.45)")
        _wait_until_idle(page)
        expect(mlp).to_have_attribute("aria-valuetext", "0.60")
        assert page.get_by_text("Traceback").count() == 0
        chooser = page.get_by_role("combobox", name="Side by side with another method at the same sparsity")
        chooser.click()
        chooser.fill("magnitude")
        page.keyboard.press("Enter")
        page.get_by_text("magnitude (data-free)").first.wait_for(timeout=60_000)
        _wait_for_knn(page, "(MLP 0.60, head 0.45)")
        _wait_until_idle(page)
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "explorer_page.png"), full_page=True)
        narrow = browser.new_page(viewport={"width": 800, "height": 1100})
        narrow.goto(f"{app_url}/explorer")
        narrow.get_by_text("Speed-up (predicted)").first.wait_for(timeout=120_000)
        _wait_until_idle(narrow)
        narrow.screenshot(path=str(ARTIFACTS / "explorer_800px.png"))
        values = narrow.locator('[data-testid="stMetricValue"], .svc-value').all()
        assert len(values) >= 6  # the cost and kNN cards
        for card in values:  # no value cut off ("23.6 MFL...")
            assert card.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), card.inner_text()
        narrow.close()
        browser.close()
    server_log = (ARTIFACTS / "streamlit.log").read_text()
    assert not app_tracebacks(server_log), server_log[-4000:]


def _click_landscape_cell(page, mlp_sparsity: float, head_sparsity: float) -> None:
    """Hover and click the landscape heatmap's cell of a configuration (plotly's own axis mapping).

    The page may still be settling (a caption above the chart goes when the latency model is ready, which
    moves the chart): the cell's position is taken again after the hover and the click waits until it holds.
    """
    chart = page.locator(".js-plotly-plot", has=page.locator("text=kNN top-1 over the (MLP, head) plane")).first
    chart.scroll_into_view_if_needed()

    def cell_position() -> tuple[float, float]:
        return tuple(
            chart.evaluate(
                """(el, [mlp, head]) => {
                const xa = el._fullLayout.xaxis, ya = el._fullLayout.yaxis, box = el.getBoundingClientRect();
                return [box.left + xa._offset + xa.d2p(mlp), box.top + ya._offset + ya.d2p(head)];
            }""",
                [mlp_sparsity, head_sparsity],
            )
        )

    for _ in range(20):
        x, y = cell_position()
        page.mouse.move(x - 3, y - 3)
        page.mouse.move(x, y)
        time.sleep(0.3)  # plotly's hover picks the cell's point; the click then reports it
        if cell_position() == (x, y):
            page.mouse.click(x, y)
            return
    raise AssertionError("the landscape chart kept moving; could not click a cell")


def test_clicking_the_landscape_moves_the_sliders_and_the_link_restores_them(app_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(f"{app_url}/explorer")
        page.get_by_text("kNN top-1 over the (MLP, head) plane").first.wait_for(timeout=120_000)
        _wait_until_idle(page)
        _click_landscape_cell(page, 0.5, 0.3)
        mlp = page.get_by_role("slider", name="MLP sparsity (fraction of neurons removed)")
        head = page.get_by_role("slider", name="Head sparsity (fraction of heads removed)")
        expect(mlp).to_have_attribute("aria-valuetext", "0.50", timeout=30_000)
        expect(head).to_have_attribute("aria-valuetext", "0.30", timeout=30_000)
        knn = _wait_for_knn(page, "(MLP 0.50, head 0.30)")
        _wait_until_idle(page)
        assert "mlp=0.5" in page.url and "head=0.3" in page.url  # the URL follows the configuration
        assert _assert_overlays_in_place(page, (0.5, 0.3)) > 0  # heads pruned at head sparsity 0.3: crossed out
        page.screenshot(path=str(ARTIFACTS / "explorer_landscape_click.png"), full_page=True)
        mlp.focus()
        page.keyboard.press("ArrowRight")  # away by keyboard, then the same cell again: the sliders come back
        expect(mlp).to_have_attribute("aria-valuetext", "0.55", timeout=30_000)
        _wait_until_idle(page)
        _click_landscape_cell(page, 0.5, 0.3)
        expect(mlp).to_have_attribute("aria-valuetext", "0.50", timeout=30_000)
        _wait_for_knn(page, "(MLP 0.50, head 0.30)")
        _wait_until_idle(page)
        shared = browser.new_page(viewport={"width": 1400, "height": 1300})
        shared.goto(page.url)  # a second viewer opens the link
        shared.get_by_text("Speed-up (predicted)").first.wait_for(timeout=120_000)
        expect(shared.get_by_role("slider", name="MLP sparsity (fraction of neurons removed)")).to_have_attribute(
            "aria-valuetext", "0.50", timeout=30_000
        )
        assert _wait_for_knn(shared, "(MLP 0.50, head 0.30)") == knn
        browser.close()
    server_log = (ARTIFACTS / "streamlit.log").read_text()
    assert not app_tracebacks(server_log), server_log[-4000:]


def _card_texts(page) -> dict[str, str]:
    """label -> value of every instant card (ui/instant_cards.js), and the kNN caption."""
    return page.evaluate(
        """() => {
          const shown = {};
          for (const card of document.querySelectorAll(".svc-card")) {
            const label = card.querySelector(".svc-label").firstChild.textContent;
            if (!(label in shown)) shown[label] = card.querySelector(".svc-value").textContent;
          }
          const caption = [...document.querySelectorAll(".svc-caption")].map((c) => c.textContent)
            .find((t) => t.startsWith("kNN for"));
          shown.caption = caption || null;
          return shown;
        }"""
    )


# Counts the MutationObservers that ui/instant_cards.js keeps on the sliders (it may replace them on a run).
COUNT_SLIDER_OBSERVERS_JS = """
(() => {
  const live = new Set();
  const observe = MutationObserver.prototype.observe;
  const disconnect = MutationObserver.prototype.disconnect;
  MutationObserver.prototype.observe = function (target, options) {
    const ours = (new Error().stack || "").includes("snapvit_instant_cards");
    if (ours && target instanceof HTMLInputElement && target.type === "range") live.add(this);
    return observe.call(this, target, options);
  };
  MutationObserver.prototype.disconnect = function () {
    live.delete(this);
    return disconnect.call(this);
  };
  window.__sliderObservers = () => live.size;
})();
"""


def _marks_html(page) -> list[str]:
    """The HTML of the marks over every chart (ui/instant_cards.js draws them), in page order."""
    return page.locator(".chart-overlay").evaluate_all("(marks) => marks.map((m) => m.outerHTML)")


def test_cards_and_marks_follow_a_slider_before_the_server_answers(app_url):
    """With the server's messages held back, a key press still moves the cards and the marks over the
    charts to the new configuration (from the tables sent with them; every mark on plotly's own mapping);
    released, the server's own cards and marks for it are the same. The page keeps one observer per
    slider, for every card group and chart: each run's followers replace the previous run's (they hold
    its tables, which would otherwise stay in memory)."""
    from playwright.sync_api import expect, sync_playwright

    held, queued, routes = {"on": False}, [], []

    def hold_server(ws) -> None:
        server = ws.connect_to_server()  # the page's messages go on to the server unchanged
        routes.append(ws)

        def from_server(message) -> None:
            if held["on"]:
                queued.append(message)
            else:
                ws.send(message)

        server.on_message(from_server)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.route_web_socket(re.compile(r".*/_stcore/stream$"), hold_server)
        page.add_init_script(COUNT_SLIDER_OBSERVERS_JS)
        page.goto(f"{app_url}/explorer")
        page.get_by_text("Speed-up (predicted)").first.wait_for(timeout=120_000)
        _wait_for_knn(page, "(MLP 0.00, head 0.00)")
        page.wait_for_function(  # the latency model is ready: the cost cards' table is sent from then on
            "() => [...document.querySelectorAll('.svc-card')].some((c) => c.dataset.card.startsWith('Latency') "
            "&& /[0-9]/.test(c.querySelector('.svc-value').textContent))",
            timeout=120_000,
        )
        _wait_until_idle(page)
        before = _card_texts(page)
        marks_before = _marks_html(page)
        star = page.locator(".landscape-current")
        for slider_name, presses, where in (
            ("MLP sparsity (fraction of neurons removed)", 4, "(MLP 0.20, head 0.00)"),
            ("Overall sparsity", 6, "(MLP 0.30, head 0.15)"),  # the published path through (0.25, 0.1), (0.35, 0.2)
        ):
            star_at = (star.get_attribute("data-x"), star.get_attribute("data-y"))
            held["on"] = True
            page.get_by_role("slider", name=re.compile("^" + re.escape(slider_name))).focus()
            for _ in range(presses):
                page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "(where) => [...document.querySelectorAll('.svc-caption')].some((c) => c.textContent"
                ".startsWith(`kNN for ${where}`))",
                arg=where,
                timeout=10_000,
            )
            instant = _card_texts(page)
            config = (float(where[5:9]), float(where[16:20]))
            assert (star.get_attribute("data-x"), star.get_attribute("data-y")) != star_at
            pruned = _assert_overlays_in_place(page, config)  # the marks moved, before the server's answer
            instant_marks = _marks_html(page)
            assert instant_marks != marks_before and (pruned > 0) == (config[1] > 0)
            assert instant["FLOPs (MFLOPs)"] != before["FLOPs (MFLOPs)"]
            assert instant["Mean cosine"] != before["Mean cosine"] and instant["kNN top-1 (%)"] != "updating…"
            held["on"] = False
            while queued:
                routes[-1].send(queued.pop(0))
            expect(star).to_have_attribute("data-x", f"{float(where[5:9]):.4f}", timeout=30_000)
            _wait_until_idle(page)
            served = _card_texts(page)
            assert served == instant, (served, instant)  # the browser's table held the server's own cards
            assert _marks_html(page) == instant_marks  # and the server's own marks
            before, marks_before = served, instant_marks
        assert page.evaluate("window.__sliderObservers()") == 3  # one per slider, for 2 card groups and 4 charts
        browser.close()
    server_log = (ARTIFACTS / "streamlit.log").read_text()
    assert not app_tracebacks(server_log), server_log[-4000:]


def test_a_link_opened_first_on_a_fresh_server_gets_the_apps_navigation(tmp_path):
    """The first viewer of a freshly started server opens a shared explorer link (not the home page).

    With a ``pages/`` folder beside app.py, Streamlit ran that page in its old folder-based multipage
    mode: app.py's navigation and wide layout were skipped, the sidebar listed file names and an
    "app" entry, and every later session of that server stayed so until someone opened the home page.
    """
    from playwright.sync_api import expect, sync_playwright

    url, server = _start_or_fail(tmp_path / "streamlit.log")
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(f"{url}/explorer?mlp=0.35&head=0.1")
            page.get_by_text("Speed-up (predicted)").first.wait_for(timeout=120_000)
            _wait_until_idle(page)
            nav = page.locator('[data-testid="stSidebarNav"]')
            expect(nav.get_by_text("Elastic explorer")).to_be_visible(timeout=30_000)  # app.py's page titles
            assert nav.get_by_text("app", exact=True).count() == 0
            expect(page.get_by_role("slider", name="MLP sparsity (fraction of neurons removed)")).to_have_attribute(
                "aria-valuetext", "0.35", timeout=30_000
            )
            wide = page.locator('[data-testid="stMainBlockContainer"]').evaluate("e => e.clientWidth")
            assert wide > 900, wide  # app.py's wide layout (the centred one is at most 736 px)
            browser.close()
    finally:
        stop_app(server)


def test_budget_answer_opens_in_the_explorer_and_every_page_renders(app_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(f"{app_url}/compare")
        page.get_by_role("button", name="Find the best configuration").click()
        page.get_by_text("Best within").wait_for(timeout=180_000)
        _wait_until_idle(page)
        best = page.locator('[data-testid="stAlertContentSuccess"]').inner_text()
        chosen = re.search(r"MLP (\d\.\d+), heads (\d\.\d+)", best)
        assert chosen, best
        page.get_by_role("button", name="Run sweep").click()
        page.locator(".js-plotly-plot .main-svg").nth(2).wait_for(timeout=180_000)  # budget + 2 trade-offs
        _wait_until_idle(page)
        time.sleep(1.0)
        page.screenshot(path=str(ARTIFACTS / "compare_page.png"), full_page=True)
        page.get_by_role("button", name="Open in the explorer").click()
        page.get_by_text("Speed-up (predicted)").first.wait_for(timeout=120_000)
        _wait_until_idle(page)
        mlp = page.get_by_role("slider", name="MLP sparsity (fraction of neurons removed)")
        nearest = f"{round(float(chosen.group(1)) / 0.05) * 0.05:.2f}"
        expect(mlp).to_have_attribute("aria-valuetext", nearest, timeout=20_000)
        for path, ready in (
            ("scores", "Load scores"),
            ("export", "Export folder name"),
            ("learn", "How to read every chart"),
        ):
            page.goto(f"{app_url}/{path}")
            page.get_by_text(ready).first.wait_for(timeout=120_000)
            _wait_until_idle(page)
            time.sleep(1.0)
            assert page.get_by_text("Traceback").count() == 0
            page.screenshot(path=str(ARTIFACTS / f"{path}_page.png"), full_page=True)
        browser.close()
    server_log = (ARTIFACTS / "streamlit.log").read_text()
    assert not app_tracebacks(server_log), server_log[-4000:]


@pytest.mark.slow
def test_closed_sessions_are_released(app_server):
    """20 viewers open the explorer and leave: threads and memory return to the baseline within 60 s."""
    from playwright.sync_api import sync_playwright

    url, server = app_server
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        warm = browser.new_page()
        warm.goto(f"{url}/explorer")
        warm.get_by_text("kNN top-1 over the (MLP, head) plane").first.wait_for(timeout=120_000)
        _wait_until_idle(warm)
        warm.close()

        def visit() -> None:
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{url}/explorer")
            page.get_by_text("kNN top-1 over the (MLP, head) plane").first.wait_for(timeout=120_000)
            page.get_by_role("slider", name="MLP sparsity (fraction of neurons removed)").focus()
            page.keyboard.press("ArrowRight")
            context.close()

        for _ in range(3):  # the server's worker pools grow to what a visit uses once: not a per-session cost
            visit()
        time.sleep(40)  # the warm-up sessions are dropped (disconnectedSessionTTL = 30 s)
        baseline_mb, baseline_threads = server_stats_at_rest(url, server.pid)
        for _ in range(20):
            visit()
        peak_mb, peak_threads = server_stats(server.pid)
        browser.close()
    deadline = time.time() + 60
    while time.time() < deadline:
        memory, threads = server_stats_at_rest(url, server.pid)
        if memory <= 1.1 * baseline_mb and threads <= baseline_threads:
            break
    assert threads <= baseline_threads, (threads, baseline_threads, peak_threads)
    assert memory <= 1.1 * baseline_mb, (memory, baseline_mb, peak_mb)
