"""Check the internal links of a built HTML site (the Jupyter Book in ``_build/html``).

For every ``.html`` page, every ``href``/``src`` that stays inside the site must point to a
file that exists, and a ``#fragment`` must name an element id (or anchor name) of the target
page. Resources that pages *load* (``<script src>``, ``<img src>``, stylesheets, ...) must
not come from another host: the book works offline. Links to other sites (``<a href="https:
...">``) are not fetched.

Usage::

    python scripts/check_links.py [_build/html]     # exit status 1 and a list when broken
"""
from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

EXTERNAL_SCHEMES = {"http", "https", "mailto", "ftp", "tel", "javascript", "data"}
# (tag, attribute) pairs whose URL the browser fetches while loading the page
LOADED = {("script", "src"), ("img", "src"), ("iframe", "src"), ("source", "src"),
          ("video", "src"), ("audio", "src"), ("embed", "src"), ("link", "href")}
LINK_RELS_NOT_LOADED = {"canonical", "alternate", "next", "prev", "index", "search", "author",
                        "license", "help", "bookmark"}


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str, bool]] = []  # (tag, attr, url, loaded)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v is not None}
        for key in ("id", "name") if tag == "a" else ("id",):
            if key in a:
                self.ids.add(a[key])
        for attr in ("href", "src"):
            if attr not in a:
                continue
            loaded = (tag, attr) in LOADED
            if tag == "link":
                rels = set(a.get("rel", "").lower().split())
                loaded = not rels or not rels <= LINK_RELS_NOT_LOADED
            self.links.append((tag, attr, a[attr].strip(), loaded))


def _parse(path: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def _pages(root: Path) -> list[Path]:
    """The site's pages: every .html file except theme template fragments under _static/."""
    return [p for p in sorted(root.rglob("*.html")) if "_static" not in p.relative_to(root).parts]


def check_site(root: str | Path) -> list[str]:
    """Return one message per broken internal link or external loaded resource (empty: OK)."""
    root = Path(root).resolve()
    if not (root / "index.html").is_file():
        return [f"{root}: no index.html (is this a built site?)"]
    pages = {p.resolve(): _parse(p) for p in _pages(root)}
    problems: list[str] = []
    for page, parsed in pages.items():
        rel_page = page.relative_to(root).as_posix()
        for tag, attr, url, loaded in parsed.links:
            if not url:
                problems.append(f"{rel_page}: empty {tag} {attr}")
                continue
            parts = urlsplit(url)
            if parts.scheme or parts.netloc:
                if loaded and parts.scheme not in ("data", "javascript"):
                    problems.append(f"{rel_page}: <{tag} {attr}> loads an external resource {url}")
                if parts.scheme and parts.scheme not in EXTERNAL_SCHEMES:
                    problems.append(f"{rel_page}: unknown URL scheme in {url}")
                continue
            if parts.path.startswith("/"):
                problems.append(f"{rel_page}: root-absolute link {url} breaks when the site is not served at /")
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            try:
                target.relative_to(root)
            except ValueError:
                problems.append(f"{rel_page}: {url} points outside the site")
                continue
            if not target.is_file():
                problems.append(f"{rel_page}: {url} -> missing {target.relative_to(root).as_posix()}")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if fragment not in ids:
                    problems.append(f"{rel_page}: {url} -> no element with id {fragment!r} "
                                    f"in {target.relative_to(root).as_posix()}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "_build/html")
    problems = check_site(root)
    for line in problems:
        print(line)
    n_pages = len(_pages(root.resolve())) if root.is_dir() else 0
    print(f"{n_pages} pages checked, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
