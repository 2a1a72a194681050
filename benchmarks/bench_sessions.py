"""Ten viewers on one server: concurrent browser sessions moving sliders over a filled landscape.

Starts `streamlit run app.py` (empty cache folder; the default experience's landscape ships), warms it
with one session (opened, used, closed), records the server's baseline memory (RSS) and thread
count, then opens ``--sessions`` Playwright contexts on the explorer and makes ``--moves`` rounds of
moves: each round presses ArrowRight in every session back to back (they are all busy at once) and
times, inside each page, key press -> every card including kNN updated for the new configuration.
Then it closes every session and watches the server for ``--settle`` seconds.

``--busy 2`` runs two busy processes (``python -c "while True: pass"``) during the rounds.

Targets (issues 22 and 33): median key press -> kNN <= 300 ms; median key press -> marks over the
charts at the new configuration <= 150 ms; memory growth <= 30 MB per session; within 60 s after the
sessions close, memory within 10 % of the baseline and threads back at the baseline. Writes
``results/sessions.md``.

    .venv/bin/python benchmarks/bench_sessions.py [--sessions 10] [--moves 5] [--settle 60] [--busy 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_browser_slider import OBSERVER_JS, wait_ready  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from devtools.browser_harness import (  # noqa: E402
    free_port,
    launch_chromium,
    server_stats,
    server_stats_at_rest,
    start_app,
    stop_app,
)
from devtools.reports import write_report  # noqa: E402

SLIDER = "MLP sparsity (fraction of neurons removed)"


def open_session(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1300})
    page = context.new_page()
    page.goto(url)
    page.get_by_text("Speed-up (predicted)").first.wait_for(timeout=300_000)
    page.evaluate(OBSERVER_JS)
    wait_ready(page)
    return context, page


def cpu_seconds(server_pid: int) -> tuple[float, float, float]:
    """(server, chromium, harness) CPU seconds used so far (user + system, all threads), from /proc.

    Tells where the time of a round goes on a shared 2-core machine: the server's page runs, the
    browser rendering ten pages, or this benchmark driving them (Playwright's node driver and Python).
    """
    tick = os.sysconf("SC_CLK_TCK")
    used_by = {"server": 0.0, "browser": 0.0, "harness": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        pid = int(stat.parent.name)
        if pid == server_pid:
            used_by["server"] += used
        elif name.startswith(("chromium", "chrome")):
            used_by["browser"] += used
        elif pid == os.getpid() or name == "node":
            used_by["harness"] += used
    return used_by["server"], used_by["browser"], used_by["harness"]


def move_all(pages: list, timeout_s: float = 120.0) -> tuple[list[float], list[float]]:
    """One round: ArrowRight in every session back to back; per session, key press -> kNN updated and
    key press -> the marks over the charts followed (the landscape's star at the new configuration), ms.

    The times are taken inside the pages (performance.now()); each page checks its own flag every
    100 ms, so waiting adds no round trips from this process to the ten pages while they work.
    """
    for page in pages:
        page.get_by_role("slider", name=SLIDER).focus()
    for page in pages:
        page.keyboard.press("ArrowRight")
    deadline = time.time() + timeout_s
    times = []
    for page in pages:
        left_ms = max(1.0, 1e3 * (deadline - time.time()))
        try:
            page.wait_for_function(
                "() => window.__bench.knnAt !== null && window.__bench.marksAt !== null", polling=100, timeout=left_ms
            )
        except PlaywrightTimeout:
            raise SystemExit(f"a session did not update within {timeout_s} s") from None
        times.append(page.evaluate("() => [window.__bench.knnAt - window.__bench.keyAt, "
                                   "window.__bench.marksAt - window.__bench.keyAt]"))  # fmt: skip
    return [knn for knn, _ in times], [marks for _, marks in times]


def stop_busy(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait(timeout=10)
    processes.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--moves", type=int, default=5, help="rounds of moves (each session moves once per round)")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to watch the server after closing")
    parser.add_argument("--busy", type=int, default=0, help="busy processes running during the rounds")
    parser.add_argument("--out", default=str(ROOT / "results" / "sessions.md"))
    args = parser.parse_args()

    busy: list[subprocess.Popen] = []
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
            knn_ms, marks_ms, peak_mb, peak_threads = [], [], baseline_mb, baseline_threads
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
            cpu_before, started = cpu_seconds(server.pid), time.perf_counter()
            for round_ in range(args.moves):
                times, marks = move_all(pages)
                knn_ms += times
                marks_ms += marks
                memory, threads = server_stats(server.pid)
                peak_mb, peak_threads = max(peak_mb, memory), max(peak_threads, threads)
                print(
                    f"round {round_ + 1}: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms "
                    f"(marks {statistics.median(marks):.0f} ms); "
                    f"server {memory:.0f} MB, {threads} threads",
                    flush=True,
                )
                time.sleep(0.3)
            cpu_after, elapsed = cpu_seconds(server.pid), time.perf_counter() - started
            stop_busy(busy)
            server_cpu, browser_cpu, harness_cpu = (after - before for after, before in zip(cpu_after, cpu_before))
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
        stop_busy(busy)
        stop_app(server)
    per_session = (peak_mb - baseline_mb) / args.sessions
    median, marks_median = statistics.median(knn_ms), statistics.median(marks_ms)
    rows = [
        (
            "median key press -> kNN (ms)",
            f"{median:.0f} (min-max {min(knn_ms):.0f}-{max(knn_ms):.0f})",
            "<= 300",
            median <= 300,
        ),
        (
            "median key press -> marks over the charts followed (ms)",
            f"{marks_median:.0f} (min-max {min(marks_ms):.0f}-{max(marks_ms):.0f})",
            "<= 150",
            marks_median <= 150,
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
        (
            "CPU per move and session: server / chromium / benchmark driver (ms)",
            f"{1e3 * server_cpu / len(knn_ms):.0f} / {1e3 * browser_cpu / len(knn_ms):.0f} / "
            f"{1e3 * harness_cpu / len(knn_ms):.0f} "
            f"(of {1e3 * elapsed * (os.cpu_count() or 1) / len(knn_ms):.0f} "
            "core-ms available)",
            "",
            True,
        ),
    ]
    lines = [
        f"# {args.sessions} concurrent browser sessions on one server (embedded backbone, filled landscape)",
        "",
        f"`python benchmarks/bench_sessions.py --sessions {args.sessions} --moves {args.moves} --busy {args.busy}` · "
        f"{platform.machine()}, {os.cpu_count()} CPU cores · one chromium, one context per session; each round "
        "presses ArrowRight in every session back to back; timings from performance.now() inside each page.",
        "",
        "| what | measured | target | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {what} | {value} | {target} | {'yes' if met else 'NO'} |" for what, value, target, met in rows]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
