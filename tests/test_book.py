"""The Jupyter Book: built like software.

* It builds with warnings as errors and nitpicky references (``-W -n``), from the notebooks'
  stored outputs, in under 3 minutes, into ``_build/html`` (the same place as ``make book``),
  with one page per table-of-contents entry and the figures of every chapter.
* The build fails when a notebook stores an error output, and when a reference is broken
  (both shown by planting one in a temporary copy).
* No internal link of the built site is broken and no page loads anything from another host.
* In headless Chromium (marker ``browser``) the landing page and every chapter load without
  console errors, with every image decoded, the mathematics typeset by MathJax and the
  widgets rendered, every figure shown at 70 % of its natural width or more and no output or
  display equation wider than its box; screenshots go to ``test-artifacts/screenshots/``.

The book is built once per test session (module-scoped fixture).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "test-artifacts"
BUILD_LIMIT_S = 180
BUILD_FLAGS = ["-W", "-n", "--keep-going", "--all"]
# what a copy of the book needs (planted-failure builds)
BOOK_SOURCES = ["_config.yml", "_toc.yml", "references.bib", "book", "notebooks"]
COPY_IGNORE = shutil.ignore_patterns("_build", ".ipynb_checkpoints", "__pycache__", "summaries")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402  (tests/browser.py)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_links = _load("check_links", ROOT / "scripts" / "check_links.py")
nb_checks = _load("nb_checks", ROOT / "book" / "_ext" / "nb_checks.py")


# ----------------------------------------------------------------------------- helpers
def toc_files(root: Path = ROOT) -> list[str]:
    """Every file named in _toc.yml (root first), without suffix, in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return files


def chapter_notebooks(root: Path = ROOT) -> list[str]:
    return [f for f in toc_files(root) if f.startswith("notebooks/")]


def jupyter_book() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    found = str(exe) if exe.exists() else shutil.which("jupyter-book")
    if found is None:
        pytest.fail("jupyter-book is not installed in this environment (pip install -e .)")
    return found


