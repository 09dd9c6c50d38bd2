"""Sweeps: grid expansion, stable cell ids, resumable execution, failures, notebooks, Ray.

The acceptance test (`test_ray_sweep_survives_kill_9`) runs a 2 criteria x 2 sparsities x
2 seeds sweep on digits through an embedded local Ray instance in a subprocess, kills the
driver with SIGKILL after the first cells finished, resumes, and checks that exactly 8 rows
come out, none duplicated, and that cells finished before the kill were not run again.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from fts_core.experiments.results import load_results
from fts_core.experiments.sweeps import SweepError, SweepSpec, cell_states, expand, sweep

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


# ---------------------------------------------------------------------- stand-in cell functions
def fake_run(config: dict) -> dict:
    """A stand-in for fts_core.run: deterministic metrics from the config, no training."""
    if config.get("fail_flag") and Path(config["fail_flag"]).exists():
        raise RuntimeError(f"planned failure of {config['criterion']} at {config['sparsity']}")
    acc = 0.9 - config["sparsity"] / 10 + (0.01 if config["criterion"] == "fts" else 0.0) + config["seed"] / 1000
    return {"test_accuracy_final": acc, "realised_sparsity": config["sparsity"], "scoring_seconds": 0.01,
            "layer_density": {"a": 0.1}, "out_dir_seen": config["out_dir"]}


def _spec(tmp_path: Path, **changes) -> dict:
    d = {
        "name": "t",
        "out_dir": str(tmp_path / "sweep"),
        "run": "test_sweeps:fake_run",
        "base": {"dataset": "digits"},
        "grid": {"criterion": ["fts", "snip"], "sparsity": [0.9, 0.95], "seed": [0, 42]},
    }
    d.update(changes)
    return d


# ---------------------------------------------------------------------- the spec
def test_expand_is_the_cartesian_product_with_stable_unique_ids(tmp_path):
    spec = SweepSpec.from_dict(_spec(tmp_path))
    cells = expand(spec)
    assert len(cells) == 8
    assert len({c.cell_id for c in cells}) == 8
    combos = {(c.params["criterion"], c.params["sparsity"], c.params["seed"]) for c in cells}
    assert len(combos) == 8 and all(c.params["dataset"] == "digits" for c in cells)
    # first grid key varies slowest
    assert [c.params["criterion"] for c in cells] == ["fts"] * 4 + ["snip"] * 4
    # ids depend on the cell's parameters only: same spec -> same ids; other base -> other ids
    assert [c.cell_id for c in expand(SweepSpec.from_dict(_spec(tmp_path)))] == [c.cell_id for c in cells]
    other = expand(SweepSpec.from_dict(_spec(tmp_path, base={"dataset": "synthetic"})))
    assert not {c.cell_id for c in other} & {c.cell_id for c in cells}
    # a repeated grid value does not create a duplicate cell
    dup = _spec(tmp_path, grid={"criterion": ["fts", "fts"], "sparsity": [0.9], "seed": [0]})
    assert len(expand(SweepSpec.from_dict(dup))) == 1


def test_run_cells_are_named_like_their_runs(tmp_path):
    from fts_core.experiments.config import RunConfig

    d = _spec(tmp_path, base={"dataset": "digits", "width": 0.125, "epochs": 1})
    del d["run"]
    cells = expand(SweepSpec.from_dict(d))
    assert [c.cell_id for c in cells] == [RunConfig.from_dict(c.params).default_run_name() for c in cells]
    # out_dir / device do not change a run's identity, so they do not change the cell id
    d2 = dict(d, base={**d["base"], "device": "cpu", "out_dir": "elsewhere"})
    assert [c.cell_id for c in expand(SweepSpec.from_dict(d2))] == [c.cell_id for c in cells]
    with pytest.raises(ValueError, match="epochz"):
        expand(SweepSpec.from_dict(dict(d, base={"epochz": 3})))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"gird": {}}, "'gird' \\(did you mean 'grid'\\?\\)"),
        ({"grid": {"seed": []}}, "non-empty list"),
        ({"grid": {"seed": 3}}, "non-empty list"),
        ({"base": {"seed": 1}}, "both `base` and `grid`"),
        ({"resources": {"gpus": 1}}, "gpus"),
        ({"notebook": "x.ipynb"}, "either `run` or `notebook`"),
    ],
)
def test_bad_sweep_files_are_rejected_with_the_bad_key(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        SweepSpec.from_dict(_spec(tmp_path, **change))


def test_shipped_sweep_files_parse():
    for name, n in (("example_digits.yaml", 8), ("paper_resnet18_cifar10.yaml", 9 * 5 * 3 + 3),
                    ("fashion_mnist_resnet18.yaml", 8 * 4 * 5 + 5 + 2 * 2 * 2 * 5),
                    ("fashion_mnist_vgg19.yaml", 8 * 4 * 5 + 5 + 2 * 2 * 2 * 5)):
        spec = SweepSpec.from_yaml(REPO / "sweeps" / name)
        assert len(expand(spec)) == n, name


def test_seeds_added_to_a_sweep_keep_the_finished_cells():
    """The ResNet18 sweep grew from 3 to 5 seeds: its 123 committed 3-seed cells keep their ids."""
    spec = SweepSpec.from_yaml(REPO / "sweeps" / "fashion_mnist_resnet18.yaml")
    ids = {c.cell_id for c in expand(spec)}
    three = {c.cell_id for c in expand(spec) if c.params["seed"] < 3}
    assert len(three) == 123 and three < ids
    committed = {p.stem for p in (REPO / "results" / "fashion_mnist_resnet18" / "cells").glob("*.json")}
    assert three <= committed


# ---------------------------------------------------------------------- serial execution
def test_serial_sweep_writes_a_row_per_cell_and_is_idempotent(tmp_path):
    table = sweep(_spec(tmp_path), backend="serial", quiet=True)
    assert len(table) == 8 and table["cell_id"].is_unique
    sweep_dir = tmp_path / "sweep"
    assert len(list((sweep_dir / "cells").glob("*.json"))) == 8
    assert (sweep_dir / "results.csv").exists() and (sweep_dir / "sweep.yaml").exists()
    row = table.iloc[0]
    for column in ("criterion", "sparsity", "seed", "test_accuracy_final", "realised_sparsity", "seconds",
                   "git_revision", "version_torch", "device_name", "hostname"):
        assert column in table.columns, column
    assert row["out_dir_seen"] == str(sweep_dir / "runs")  # run cells get a run directory in the sweep
    # a finished sweep runs again as a no-op, with or without --resume: no file is rewritten
    before = {p.name: p.stat().st_mtime_ns for p in sweep_dir.rglob("*") if p.is_file()}
    for resume in (False, True):
        again = sweep(_spec(tmp_path), backend="serial", quiet=True, resume=resume)
        assert sorted(again["cell_id"]) == sorted(table["cell_id"])
    assert {p.name: p.stat().st_mtime_ns for p in sweep_dir.rglob("*") if p.is_file()} == before
    # a grown grid in the same folder needs --resume, and the message says so
    grown = _spec(tmp_path, grid={"criterion": ["fts", "snip"], "sparsity": [0.9, 0.95, 0.98], "seed": [0, 42]})
    with pytest.raises(FileExistsError, match=r"8 of 12 done.*--resume"):
        sweep(grown, backend="serial", quiet=True)


def test_a_list_of_grids_is_the_union_of_their_products(tmp_path):
    grids = [{"criterion": ["fts", "snip"], "sparsity": [0.9], "seed": [0]},
             {"criterion": ["random"], "sparsity": [0.0], "seed": [0, 1]},
             {"criterion": ["fts"], "sparsity": [0.9], "seed": [0]}]  # the first grid's cell again
    cells = expand(SweepSpec.from_dict(_spec(tmp_path, grid=grids)))
    assert [(c.params["criterion"], c.params["sparsity"], c.params["seed"]) for c in cells] == [
        ("fts", 0.9, 0), ("snip", 0.9, 0), ("random", 0.0, 0), ("random", 0.0, 1)]
    with pytest.raises(ValueError, match=r"both `base` and `grid\[1\]`"):
        SweepSpec.from_dict(_spec(tmp_path, base={"width": 1}, grid=[grids[0], {"width": [2]}]))
    with pytest.raises(ValueError, match=r"grid\[0\]\['seed'\] must be a non-empty list"):
        SweepSpec.from_dict(_spec(tmp_path, grid=[{"seed": []}]))


def test_a_bad_cell_or_missing_data_stops_the_sweep_before_any_cell_runs(tmp_path):
    d = _spec(tmp_path, base={"dataset": "digits", "width": 0.125, "epochs": 1},
              grid=[{"criterion": ["fts"], "sparsity": [0.9], "seed": [0]},
                    {"criterion": ["fst"], "sparsity": [0.9], "seed": [0]}])
    del d["run"]
    with pytest.raises(ValueError, match=r"cell .*fst.*unknown criterion 'fst'"):
        sweep(d, backend="serial", quiet=True)
    assert not (tmp_path / "sweep").exists()
    d["base"] = {"dataset": "fashion_mnist", "root": str(tmp_path / "nowhere"), "width": 0.125, "epochs": 1}
    d["grid"] = {"criterion": ["fts", "snip"], "sparsity": [0.9], "seed": [0]}
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        sweep(d, backend="serial", quiet=True)
    assert not (tmp_path / "sweep").exists()


def test_failed_cells_keep_their_traceback_and_are_retried(tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("x")
    spec = _spec(tmp_path, base={"dataset": "digits", "fail_flag": str(flag)},
                 grid={"criterion": ["fts"], "sparsity": [0.9, 0.95], "seed": [0]})
    with pytest.raises(SweepError, match=r"2 cell\(s\) failed, first .*planned failure"):  # kept, and said so
        sweep(spec, backend="serial", quiet=True)
    assert len(load_results(tmp_path / "sweep")) == 0
    failures = sorted((tmp_path / "sweep" / "failures").glob("*.json"))
    assert len(failures) == 2
    record = json.loads(failures[0].read_text())
    assert record["status"] == "failed" and "planned failure" in record["traceback"]
    assert record["error"].startswith("RuntimeError")
    assert set(cell_states(SweepSpec.from_dict(spec)).values()) == {"failed"}
    everything = load_results(tmp_path / "sweep", status="all")
    assert list(everything["status"]) == ["failed", "failed"]
    # the next invocation retries them; success removes the failure record
    flag.unlink()
    table = sweep(spec, backend="serial", quiet=True, resume=True)
    assert len(table) == 2 and (table["attempts"] == 2).all()
    assert not list((tmp_path / "sweep" / "failures").glob("*.json"))


def test_cli_status_lists_cells(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    assert set(cell_states(SweepSpec.from_yaml(path)).values()) == {"pending"}
    out = subprocess.run([PYTHON, "-m", "fts_core", "sweep", str(path), "--serial", "--quiet"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([PYTHON, "-m", "fts_core", "sweep", str(path), "--status"], capture_output=True,
                         text=True, env=env, check=True)
    assert "8 done, 0 failed, 0 pending of 8 cells" in out.stdout


def test_notebook_cells_keep_each_output_notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x: int = 1\nsummary_json: str = 'summary.json'\ninteractive: bool = True")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import json\nprint('x is', x)\njson.dump({'double': 2 * x, 'interactive': interactive}, open(summary_json, 'w'))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    spec = {"name": "nb", "out_dir": str(tmp_path / "sweep"), "notebook": str(path), "grid": {"x": [3, 4]}}
    table = sweep(spec, backend="serial", quiet=True)
    assert sorted(table["double"]) == [6, 8] and not table["interactive"].any()
    for row in table.itertuples():
        out = nbformat.read(row.notebook_output, as_version=4)
        assert f"x is {row.x}" in out.cells[-1].outputs[0]["text"]


# ---------------------------------------------------------------------- Ray, kill -9, resume
def _kill_session(pid: int) -> None:
    """SIGKILL what is left of the process session we started (Ray's helpers), by pid."""
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(pid)], capture_output=True, text=True)
    for line in out.stdout.split():
        try:
            os.kill(int(line), signal.SIGKILL)
        except (ProcessLookupError, ValueError, PermissionError):
            pass


