"""The committed sweep rows: every path in them is relative to the repository, and every row that
is not one of the 123 first ResNet18 cells names a clean checkout of a revision this repository has
(so a reader can check the code out and recompute it); scripts/import_cells.py keeps it so."""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from fts_core.io import upgrade_record

REPO = Path(__file__).resolve().parents[2]
SWEEPS = ("fashion_mnist_resnet18", "fashion_mnist_vgg19")
# the first 123 ResNet18 cells came from revisions that were never published (the chapter says so)
LEGACY_REVISIONS = {"53475698e1aa9fb888ce80edef23c87c0b7295ec", "b6d81a14ea"}


def _rows():
    for name in SWEEPS:
        for file in sorted((REPO / "results" / name / "cells").glob("*.json")):
            yield file, upgrade_record(json.loads(file.read_text()))


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_committed_rows_hold_no_absolute_path():
    for file, row in _rows():
        absolute = [s for s in _strings(row) if s.startswith("/") and "results/" in s]
        assert not absolute, f"{file.name}: {absolute[:2]}"
    for name in SWEEPS:
        csv = REPO / "results" / name / "results.csv"
        if csv.exists():
            assert "/work/" not in csv.read_text() and ",/" not in csv.read_text(), csv


def test_new_rows_name_a_clean_revision_of_this_repository():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    revisions = set()
    for file, row in _rows():
        made = row["provenance"]
        if any(made["git_revision"].startswith(r[:10]) for r in LEGACY_REVISIONS):
            continue
        assert made["git_dirty"] is False, file.name
        revisions.add(made["git_revision"])
    for rev in revisions:
        found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True)
        assert found.returncode == 0, f"revision {rev} of committed rows is not in this repository"


def _import_cells():
    spec = importlib.util.spec_from_file_location("import_cells", REPO / "scripts" / "import_cells.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_rewrites_paths_into_the_source_and_refuses_code_that_cannot_be_checked_out():
    mod = _import_cells()
    row = {"a": "/tmp/src/runs/x", "b": ["/tmp/src", "/tmp/srcother/y"], "c": {"d": 3}}
    assert mod.relative_paths(row, "/tmp/src", "results/s") == {
        "a": "results/s/runs/x", "b": ["results/s", "/tmp/srcother/y"], "c": {"d": 3}}
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    for layout in (lambda made: {"cell_id": "c", **made}, lambda made: {"cell_id": "c", "provenance": made}):
        assert mod.checkable(layout({"git_dirty": False, "git_revision": head})) is None
        assert "git_dirty" in mod.checkable(layout({"git_dirty": True, "git_revision": head}))
        assert "not in this repository" in mod.checkable(layout({"git_dirty": False, "git_revision": "0" * 40}))
