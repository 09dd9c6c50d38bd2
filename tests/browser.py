"""Helpers for the headless-browser checks of the built book (Selenium + Debian Chromium).

* :func:`find_chromium` locates the browser and its driver (Debian ``chromium`` and
  ``chromium-driver``; ``$CHROMIUM`` / ``$CHROMEDRIVER`` override) without Selenium Manager,
  which would try to download a browser.
* :func:`serve_directory` serves a folder on ``127.0.0.1`` (an ephemeral port) from a thread.
* :func:`start_chromium` starts headless Chromium with browser-console logging, and with every
  host name except ``127.0.0.1``/``localhost`` unresolvable, so a page that needs a CDN fails
  here exactly as it would for a reader offline.
* :func:`inspect_page` loads one page, waits for MathJax and the widget embedder, and returns
  what the tests assert on (:class:`PageReport`); :func:`save_full_screenshot` saves a PNG of
  the whole page.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER_NAMES = ("chromedriver",)
DEBIAN_DRIVER = "/usr/lib/chromium/chromedriver"

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,900",
    # offline like a reader on a plane: only the local server resolves
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
)


def find_chromium() -> tuple[str | None, str | None, str]:
    """Return ``(browser, driver, reason)``; ``reason`` says what is missing ('' if nothing)."""
    browser = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if driver is None and os.path.exists(DEBIAN_DRIVER):
        driver = DEBIAN_DRIVER
    missing = []
    if browser is None:
        missing.append("a Chromium browser (Debian package 'chromium'; or set $CHROMIUM)")
    if driver is None:
        missing.append("chromedriver (Debian package 'chromium-driver'; or set $CHROMEDRIVER)")
    return browser, driver, ("missing " + " and ".join(missing)) if missing else ""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def serve_directory(root: str | os.PathLike) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1; yields the base URL (ending in '/')."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def start_chromium(browser: str, driver: str):
    """A headless Chromium WebDriver that records the browser console (all levels)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    web = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    web.set_page_load_timeout(60)
    web.set_script_timeout(60)
    return web


@dataclasses.dataclass
class PageReport:
    """What one loaded page shows. Counts are of DOM elements after rendering settled."""

    url: str
    title: str
    console: list[dict[str, Any]]          # browser console entries (level, message)
    images: list[dict[str, Any]]           # {src, complete, naturalWidth}
    math_sources: int                      # elements Sphinx marked as math (class "math")
    math_rendered: int                     # MathJax output containers (mjx-container)
    math_errors: int                       # MathJax error nodes (mjx-merror)
    mathjax_loaded: bool
    widget_states: int                     # embedded widget-state scripts
    widget_views: int                      # widget views rendered by the embedder
    resources: list[str]                   # URLs the page fetched (Resource Timing)
    broken_fonts: list[str] = dataclasses.field(default_factory=list)  # @font-face URLs that do not load
    figures: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {src, shown, natural} widths, px
    scrolled: list[str] = dataclasses.field(default_factory=list)  # outputs/equations wider than their box
    folded: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # hide-input cells: {input_shown, figures}

    def shrunk_figures(self, below: float = 0.7) -> list[str]:
        """Figures shown at less than ``below`` of their natural width (illegible ticks)."""
        return [f"{f['src'].rsplit('/', 1)[-1]} at {f['shown'] / f['natural']:.0%} of its width"
                for f in self.figures if f["natural"] > 0 and f["shown"] < below * f["natural"]]

    @property
    def severe(self) -> list[str]:
        return [e["message"] for e in self.console if e.get("level") == "SEVERE"]

    @property
    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images if not (i["complete"] and i["naturalWidth"] > 0)]


_WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const hasMath = document.querySelector('.math') !== null;
if (!hasMath) { done(false); return; }
const start = Date.now();
(function poll() {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(() => done(true), () => done(false));
  } else if (Date.now() - start > 30000) {
    done(false);
  } else {
    setTimeout(poll, 100);
  }
})();
"""

_LOAD_IMAGES = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach(i => { i.loading = 'eager'; });  // lazy images load without scrolling
Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
  i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 15000);
}))).then(() => done(imgs.map(i => ({src: i.currentSrc || i.src, complete: i.complete,
                                     naturalWidth: i.naturalWidth}))));
"""

_LEGIBILITY = """
// figures of the content (not logos): shown vs natural width, in CSS pixels (the page's images
// are PNGs saved at 1 image pixel per CSS pixel); and output blocks or display equations whose
// content is wider than their box (the reader has to scroll sideways)
const main = document.querySelector('main') || document.body;
const figures = Array.from(main.querySelectorAll('img')).filter(i => i.src.includes('_images/')).map(
  i => ({src: i.currentSrc || i.src, shown: i.getBoundingClientRect().width, natural: i.naturalWidth}));
// outputs of code cells and display equations (code inputs and code blocks in the prose may scroll)
const boxes = Array.from(main.querySelectorAll('div.cell_output pre, mjx-container[display="true"]'))
  .filter(b => !b.closest('.cell_input'));
const scrolled = Array.from(boxes).filter(b => b.scrollWidth > b.clientWidth + 2).map(
  b => (b.textContent || '').trim().slice(0, 60));
return {figures, scrolled};
"""

