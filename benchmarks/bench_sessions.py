"""Ten viewers on one server: concurrent browser sessions moving sliders over a filled landscape.

Starts `streamlit run app.py` (empty cache folder; the default experience's landscape ships), warms it
with one session (opened, used, closed), records the server's baseline memory (RSS) and thread
count, then opens ``--sessions`` Playwright contexts on the explorer and makes ``--moves`` rounds of
moves: each round presses ArrowRight in every session back to back (they are all busy at once) and
times, inside each page, key press -> every card including kNN updated for the new configuration.
Then it closes every session and watches the server for ``--settle`` seconds.

Targets (issue 22): median key press -> kNN <= 300 ms; memory growth <= 30 MB per session; within
60 s after the sessions close, memory within 10 % of the baseline and threads back at the baseline.
Writes ``results/sessions.md``.

    .venv/bin/python benchmarks/bench_sessions.py [--sessions 10] [--moves 5] [--settle 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_browser_slider import OBSERVER_JS, wait_ready  # noqa: E402
from browser_harness import (  # noqa: E402
    free_port,
    launch_chromium,
    server_stats,
    server_stats_at_rest,
    start_app,
    stop_app,
)

from snapvit_core._atomic import write_text_atomic  # noqa: E402

SLIDER = "MLP sparsity (fraction of neurons removed)"


def open_session(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1300})
    page = context.new_page()
    page.goto(url)
    page.get_by_text("Speed-up (predicted)").first.wait_for(timeout=300_000)
    page.evaluate(OBSERVER_JS)
    wait_ready(page)
    return context, page


def move_all(pages: list, timeout_s: float = 120.0) -> list[float]:
    """One round: ArrowRight in every session back to back; key press -> kNN updated (ms) per session."""
    for page in pages:
        page.get_by_role("slider", name=SLIDER).focus()
    for page in pages:
        page.keyboard.press("ArrowRight")
    deadline, times = time.time() + timeout_s, {}
    while len(times) < len(pages) and time.time() < deadline:
        for index, page in enumerate(pages):
            if index not in times and page.evaluate("() => window.__bench.knnAt !== null"):
                key, knn = page.evaluate("() => [window.__bench.keyAt, window.__bench.knnAt]")
                times[index] = knn - key
        time.sleep(0.02)
    if len(times) < len(pages):
        raise SystemExit(f"{len(pages) - len(times)} sessions did not update within {timeout_s} s")
    return [times[i] for i in range(len(pages))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--moves", type=int, default=5, help="rounds of moves (each session moves once per round)")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to watch the server after closing")
    parser.add_argument("--out", default=str(ROOT / "results" / "sessions.md"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    log_path = Path(tempfile.gettempdir()) / "bench_sessions_streamlit.log"
    os.environ["SNAPVIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-sessions-cache-")
    server = start_app(port, log_path)
    if server is None:
        raise SystemExit("streamlit did not start: " + log_path.read_text()[-2000:])
    url = f"http://127.0.0.1:{port}/explorer"
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            context, page = open_session(browser, url)  # warm-up: model, data, landscape, latency model
            move_all([page])
            context.close()
            time.sleep(45)  # the warm-up session is dropped (disconnectedSessionTTL = 30 s)
            baseline_mb, baseline_threads = server_stats_at_rest(f"http://127.0.0.1:{port}", server.pid)
            print(f"baseline: {baseline_mb:.0f} MB, {baseline_threads} threads", flush=True)
            sessions = [open_session(browser, url) for _ in range(args.sessions)]
            pages = [page for _, page in sessions]
            knn_ms, peak_mb, peak_threads = [], baseline_mb, baseline_threads
            for round_ in range(args.moves):
                times = move_all(pages)
                knn_ms += times
                memory, threads = server_stats(server.pid)
                peak_mb, peak_threads = max(peak_mb, memory), max(peak_threads, threads)
                print(
                    f"round {round_ + 1}: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms; "
                    f"server {memory:.0f} MB, {threads} threads",
                    flush=True,
                )
                time.sleep(0.3)
            for context, _ in sessions:
                context.close()
            closed_at = time.time()
            settled_s = None
            while time.time() - closed_at < args.settle:
                memory, threads = server_stats_at_rest(f"http://127.0.0.1:{port}", server.pid)
                if memory <= 1.1 * baseline_mb and threads <= baseline_threads:
                    settled_s = time.time() - closed_at
                    break
            final_mb, final_threads = server_stats(server.pid)
            browser.close()
    finally:
        stop_app(server)
    per_session = (peak_mb - baseline_mb) / args.sessions
    median = statistics.median(knn_ms)
    rows = [
        (
            "median key press -> kNN (ms)",
            f"{median:.0f} (min-max {min(knn_ms):.0f}-{max(knn_ms):.0f})",
            "<= 300",
            median <= 300,
        ),
        (
            "memory growth per session (MB)",
            f"{per_session:.1f} (peak {peak_mb:.0f}, baseline {baseline_mb:.0f})",
            "<= 30",
            per_session <= 30,
        ),
        ("threads at peak / baseline", f"{peak_threads} / {baseline_threads}", "", True),
        (
            "after closing: back within 10 % memory and at baseline threads",
            "never" if settled_s is None else f"after {settled_s:.0f} s",
            f"<= {args.settle:.0f} s",
            settled_s is not None,
        ),
        ("after closing: final memory / threads", f"{final_mb:.0f} MB / {final_threads}", "", True),
    ]
    lines = [
        f"# {args.sessions} concurrent browser sessions on one server (embedded backbone, filled landscape)",
        "",
        f"`python benchmarks/bench_sessions.py --sessions {args.sessions} --moves {args.moves}` · "
        f"{platform.machine()}, {os.cpu_count()} CPU cores · one chromium, one context per session; each round "
        "presses ArrowRight in every session back to back; timings from performance.now() inside each page.",
        "",
        "| what | measured | target | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {what} | {value} | {target} | {'yes' if met else 'NO'} |" for what, value, target, met in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, text)


if __name__ == "__main__":
    main()
