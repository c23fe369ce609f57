"""Open a published asv site in headless Chromium (Playwright driving Debian's /usr/bin/chromium) from localhost:
plotted points per series of a benchmark's graph, JavaScript errors, and a screenshot. Shared by the site tests."""

import functools
import http.server
import os
import pathlib
import threading

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def require_chromium() -> None:
    if not pathlib.Path(CHROMIUM).exists():
        if os.environ.get("KVBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
        pytest.skip(f"needs {CHROMIUM} (apt-get install chromium)")


def graph_points(site: pathlib.Path, benchmark: str, screenshot: pathlib.Path) -> tuple[list[int], list[str]]:
    """(points plotted per series of `benchmark`'s graph, JavaScript errors), keeping a screenshot."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    errors = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/#{benchmark}")
            page.wait_for_selector("#main-graph canvas.flot-base", timeout=30000)
            page.wait_for_function("() => $('#main-graph').data('plot') !== undefined", timeout=30000)
            points = page.evaluate(
                "() => $('#main-graph').data('plot').getData()"
                ".map(s => s.data.filter(d => d && d[1] !== null).length)")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
            browser.close()
    finally:
        server.shutdown()
    return points, errors
