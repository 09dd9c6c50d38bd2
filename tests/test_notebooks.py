"""The chapter notebooks as a user runs them with papermill: parameters, the nbval rule, and the
training path of notebook 04 (its default only renders the committed results).

The smoke test of notebook 04 runs under the machine's default CPU kernels, and `make test`
runs it again under the alternative kernel setting (tests/alt_kernels.env): its checks must
pass under both.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
PAPERMILL = str(Path(sys.executable).with_name("papermill"))
ENV = {**os.environ, "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}


def _parameters_cell(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return cell


def _declared(path: Path) -> list[str]:
    return [node.target.id for node in ast.parse(_parameters_cell(path).source).body
            if isinstance(node, ast.AnnAssign)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_lists_every_parameter(path):
    import papermill

    seen = papermill.inspect_notebook(str(path))
    declared = _declared(path)
    assert declared and list(seen) == declared, sorted(set(declared) ^ set(seen))
    for name, info in seen.items():
        assert info["inferred_type_name"] != "None" or info["default"] == "None", (name, info)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_nbval_rule_and_every_notebook_compares_something(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    other = {"nbval-ignore-output", "nbval-skip", "nbval-raises-exception"}
    assert not [c.source[:40] for c in code if other & set(c.metadata.get("tags", []))]
    assert not [c.source[:40] for c in code if "# NBVAL_" in c.source]
    assert any("nbval-check-output" in c.metadata.get("tags", []) for c in code), f"{path.name} compares nothing"
    assert all(c.execution_count is not None for c in code), f"{path.name} is not stored executed"


def test_an_unknown_parameter_stops_the_run_before_any_work(tmp_path):
    out = tmp_path / "out.ipynb"
    done = subprocess.run([PAPERMILL, str(ROOT / "notebooks" / "04_experiments.ipynb"), str(out), "--cwd",
                           str(ROOT / "notebooks"), "-k", "python3", "--no-progress-bar", "-p", "epoch", "1"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode != 0
    assert "unknown notebook parameter(s) 'epoch' (did you mean 'epochs'?)" in done.stderr
    nb = nbformat.read(out, as_version=4)
    failed = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    later = [c for c in nb.cells[failed[0] + 1:] if c.cell_type == "code" and c.get("outputs")]
    assert "check_parameters" in nb.cells[failed[0]].source and not later  # nothing ran after the check


def test_a_list_parameter_of_the_wrong_kind_is_named(tmp_path):
    done = subprocess.run([PAPERMILL, str(ROOT / "notebooks" / "04_experiments.ipynb"), str(tmp_path / "out.ipynb"),
                           "--cwd", str(ROOT / "notebooks"), "-k", "python3", "--no-progress-bar",
                           "-p", "sweep_files", "", "-p", "sparsities", "hello"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode != 0 and "notebook parameter sparsities: element 'hello' is not a float" in done.stderr


def test_notebook04s_small_grid_lands_in_a_folder_the_user_keeps():
    """Without results_dirs the training grid writes to ../results/04_experiments (kept, and
    ignored by git), never to a temporary folder that goes with the kernel."""
    nb = nbformat.read(ROOT / "notebooks" / "04_experiments.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "tempfile" not in code and "mkdtemp" not in code and "TemporaryDirectory" not in code
    assert 'results_dirs = ["../results/04_experiments"]' in code
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "results/04_experiments/cells/x.json"])
    assert ignored.returncode == 0 or not (ROOT / ".git").exists()


def test_notebook04_trains_a_small_grid_and_passes_its_checks(tmp_path):
    """The training path: a small digits grid given on the command line (comma lists included)."""
    out, summary = tmp_path / "out.ipynb", tmp_path / "summary.json"
    cmd = [PAPERMILL, str(ROOT / "notebooks" / "04_experiments.ipynb"), str(out), "--cwd", str(ROOT / "notebooks"),
           "-k", "python3", "--no-progress-bar", "-p", "sweep_files", "", "-p", "train", "True",
           "-p", "results_dirs", str(tmp_path / "grid"), "-p", "criteria", "fts,snip,random", "-p", "epochs", "1",
           "-p", "subset", "300",
           "-p", "score_samples", "32", "-p", "interactive", "False", "-p", "summary_json", str(summary),
           "-y", "sparsities: [0.9, 0.98]\nseeds: [0, 1]\nmilestones: [1]\nbatch_size: 64"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert len(list((tmp_path / "grid" / "cells").glob("*.json"))) == 14  # the results stay where the user said
    result = json.loads(summary.read_text())
    assert result["nb04_cells"] == result["nb04_cells_total"] == 3 * 2 * 2 + 2  # and the dense baseline
    assert result["nb04_differences"] == 2 * 2  # FTS − SNIP, FTS − Random at two sparsities
    text = "\n".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                     if c.cell_type == "code" for o in c.get("outputs", []))
    assert "[holds] every cell of the grid has a result" in text and "FAILS" not in text