@pytest.mark.slow
def test_ray_sweep_survives_kill_9(tmp_path):
    spec = {
        "name": "kill9",
        "out_dir": str(tmp_path / "sweep"),
        "base": {"dataset": "digits", "model": "small_cnn", "width": 0.25, "epochs": 1, "subset": 200,
                 "batch_size": 50, "lr": 0.05, "score_samples": 32, "device": "cpu"},
        "grid": {"criterion": ["fts", "snip"], "sparsity": [0.9, 0.95], "seed": [0, 42]},
        "resources": {"num_cpus": 1},
        "ray": {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False,
                "object_store_memory": 80 * 1024**2},
    }
    path = tmp_path / "kill9.yaml"
    path.write_text(yaml.safe_dump(spec))
    cells_dir = tmp_path / "sweep" / "cells"
    command = [PYTHON, "-m", "fts_core", "sweep", str(path), "--max-parallel", "2", "--quiet"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}

    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 300  # generous: the first cell needs Ray's start-up and a torch import
        while time.time() < deadline and not list(cells_dir.glob("*.json")) and driver.poll() is None:
            time.sleep(0.2)
        assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
        os.kill(driver.pid, signal.SIGKILL)  # the driver dies mid-sweep
        driver.wait()
    finally:
        _kill_session(driver.pid)
    finished = {p.name: p.read_text() for p in cells_dir.glob("*.json")}
    assert 1 <= len(finished) < 8, f"{len(finished)} cells finished before the kill"

    resumed = subprocess.Popen([*command, "--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    try:
        _, stderr = resumed.communicate(timeout=600)
    finally:
        _kill_session(resumed.pid)
    assert resumed.returncode == 0, stderr[-3000:]

    table = load_results(tmp_path / "sweep")
    assert len(table) == 8
    assert table["cell_id"].is_unique
    assert len(table[["criterion", "sparsity", "seed"]].drop_duplicates()) == 8
    assert len(list(cells_dir.glob("*.json"))) == 8
    csv = (tmp_path / "sweep" / "results.csv").read_text().strip().splitlines()
    assert len(csv) == 1 + 8
    for name, text in finished.items():  # finished cells were not run again
        assert (cells_dir / name).read_text() == text
    assert table["realised_sparsity"].round(2).tolist() == table["sparsity"].round(2).tolist()
    assert ((table["test_accuracy_final"] >= 0) & (table["test_accuracy_final"] <= 1)).all()
    run_dirs = [p for p in (tmp_path / "sweep" / "runs").iterdir() if (p / "result.json").exists()]
    assert len(run_dirs) == 8


# ---------------------------------------------------------------------- registered names on Ray
@pytest.mark.slow
def test_a_name_registered_in_user_code_reaches_ray_workers_through_imports(tmp_path):
    """(Beside the other Ray test, so that pytest-xdist never starts two Ray instances at once.)
    Without ``imports:`` Ray's workers do not know the name: the sweep fails and says how to fix
    it (it used to report success with 0 rows); with it every cell finishes."""
    spec = {"name": "reg", "run": "fts_core:run", "resources": {"num_cpus": 1},
            "base": {"dataset": "digits", "model": "small_cnn", "width": 0.25, "epochs": 1, "subset": 100,
                     "batch_size": 50, "criterion": "abs_weight_test", "sparsity": 0.5, "seed": 0, "device": "cpu"},
            "grid": {"lr": [0.05]},
            "ray": {"num_cpus": 1, "include_dashboard": False, "log_to_driver": False,
                    "object_store_memory": 80 * 1024**2}}
    code = ("import sys, yaml, registered_here\nfrom fts_core.experiments.sweeps import sweep\n"
            "print(len(sweep(yaml.safe_load(open(sys.argv[1])), quiet=True)))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "RAY_AUTH_MODE": "disabled"}
    outcomes = {}
    for imports in ([], ["registered_here"]):
        path = tmp_path / f"s{len(imports)}.yaml"
        path.write_text(yaml.safe_dump({**spec, "out_dir": str(tmp_path / f"out{len(imports)}"), "imports": imports}))
        outcomes[len(imports)] = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                                                text=True, env=env, timeout=600, start_new_session=True)
    without, with_imports = outcomes[0], outcomes[1]
    assert without.returncode != 0 and "SweepError: 1 cell(s) failed" in without.stderr, without.stderr[-3000:]
    assert "unknown criterion 'abs_weight_test'" in without.stderr and "`imports:`" in without.stderr
    assert with_imports.returncode == 0, with_imports.stderr[-3000:]
    assert with_imports.stdout.strip().splitlines()[-1] == "1"

# ---------------------------------------------------------------------- notebook 04 on CIFAR-layout files
_MD5_BYPASS = '''\
import os
import torchvision.datasets.cifar as _cifar
_cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
'''


@pytest.mark.slow
def test_notebook04_runs_the_paper_protocol_on_cifar_layout_files(tmp_path):
    """papermill notebook 04 -f params/paper/resnet18_cifar10.yaml on fake CIFAR-10 files, tiny overrides."""
    from cifar_fixture import write_fake_cifar

    data = tmp_path / "data"
    write_fake_cifar(data, "cifar10", per_batch=40, test_size=40)
    # the fake files fail torchvision's md5 check; a sitecustomize in the kernel's PYTHONPATH skips only that
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_MD5_BYPASS)
    env = {**os.environ, "PYTHONPATH": str(hook), "MPLBACKEND": "Agg", "RAY_AUTH_MODE": "disabled"}
    out_nb = tmp_path / "out.ipynb"
    summary = tmp_path / "summary.json"
    cmd = [str(Path(PYTHON).parent / "papermill"), str(REPO / "notebooks" / "04_experiments.ipynb"), str(out_nb),
           "--cwd", str(REPO / "notebooks"), "-f", str(REPO / "params" / "paper" / "resnet18_cifar10.yaml"),
           "-p", "root", str(data), "-p", "epochs", "1", "-p", "subset", "100", "-p", "width", "0.25",
           "-p", "batch_size", "30", "-p", "score_samples", "8", "-p", "backend", "serial",
           "-p", "device", "cpu", "-p", "results_dirs", str(tmp_path / "results"),
           "-p", "summary_json", str(summary),
           "-y", "criteria: [fts, snip]\nsparsities: [0.9]\nseeds: [0]", "--no-progress-bar"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(summary.read_text())
    assert result["settings"]["ResNet18"].startswith("cifar10, resnet18 at width 0.25")
    assert result["paper_setting"] is True and result["nb04_cells"] == 3  # and the dense baseline
    text = "\n".join(o.get("text", "") for c in nbformat.read(out_nb, as_version=4).cells
                     if c.cell_type == "code" for o in c.get("outputs", []))
    assert "90.55 ± 0.23" in text  # the paper's FTS number at 90 % sparsity, shown side by side
    table = load_results(tmp_path / "results")
    assert len(table) == 3 and set(table["epochs"]) == {1} and set(table["model"]) == {"resnet18"}
    assert sorted(table["sparsity"]) == [0.0, 0.9, 0.9]