_FOLDING = """
// cells tagged hide-input: is their code hidden until a click, and are their figures still shown?
return Array.from(document.querySelectorAll('div.cell.tag_hide-input')).map(cell => {
  const input = cell.querySelector('.cell_input');
  // a closed <details> keeps its content laid out but skipped (content-visibility): ask checkVisibility
  return {input_shown: !!input && input.checkVisibility({contentVisibilityAuto: true, visibilityProperty: true}),
          figures: Array.from(cell.querySelectorAll('.cell_output img')).map(i => i.getBoundingClientRect().width)};
});
"""

_COUNTS = """
return {
  math_sources: document.querySelectorAll('.math').length,
  math_rendered: document.querySelectorAll('mjx-container').length,
  math_errors: document.querySelectorAll('mjx-merror').length,
  mathjax_loaded: !!(window.MathJax && window.MathJax.startup),
  widget_states: document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]').length,
  widget_views: document.querySelectorAll('.jupyter-widgets').length,
  resources: performance.getEntriesByType('resource').map(e => e.name),
  title: document.title,
};
"""


_CHECK_FONT_FACES = """
const done = arguments[arguments.length - 1];
// the first url() of every @font-face rule (the format a browser fetches first), resolved against
// its stylesheet; a rule whose file is missing breaks icons as soon as the browser picks it
const urls = new Set();
function walk(rules, base) {
  for (const rule of rules) {
    if (rule instanceof CSSFontFaceRule) {
      const m = (rule.style.getPropertyValue('src') || '').match(/url\\(\\s*["']?([^"')]+)["']?\\s*\\)/);
      if (m && !m[1].startsWith('data:')) { urls.add(new URL(m[1], base).href); }
    } else if (rule.cssRules) {
      walk(rule.cssRules, base);
    }
  }
}
for (const sheet of document.styleSheets) {
  try { walk(sheet.cssRules, sheet.href || document.baseURI); } catch (e) { /* other origin */ }
}
Promise.all(Array.from(urls).map(u => fetch(u, {method: 'HEAD'}).then(r => r.ok ? null : u, () => u)))
  .then(results => done(results.filter(u => u !== null)));
"""


def inspect_page(web, url: str, *, widget_timeout: float = 30.0) -> PageReport:
    """Load ``url`` and wait for MathJax and widget rendering; report what the page shows."""
    web.get_log("browser")  # drop entries left by the previous page
    web.get(url)
    web.execute_async_script(_WAIT_FOR_MATHJAX)
    images = web.execute_async_script(_LOAD_IMAGES)
    counts = web.execute_script(_COUNTS)
    deadline = time.monotonic() + widget_timeout
    while counts["widget_states"] and not counts["widget_views"] and time.monotonic() < deadline:
        time.sleep(0.25)
        counts = web.execute_script(_COUNTS)
    broken_fonts = web.execute_async_script(_CHECK_FONT_FACES)
    legibility = web.execute_script(_LEGIBILITY)
    folded = web.execute_script(_FOLDING)
    time.sleep(0.3)  # late console messages (e.g. a failing script loaded at the end)
    console = web.get_log("browser")
    return PageReport(url=url, title=counts.pop("title"), console=console, images=images,
                      broken_fonts=broken_fonts, folded=folded, **counts, **legibility)


def save_full_screenshot(web, path: str | os.PathLike, *, max_height: int = 10000,
                         overlap: int = 200) -> list[Path]:
    """Save PNGs of the whole page: the window is made as tall as the page, then restored.

    A page taller than ``max_height`` pixels is saved in parts, ``path`` first and then
    ``<stem>-2.png``, ``<stem>-3.png``, ... (each part overlaps the previous one by
    ``overlap`` pixels, which the theme's sticky header covers), so long chapters are captured
    to the end. Returns the paths written.
    (DevTools' ``captureBeyondViewport`` mis-places the theme's sticky sidebars.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = web.get_window_size()
    height = int(web.execute_script(
        "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight);"))
    chrome = max(0, int(size["height"]) - int(web.execute_script("return window.innerHeight;")))
    window = min(height + chrome, max_height)
    paths: list[Path] = []
    try:
        web.set_window_size(size["width"], window)
        time.sleep(0.3)  # let the layout settle
        view = int(web.execute_script("return window.innerHeight;"))
        top, part = 0, 1
        while True:
            web.execute_script("window.scrollTo(0, arguments[0]);", top)
            time.sleep(0.15)
            target = path if part == 1 else path.with_name(f"{path.stem}-{part}{path.suffix}")
            web.save_screenshot(str(target))
            paths.append(target)
            if top + view >= height or view <= overlap:
                break
            top, part = top + view - overlap, part + 1
    finally:
        web.execute_script("window.scrollTo(0, 0);")
        web.set_window_size(size["width"], size["height"])
    return paths
