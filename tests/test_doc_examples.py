"""The code on the pages a user reads first runs as printed and reaches what the text says.

Every ```python block of a page (MyST's ```{code-block} python too) runs exactly as printed, the
blocks one after the other in one fresh interpreter (``sys.executable``) in a temporary folder,
so that a block may use what an earlier one defined. Every ``print`` in them states its claim in
its comment (``# ~0.94``): the printed accuracy must lie within ``MARGIN`` of it (other CPUs pick
other vector kernels and land a point or two away; the digits test split of 150 images moves in
steps of 0.7 points), and the page's prose must state the same number ("about 0.94"). A probe
appended after the page's code checks what the prose says around it. The README's page is run by
``tests/test_readme.py`` with these helpers; this file runs the guide and checks what the pages
say about the environment and about sweep files.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from fts_core.experiments.sweeps import SweepSpec, expand

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 0.04
PROBE_MARK = "----- probe: checks of the prose around the code -----"
FENCE = re.compile(r"^```(\{code-block\}[ \t]+)?python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
ANY_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
# pages that show commands to type, and the commands that need the environment active
COMMAND_PAGES = ("README.md", "book/guide.md", "book/reproducibility.md")
BARE_COMMAND = re.compile(r"(?<![\w/.-])(python|papermill|jupyter) (?=[-\w.])")


def read(page: str) -> str:
    return (ROOT / page).read_text()


def python_blocks(page: str) -> list[str]:
    """The page's Python code blocks, as printed (a MyST directive's ``:option:`` lines dropped)."""
    text = read(page)
    blocks = []
    for match in FENCE.finditer(text):
        body = match.group(2)
        if match.group(1):
            body = re.sub(r"\A(?:[ \t]*:[\w-]+:.*\n)*\n?", "", body)
        blocks.append(body)
    opened = re.findall(r"^```[^\n]*\bpython\b", text, re.M)
    assert len(blocks) == len(opened) > 0, f"{page}: {len(opened)} python fences, {len(blocks)} read"
    return blocks


def prose(page: str) -> str:
    """The page without its fenced blocks."""
    return ANY_FENCE.sub("", read(page))


def claims(code: str) -> list[float]:
    """The value each ``print(...)`` line claims in its comment (``# ... ~0.94``), in order."""
    out = []
    for line in code.splitlines():
        if re.match(r"\s*print\(", line):
            found = re.search(r"#.*~\s*(\d*\.\d+)", line)
            assert found, f"a print without the value it claims in its comment: {line.strip()}"
            out.append(float(found.group(1)))
    return out


def accuracy(line: str) -> float:
    """A printed ``evaluate()`` dict's accuracy, or a printed number."""
    value = ast.literal_eval(line.strip())
    return float(value["accuracy"] if isinstance(value, dict) else value)


def run_page(page: str, cwd: Path, probe: str = "") -> tuple[list[str], dict, str]:
    """Run the page's code, then ``probe`` (which prints one JSON object), in a fresh interpreter
    in ``cwd``; check every printed claim against its comment and the prose. Returns the lines the
    page's code printed, the probe's object and stderr."""
    code = "\n".join(python_blocks(page))
    script = cwd / "page_code.py"
    script.write_text(code + f"\nprint({PROBE_MARK!r})\n" + textwrap.dedent(probe))
    proc = subprocess.run([sys.executable, script.name], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{page}: exit status {proc.returncode}\n{proc.stderr[-4000:]}"
    shown, mark, probed = proc.stdout.partition(PROBE_MARK + "\n")
    assert mark, f"{page}: the code did not run to its end:\n{proc.stdout[-2000:]}"
    shown = shown.splitlines()
    expected = claims(code)
    assert len(shown) == len(expected), f"{page}: {len(expected)} claims, printed {shown}"
    text = prose(page)
    for claim, line in zip(expected, shown):
        got = accuracy(line)
        assert abs(got - claim) <= MARGIN, f"{page}: printed {got:.3f} where the comment claims ~{claim}: {line}"
        assert re.search(rf"\babout {re.escape(str(claim))}\b", text), f"{page}: the prose does not say 'about {claim}'"
    return shown, (json.loads(probed) if probe else {}), proc.stderr


# ---------------------------------------------------------------------- the guide's code
GUIDE_PROBE = """
import json
from pathlib import Path
import fts_core as fc

found = {"kept": sum(int(m.sum()) for m in masks.values()), "total": sum(m.numel() for m in masks.values()),
         "result_file": (Path("runs") / config.name / "result.json").is_file()}
# the criterion registered on the page works by name, and its options are checked in score() and RunConfig alike
net = fc.build_model("resnet18", num_classes=data.num_classes, in_channels=data.in_channels, width=0.125)
loader = data.loader("train", batch_size=64)
scored = fc.score("fisher_magnitude", net, loader, num_samples=32, bn_mode="eval", power=2.0)
found["scored_by_name"] = sorted(scored) == sorted(fc.prunable_parameters(net)) and all(
    scored[n].shape == p.shape for n, p in fc.prunable_parameters(net).items())
found["refusals"] = []
for attempt in (lambda: fc.score("fisher_magnitude", net, loader, num_samples=32, bn_mode="eval", power=-1),
                lambda: fc.RunConfig(criterion="fisher_magnitude", criterion_options={"power": -1}).check_names()):
    try:
        attempt()
    except ValueError as err:
        found["refusals"].append(str(err))
# the model registered on the page: known by name, its classifier `linear` stays dense
fc.RunConfig(model="tiny_cnn").check_names()
found["tiny_cnn_prunable"] = sorted(fc.prunable_parameters(model))
print(json.dumps(found))
"""


@pytest.mark.slow
def test_the_guides_code_runs_as_printed_and_reaches_what_it_says(tmp_path):
    shown, found, _ = run_page("book/guide.md", tmp_path, GUIDE_PROBE)
    assert len(shown) == 2  # the quickstart's evaluate() and the RunConfig run's accuracy
    assert found["kept"] == round(0.1 * found["total"])  # "keeps exactly round((1-s) n)"
    assert found["result_file"]  # "also written to runs/<run>/result.json"
    assert found["scored_by_name"]
    assert len(found["refusals"]) == 2 and all("power" in e and "-1" in e for e in found["refusals"]), found
    assert found["tiny_cnn_prunable"] == ["features.0.weight"]  # the Conv2d; `linear` stays dense


# ---------------------------------------------------------------------- the environment
def test_pages_with_commands_say_to_activate_the_environment_before_the_first_one():
    for page in COMMAND_PAGES:
        text = read(page)
        first = BARE_COMMAND.search(text)
        assert first, f"{page}: no bare command (the test's pattern is stale)"
        said = text.find("source .venv/bin/activate")
        assert 0 <= said < first.start(), f"{page}: {first.group(0)!r} comes before 'source .venv/bin/activate'"
        # one convention: bare commands in the active environment; `.venv/bin/` only to say how to do
        # without activating it (at most one example command)
        prefixed = re.findall(r"\.venv/bin/[\w.-]+", text)
        assert set(prefixed) <= {".venv/bin/activate", ".venv/bin/python"}, (page, prefixed)
        assert prefixed.count(".venv/bin/python") <= 1, (page, prefixed)


def test_the_readme_quick_start_says_how_to_activate():
    text = read("README.md")
    quick = text[text.index("## Two commands"):text.index("## Open the book")]
    assert "source .venv/bin/activate" in quick and "prefix" in quick and "conda activate fts-book" in quick


def test_activating_the_environment_puts_its_commands_first(tmp_path):
    prefix = Path(sys.prefix)
    if not (prefix / "pyvenv.cfg").is_file():
        pytest.skip(f"the tests run outside a virtual environment ({prefix}); the pages describe .venv")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # a fresh shell: the environment's bin/ is not on it
    names = ["python", "papermill", "jupyter", "ray"]
    out = subprocess.run(["bash", "-c", f"source {prefix / 'bin' / 'activate'} && command -v {' '.join(names)}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(prefix / "bin" / name) for name in names]


# ---------------------------------------------------------------------- sweep files on the pages
def yaml_blocks(page: str) -> list[str]:
    return re.findall(r"^```yaml[ \t]*\n(.*?)^```[ \t]*$", read(page), re.S | re.M)


def test_every_sweep_file_shown_is_valid():
    shown = [(page, block) for page in ("book/guide.md", "book/reproducibility.md") for block in yaml_blocks(page)]
    assert len(shown) >= 2
    for page, block in shown:
        try:
            SweepSpec.from_dict(yaml.safe_load(block))  # an unknown or misspelled key fails here
        except ValueError as err:
            pytest.fail(f"{page}: the sweep file shown is not valid: {err}\n{block}")


def test_a_sweep_files_paths_start_at_its_folder_as_the_page_says(tmp_path, monkeypatch):
    block = next(b for b in yaml_blocks("book/reproducibility.md") if "out_dir:" in b)
    path = tmp_path / "project" / "sweeps" / "example.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(block)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = SweepSpec.from_yaml(path)
    assert spec.sweep_dir == tmp_path / "project" / "results" / "sweeps" / "example_digits"
    assert len(expand(spec)) == 8  # its cells are valid configurations
    # "the files in sweeps/ say out_dir: ../results/... and write there from anywhere"
    for file in sorted((ROOT / "sweeps").glob("*.yaml")):
        spec = SweepSpec.from_yaml(file)
        assert spec.out_dir.startswith("../results/"), (file.name, spec.out_dir)
        assert spec.sweep_dir.is_relative_to(ROOT / "results"), (file.name, spec.sweep_dir)
