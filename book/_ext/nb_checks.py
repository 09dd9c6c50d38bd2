"""Sphinx extension: refuse to publish notebooks whose stored outputs show a failure.

The book renders the notebooks' *stored* outputs (``execute_notebooks: off``), so a notebook
saved after a crash would otherwise be published with a traceback in it. For every notebook
page this extension reads the source and emits a Sphinx warning (an error under ``-W``) for

* each code cell with an ``error`` output, unless the cell is tagged ``raises-exception``
  (the nbval/papermill tag for an exception shown on purpose);
* a notebook with code cells but no stored output at all (saved without being executed).

Enabled from ``_config.yml`` (``sphinx.local_extensions``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

ALLOWED_ERROR_TAG = "raises-exception"


def notebook_problems(notebook: dict[str, Any]) -> list[str]:
    """Describe the failures visible in a notebook's stored outputs (empty list: none)."""
    problems: list[str] = []
    code_cells = [c for c in notebook.get("cells", []) if c.get("cell_type") == "code"]
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if ALLOWED_ERROR_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(
                    f"cell {index} (execution count {cell.get('execution_count')}) has a stored "
                    f"error output: {output.get('ename', '?')}: {output.get('evalue', '')}"
                )
    if code_cells and not any(c.get("outputs") for c in code_cells):
        problems.append("no code cell has a stored output (was the notebook saved unexecuted?)")
    return problems


def _check_source(app: Sphinx, docname: str, source: list[str]) -> None:
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".ipynb":
        return
    try:
        notebook = json.loads(source[0])
    except ValueError as err:
        logger.warning("cannot parse notebook %s: %s", path.name, err, location=docname)
        return
    for problem in notebook_problems(notebook):
        logger.warning("notebook %s: %s", path.name, problem, location=docname)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _check_source)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
