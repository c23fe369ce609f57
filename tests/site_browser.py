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


def _serve(site: pathlib.Path):
    """A local HTTP server of `site` in a thread; returns it (shut it down after)."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _page(p, errors: list):
    """(browser, page): headless Chromium whose console and page errors are appended to `errors`."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return browser, page


def graph_points(site: pathlib.Path, benchmark: str, screenshot: pathlib.Path) -> tuple[list[int], list[str]]:
    """(points plotted per series of `benchmark`'s graph, JavaScript errors), keeping a screenshot."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    server = _serve(site)
    errors = []
    try:
        with sync_playwright() as p:
            browser, page = _page(p, errors)
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


# Every chart <img> of the page, loaded: its size and the pixels of it that are not white (drawn on a canvas).
DRAWN = """() => Array.from(document.images).map(img => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    let inked = 0, colored = 0;
    if (img.naturalWidth > 0) {
        const ctx = c.getContext('2d');
        ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, c.width, c.height);
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) inked++;
            if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) colored++;
        }
    }
    return {src: img.getAttribute('src'), width: img.naturalWidth, complete: img.complete, inked, colored};
})"""

# asv's graph page: the buttons chosen in each parameter panel, and the points of each plotted series.
ASV_STATE = """() => {
    const chosen = {};
    $('#graphdisplay-navigation-params .panel').each(function () {
        const name = $(this).find('.panel-heading').first().text().trim();
        chosen[name] = $(this).find('a.btn.active').map(function () { return $(this).text().trim(); }).get();
    });
    const plot = $('#main-graph').data('plot');
    const series = plot.getData().map(s => ({label: s.label || '',
                                             points: s.data.filter(d => d && d[1] !== null).length}));
    return {chosen, series, hash: decodeURIComponent(window.location.hash)};
}"""


def landing_page(site: pathlib.Path, screenshot: pathlib.Path, follow: int = 0) -> dict:
    """Open kvbench.html of a published site in headless Chromium with every <details> open: JavaScript errors
    (console and page), each chart image's load and drawn pixels, a full-page screenshot; then follow the page's
    `follow`-th link into asv's graph and read what asv selected and plotted."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    server = _serve(site)
    errors, failed = [], []
    try:
        with sync_playwright() as p:
            browser, page = _page(p, errors)
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            base = f"http://127.0.0.1:{server.server_address[1]}/"
            page.goto(base + "kvbench.html")
            page.evaluate("() => { document.querySelectorAll('details').forEach(d => d.open = true);"
                          " document.querySelectorAll('img').forEach(i => i.loading = 'eager'); }")
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=30000)
            images = page.evaluate(DRAWN)
            links = page.eval_on_selector_all("a.asv-link", "els => els.map(e => e.getAttribute('href'))")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.evaluate("() => document.querySelectorAll('details.numbers').forEach(d => d.open = false)")
            page.screenshot(path=str(screenshot), full_page=True)
            landing_errors, landing_failed = list(errors), list(failed)
            asv = None
            if links:
                page.locator("a.asv-link").nth(follow).click()
                page.wait_for_url("**/index.html#*", timeout=30000)
                page.wait_for_selector("#main-graph canvas.flot-base", timeout=30000)
                page.wait_for_function("() => $('#main-graph').data('plot') !== undefined"
                                       " && $('#main-graph').data('plot').getData().length > 0", timeout=30000)
                asv = page.evaluate(ASV_STATE)
                asv["url"] = page.url
                page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-asv.png")))
            back = page.eval_on_selector_all("#nav a[href='kvbench.html']", "els => els.length") if asv else 0
            browser.close()
    finally:
        server.shutdown()
    return {"errors": landing_errors, "failed_requests": landing_failed, "images": images, "links": links,
            "asv": asv, "asv_errors": errors[len(landing_errors):], "nav_links": back}
