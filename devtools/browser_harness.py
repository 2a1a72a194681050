"""Real-browser plumbing shared by ``tests/test_browser.py`` and ``benchmarks/bench_browser_slider.py``:
Debian's chromium under Playwright, and ``streamlit run app.py`` on a free port.

Playwright's own browser download does not work offline, so the system chromium is launched with the
flags a headless container needs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright):
    """Debian's chromium, headless, through a ``sync_playwright()`` handle."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(port: int, log_path: Path, timeout_s: float = 120.0) -> subprocess.Popen | None:
    """``streamlit run app.py`` on ``port``, output to ``log_path`` (an unread pipe fills up with warnings and
    blocks the server); the server once its health check answers, or None (server killed) after ``timeout_s``."""
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
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log.close()  # the child keeps its own descriptor
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status == 200:
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    server.wait(timeout=30)
    return None


def stop_app(server: subprocess.Popen) -> None:
    """Terminate, then kill if a slider move still computing on a loaded machine delays the shutdown."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)


def server_stats(pid: int) -> tuple[float, int]:
    """(resident memory in MB, thread count) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def server_stats_at_rest(url: str, pid: int) -> tuple[float, int]:
    """(resident MB, threads) of the app server after one plain page request.

    The server (uvicorn/starlette under Streamlit) serves files from anyio's worker-thread pool, which
    keeps idle workers until the next request prunes those idle for 10 s or more; without a request
    the count measures how busy the server was, not what departed sessions still hold.
    """
    urllib.request.urlopen(url.rstrip("/") + "/", timeout=30).read()
    time.sleep(1.0)
    return server_stats(pid)


def misplacement_js(box_selector: str) -> str:
    """A page function ``(root) => [[class, dx, dy], ...]`` (``root``: the document when not given): px
    between each mark laid over a chart (ui/instant_cards.js draws them) and where plotly draws its data: a
    star or cross at its (x, y), a keep boundary at its x and its block's row centre, a bar's centre x and
    its top edge. ``box_selector`` finds the element holding a chart and its overlay."""
    return """(root) => [...(root || document).querySelectorAll('.chart-overlay > [data-x]')].map((mark) => {
    const plot = mark.closest(BOX).querySelector('.js-plotly-plot');
    const xa = plot._fullLayout.xaxis, ya = plot._fullLayout.yaxis, box = plot.getBoundingClientRect();
    const r = mark.getBoundingClientRect();
    const x = parseFloat(mark.dataset.x);
    const dx = r.left + r.width / 2 - (box.left + xa._offset + xa.d2p(x));
    if (mark.dataset.top !== undefined) {
        return [mark.className, dx, r.top - (box.top + ya._offset + ya.d2p(parseFloat(mark.dataset.top)))];
    }
    const row = [...mark.parentNode.querySelectorAll('.' + mark.className)].indexOf(mark);
    const y = mark.dataset.y !== undefined ? parseFloat(mark.dataset.y) : row;
    return [mark.className, dx, r.top + r.height / 2 - (box.top + ya._offset + ya.d2p(y))];
})""".replace("BOX", json.dumps(box_selector))
