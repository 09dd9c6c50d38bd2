"""The README's code and commands are what a new user runs first: they must work as printed.

Its ```python blocks run as printed, in one fresh interpreter, and must print the accuracies
their comments claim (``tests/test_doc_examples.py`` says how); a probe then checks what the text
around them says. The cheap ``python -m fts_core ...`` commands run in this process, through the
module's ``__main__`` as ``python -m`` does; those that train are left to the sweep and run tests.
"""
from __future__ import annotations

import runpy
import shlex
import sys

import pytest

from test_doc_examples import read, run_page

README_PROBE = """
import json
from pathlib import Path

found = {"kept": sum(int(m.sum()) for m in masks.values()), "total": sum(m.numel() for m in masks.values()),
         "pruned_are_zero": all(bool((p.detach()[~masks[n]] == 0).all())
                                for n, p in model.named_parameters() if n in masks)}
stored = json.loads((Path("runs") / config.name / "result.json").read_text())  # "also in runs/<name>/result.json"
found["stored"] = stored["test_accuracy_final"] == result["test_accuracy_final"]
again = fts_core.run(config)  # "returns the finished one without training and says so"
found["again"] = again["test_accuracy_final"] == result["test_accuracy_final"] and again["run_dir"] == result["run_dir"]
print(json.dumps(found))
"""


@pytest.mark.slow
def test_from_your_own_code_runs_as_printed_and_reaches_the_accuracies_it_claims(tmp_path):
    shown, found, stderr = run_page("README.md", tmp_path, README_PROBE)
    assert len(shown) == 2  # the own loop's evaluate() and the RunConfig run's accuracy
    assert found["kept"] == round(0.1 * found["total"]), found  # sparsity 0.9, global top-k
    assert found["pruned_are_zero"], found  # "pruned weights stay exactly 0, whatever the optimizer"
    assert found["stored"] and found["again"], found
    assert stderr.count("has finished already: returning its stored result") == 1, stderr[-2000:]


# command as printed in the README -> what its output must contain (the README's words for it)
COMMANDS = {
    "python -m fts_core list": ("criteria: ", "models: ", "datasets: ", "fts", "resnet18", "digits"),
    "python -m fts_core sweep --help": ("ray start --head", "--resume", "--address"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cheap_commands_run_as_printed(command, monkeypatch, capsys):
    assert f"`{command}`" in read("README.md"), f"the README no longer shows `{command}`"
    python, dash_m, module, *args = shlex.split(command)
    assert (python, dash_m, module) == ("python", "-m", "fts_core")
    monkeypatch.setattr(sys, "argv", [module, *args])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps its help text
    for words in COMMANDS[command]:
        assert words in out, (command, words, out[:2000])
