"""The README's commands and code are what a new user runs first: they must work as printed."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _snippet(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_from_your_own_code_trains_to_a_sensible_accuracy_and_says_when_it_reuses_a_run(tmp_path):
    code = _snippet("## From your own code")
    first = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = first.stdout.strip().splitlines()
    own = ast.literal_eval(lines[-2])
    assert own["accuracy"] > 0.8, own  # ten classes: chance is 0.1
    assert float(lines[-1]) > 0.8, lines[-1]
    again = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == lines[-1]
    assert "has finished already: returning its stored result" in again.stderr