def build(source: Path) -> tuple[int, str, float]:
    """Run the book build on ``source``; return (exit status, combined output, seconds)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    start = time.monotonic()
    proc = subprocess.run([jupyter_book(), "build", str(source), *BUILD_FLAGS], cwd=source,
                          capture_output=True, text=True, env=env, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


def copy_book(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in BOOK_SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=COPY_IGNORE)
        else:
            shutil.copy2(src, dest / name)
    return dest


def warnings_of(log: str) -> list[str]:
    return [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.scripts: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "script":
            self.scripts.append(dict(attrs))


def tags_of(page: Path) -> _Tags:
    parser = _Tags()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@dataclasses.dataclass
class Built:
    html: Path
    log: str
    seconds: float


@pytest.fixture(scope="module")
def book() -> Built:
    missing = [f for f in toc_files() if not any((ROOT / (f + s)).exists() for s in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml names files that do not exist: {missing}"
    status, log, seconds = build(ROOT)
    if status != 0:
        pytest.fail("the book build failed (jupyter-book build . -W -n --keep-going):\n"
                    + "\n".join(warnings_of(log)[-40:] or log.splitlines()[-40:]))
    return Built(HTML, log, seconds)


# ----------------------------------------------------------------------------- the build
def test_book_builds_from_stored_outputs_with_warnings_as_errors(book):
    assert (book.html / "index.html").is_file()
    assert not warnings_of(book.log), warnings_of(book.log)
    assert book.seconds < BUILD_LIMIT_S, f"book build took {book.seconds:.0f} s (limit {BUILD_LIMIT_S} s)"


def test_execution_is_off_in_the_configuration():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"


def test_one_page_per_toc_entry_and_every_chapter_shows_figures(book):
    for name in toc_files():
        assert (book.html / f"{name}.html").is_file(), f"no page for {name}"
    chapters = chapter_notebooks()
    assert len(chapters) == 5, chapters
    for name in chapters:
        imgs = tags_of(book.html / f"{name}.html").imgs
        figures = [i for i in imgs if "_images/" in i.get("src", "")]
        assert figures, f"{name}: no figure rendered (were the notebook's figures stored?)"


def test_landing_page_shows_the_headline_figure(book):
    imgs = tags_of(book.html / "book" / "index.html").imgs
    assert any("_images/" in i.get("src", "") for i in imgs), "headline figure (nb04_fig_headline) missing"
    for img in imgs:
        if "_images/" in img.get("src", ""):
            assert (book.html / "book" / img["src"]).resolve().is_file()


def test_widget_pages_embed_their_state_and_load_the_embedder_locally(book):
    for name in chapter_notebooks():
        notebook = json.loads((ROOT / f"{name}.ipynb").read_text())
        state = notebook.get("metadata", {}).get("widgets", {}).get(
            "application/vnd.jupyter.widget-state+json", {}).get("state")
        scripts = tags_of(book.html / f"{name}.html").scripts
        sources = [s.get("src", "") for s in scripts]
        embedders = [s for s in sources if "embed-amd.js" in s]
        if state:
            assert any(s.get("type") == "application/vnd.jupyter.widget-state+json" for s in scripts), name
            assert len(embedders) == 1 and "_static/offline/" in embedders[0], (name, embedders)
        else:
            assert not embedders, f"{name} has no widget state but loads the widget embedder"


def test_every_script_is_included_once_per_page(book):
    for name in toc_files():
        sources = [s["src"].split("?")[0] for s in tags_of(book.html / f"{name}.html").scripts if s.get("src")]
        dupes = sorted({s for s in sources if sources.count(s) > 1})
        assert not dupes, f"{name}: scripts included more than once: {dupes}"


def test_internal_links_resolve_and_nothing_is_loaded_from_another_host(book):
    problems = check_links.check_site(book.html)
    assert not problems, "\n".join(problems[:50])


# ----------------------------------------------------------------------------- failures are caught
def test_build_fails_when_a_notebook_stores_an_error_output(tmp_path):
    copy = copy_book(tmp_path / "book")
    target = copy / f"{chapter_notebooks()[0]}.ipynb"
    notebook = json.loads(target.read_text())
    notebook["cells"].append({
        "cell_type": "code", "execution_count": 99, "id": "planted-error", "metadata": {},
        "source": "1 / 0",
        "outputs": [{"output_type": "error", "ename": "ZeroDivisionError",
                     "evalue": "planted by test_book", "traceback": ["ZeroDivisionError: planted by test_book"]}],
    })
    target.write_text(json.dumps(notebook, indent=1))
    status, log, _ = build(copy)
    assert status != 0, "the build passed although a notebook stores an error output"
    assert "ZeroDivisionError: planted by test_book" in log, "\n".join(warnings_of(log))


def test_build_fails_on_broken_references(tmp_path):
    copy = copy_book(tmp_path / "book")
    guide = copy / "book" / "guide.md"
    guide.write_text(guide.read_text() + (
        "\n\nPlanted: {ref}`planted-missing-label`, {doc}`planted_missing_page`, "
        "{cite:p}`planted_missing_key`.\n"))
    status, log, _ = build(copy)
    assert status != 0, "the build passed with broken references"
    found = "\n".join(warnings_of(log))
    for name in ("planted-missing-label", "planted_missing_page", "planted_missing_key"):
        assert name in found, f"no warning names {name}:\n{found}"


def test_notebook_check_flags_error_outputs_and_unexecuted_notebooks():
    ok = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [{"output_type": "stream", "text": "1"}]}]}
    assert nb_checks.notebook_problems(ok) == []
    error = {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": []}
    broken = {"cells": ok["cells"] + [{"cell_type": "code", "metadata": {}, "outputs": [error]}]}
    assert len(nb_checks.notebook_problems(broken)) == 1
    shown = {"cells": ok["cells"] + [{"cell_type": "code", "metadata": {"tags": ["raises-exception"]},
                                      "outputs": [error]}]}
    assert nb_checks.notebook_problems(shown) == []
    unexecuted = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": []}]}
    assert "no code cell has a stored output" in nb_checks.notebook_problems(unexecuted)[0]


def test_link_checker_reports_what_is_broken(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#here">ok</a><a href="sub/page.html#nowhere">bad anchor</a>'
        '<a href="missing.html">missing</a><a href="https://example.org/">external link, fine</a>'
        '<script src="https://cdn.example.org/x.js"></script><img src="sub/pic.png">')
    (tmp_path / "sub" / "page.html").write_text('<h1 id="here">x</h1><a href="../index.html">up</a>')
    problems = check_links.check_site(tmp_path)
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    for needle in ("nowhere", "missing.html", "cdn.example.org", "pic.png"):
        assert needle in joined


# ----------------------------------------------------------------------------- the guide's code runs
def _guide_snippet(name: str) -> str:
    text = (ROOT / "book" / "guide.md").read_text()
    match = re.search(r"```\{code-block\} python\n:name: " + re.escape(name) + r"\n\n(.*?)```", text, re.S)
    assert match, f"code block {name!r} not found in book/guide.md"
    return match.group(1)


@pytest.mark.slow
def test_guide_quickstart_runs_as_printed(tmp_path):
    # one thread: on a shared 2-core CI machine, two OpenMP threads competing with other
    # processes make these tiny convolutions ten times slower (seconds become a minute)
    code = "import torch\ntorch.set_num_threads(1)\n" + _guide_snippet("guide-quickstart")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = proc.stdout.strip().splitlines()[-1]
    assert "accuracy" in result, proc.stdout


# ----------------------------------------------------------------------------- headless Chromium
@pytest.mark.browser
def test_pages_render_in_headless_chromium(book):
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    chromium, driver, missing = browser.find_chromium()
    if missing:
        pytest.skip(f"headless browser check skipped: {missing}")
    shots = ARTIFACTS / "screenshots"
    if shots.exists():
        shutil.rmtree(shots)
    pages = toc_files()
    failures: list[str] = []
    with browser.serve_directory(book.html) as base:
        web = browser.start_chromium(chromium, driver)
        try:
            for name in pages:
                report = browser.inspect_page(web, f"{base}{name}.html")
                saved = browser.save_full_screenshot(web, shots / f"{name.replace('/', '__')}.png")
                failures += [f"{name}: empty screenshot {p.name}" for p in saved if p.stat().st_size == 0]
                failures += [f"{name}: {p}" for p in _page_problems(name, report, base)]
        finally:
            web.quit()
    assert not failures, "\n".join(failures)


def _page_problems(name: str, report: browser.PageReport, base: str) -> list[str]:
    problems = [f"console error: {m}" for m in report.severe]
    problems += [f"image did not load: {src}" for src in report.broken_images]
    problems += [f"font of an @font-face rule does not load: {src}" for src in report.broken_fonts]
    problems += [f"fetched from another host: {u}" for u in report.resources if not u.startswith(base)]
    is_landing = name == toc_files()[0]
    if name.startswith("notebooks/") or is_landing:
        if not report.images:
            problems.append("no image on the page")
    if is_landing and report.math_sources == 0:
        problems.append("the landing page shows no mathematics (the FTS formula?)")
    if report.math_sources:
        if not report.mathjax_loaded:
            problems.append("MathJax did not load")
        if report.math_rendered < report.math_sources:
            problems.append(f"only {report.math_rendered} of {report.math_sources} formulas typeset")
        if report.math_errors:
            problems.append(f"{report.math_errors} MathJax errors")
    if report.widget_states and not report.widget_views:
        problems.append("widget state embedded but no widget rendered")
    if name.startswith("notebooks/"):  # plotting and bookkeeping code is folded; its figures still show
        notebook = json.loads((ROOT / f"{name}.ipynb").read_text())
        tagged = sum("hide-input" in c.get("metadata", {}).get("tags", []) for c in notebook["cells"])
        if len(report.folded) != tagged or not tagged:
            problems.append(f"{len(report.folded)} folded cells on the page, {tagged} tagged hide-input")
        problems += [f"folded cell {i} shows its code" for i, c in enumerate(report.folded) if c["input_shown"]]
        problems += [f"figure of folded cell {i} not shown" for i, c in enumerate(report.folded)
                     if any(w <= 0 for w in c["figures"])]
        if not any(c["figures"] for c in report.folded):
            problems.append("no figure in a folded cell")
    problems += [f"figure too small to read: {f}" for f in report.shrunk_figures(0.7)]
    problems += [f"output or equation scrolls sideways: {t!r}" for t in report.scrolled]
    return problems


def test_make_book_copy_holds_every_folder_the_notebooks_read():
    """`make book` executes the notebooks in _build/book-src: every top-level folder a notebook
    reads as ``../<folder>/...`` (results, sweep files) must be copied or linked there."""
    script = (ROOT / "scripts" / "book.sh").read_text()
    provided = set(re.findall(r'ln -s "\$PWD/([\w.-]+)"', script))
    provided |= {w for line in re.findall(r"^cp -r (.*) \"\$src/\"$", script, re.M) for w in line.split()}
    read = {m for nb in (ROOT / "notebooks").glob("[0-9]*.ipynb")
            for m in re.findall(r"\.\./([A-Za-z_][\w-]*)/", nb.read_text())}
    assert read, "no ../folder/ path found in the notebooks: the pattern is stale"
    missing = sorted(read - provided - {"notebooks"})
    assert not missing, f"scripts/book.sh does not put {missing} beside the executed notebooks"
