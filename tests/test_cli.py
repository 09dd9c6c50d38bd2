"""`python -m fts_core run|sweep` on bad input: one line that names the file and what is wrong,
exit status 2, no traceback, nothing written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BAD_FILES = {
    "malformed.yaml": (b"dataset: [digits\n", "is not valid YAML at line 2"),
    "empty.yaml": (b"", "is empty"),
    "image.png": (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not a text (YAML) file"),
    "list.yaml": (b"- dataset\n- digits\n", "must hold a mapping"),
}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fts_core", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def _assert_clean_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and all(n in line for n in needles), line


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_file_is_one_clear_line(tmp_path, command, name):
    content, message = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    _assert_clean_error(_cli(command, name, cwd=tmp_path), repr(name), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_missing_file_or_a_folder_is_named(tmp_path, command):
    (tmp_path / "folder").mkdir()
    _assert_clean_error(_cli(command, "missing.yaml", cwd=tmp_path), "'missing.yaml' does not exist")
    _assert_clean_error(_cli(command, "folder", cwd=tmp_path), "'folder' is a directory")


def test_an_out_dir_that_cannot_hold_runs_is_refused_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "c.yaml").write_text("dataset: digits\nwidth: 0.125\nepochs: 1\nout_dir: a_file\n")
    _assert_clean_error(_cli("run", "c.yaml", cwd=tmp_path), "/a_file' is a file")
    (tmp_path / "d.yaml").write_text("dataset: digits\nwidth: 0.125\nepochs: 1\nout_dir: a_file/runs\n")
    _assert_clean_error(_cli("run", "d.yaml", cwd=tmp_path), "is a file, not a folder")


def test_sweep_key_typos_and_grids_with_bad_cells_fail_before_any_cell_runs(tmp_path):
    (tmp_path / "typo.yaml").write_text("name: t\ngird: {seed: [0]}\n")
    _assert_clean_error(_cli("sweep", "typo.yaml", cwd=tmp_path), "'gird' (did you mean 'grid'?)")
    (tmp_path / "bad_cell.yaml").write_text(
        "name: t\nout_dir: out\nbase: {dataset: digits, width: 0.125, epochs: 1}\n"
        "grid:\n  - {criterion: [fts], sparsity: [0.9], seed: [0]}\n  - {criterion: [fst], sparsity: [0.9], seed: [0]}\n")
    _assert_clean_error(_cli("sweep", "bad_cell.yaml", "--serial", cwd=tmp_path), "unknown criterion 'fst'")
    assert not (tmp_path / "out").exists()
