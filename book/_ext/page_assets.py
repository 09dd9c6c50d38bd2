"""Sphinx extension: include each inline script only once per page.

With Jupyter Book 1 on Sphinx 7.4, inline scripts that extensions add after the HTML builder
started (sphinx-thebe's ``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector) reach
the page twice: once from the builder, once re-added from the registry with ``''`` instead of
``None`` as file name. The second ``const`` declaration is a JavaScript SyntaxError in every
page's console. This handler drops the duplicates (same file name, ``None``/``''`` alike, and
same attributes, the body included) before the page is written, keeping the first occurrence.

Enabled from ``_config.yml`` (``sphinx.local_extensions``).
"""
from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx


def _key(script: Any) -> tuple:
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {}) or {}
    return (filename, tuple(sorted((k, str(v)) for k, v in attributes.items() if k != "priority")))


def _dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any],
                    doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # the builder restores its own list after the page


def setup(app: Sphinx) -> dict[str, Any]:
    # run after every other html-page-context handler (myst-nb adds per-page scripts there)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
