"""Sweeps and runs that cannot be fooled: damaged files, two workers on one folder, paths, and
one clear line for each failure a user can meet (issue 21's cases)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from fts_core import cli
from fts_core.experiments import runner
from fts_core.experiments.claims import Claimed, claim
from fts_core.experiments.config import RunConfig
from fts_core.experiments.results import load_results
from fts_core.experiments.sweeps import SweepError, SweepSpec, cell_states, expand, sweep
from fts_core.io import RUN_CLAIM, DamagedFileWarning, cell_file, claim_file
from sweep_targets import count_lines

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
DAMAGES = {
    "truncated": lambda text: text[: len(text) // 2],
    "random bytes": lambda text: os.urandom(300),
    "empty object": lambda text: "{}",
    "a list": lambda text: "[1]",
    "another cell": lambda text: json.dumps({**json.loads(text), "cell_id": "x"}),
}


def _spec(tmp_path: Path, **changes) -> dict:
    d = {"name": "t", "out_dir": str(tmp_path / "sweep"), "run": "sweep_targets:quick",
         "grid": {"sparsity": [0.9, 0.95], "seed": [0]}}
    d.update(changes)
    return d


# ---------------------------------------------------------------------- 1. damaged cells
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_cell_is_set_aside_reported_and_redone(tmp_path, damage):
    spec = _spec(tmp_path)
    sweep(spec, backend="serial", quiet=True)
    first = cell_file(tmp_path / "sweep", expand(SweepSpec.from_dict(spec))[0].cell_id)
    text = first.read_text()
    data = DAMAGES[damage](text)
    first.write_bytes(data if isinstance(data, bytes) else data.encode())

    with pytest.warns(DamagedFileWarning, match=str(first.name)):  # named, and never half a row
        table = load_results(tmp_path / "sweep")
    assert len(table) == 1 and table["cell_id"].notna().all() and (table["cell_id"] != "").all()

    with pytest.warns(DamagedFileWarning, match="counts as not done"):
        states = cell_states(SweepSpec.from_dict(spec))
    assert sorted(states.values()) == ["done", "pending"]
    assert not first.exists() and first.with_name(first.name + ".damaged").exists()

    table = sweep(spec, backend="serial", quiet=True, resume=True)  # redone
    assert len(table) == 2 and json.loads(first.read_text())["status"] == "done"


def test_cli_status_names_a_damaged_cell_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))
    sweep(SweepSpec.from_yaml(path), backend="serial", quiet=True)
    first = sorted((tmp_path / "sweep" / "cells").glob("*.json"))[0]
    first.write_text("{")
    out = subprocess.run([sys.executable, "-m", "fts_core", "sweep", str(path), "--status"], capture_output=True,
                         text=True, env=ENV, check=True)
    assert "1 done, 0 failed, 1 pending" in out.stdout
    assert f"set aside (its cell is redone by --resume): {first}.damaged" in out.stdout
    assert out.stderr.startswith("warning: damaged cell file") and len(out.stderr.splitlines()) == 1


def test_a_stale_temporary_cell_file_is_removed_when_its_cell_runs(tmp_path):
    spec = SweepSpec.from_dict(_spec(tmp_path))
    cid = expand(spec)[0].cell_id
    stale = tmp_path / "sweep" / "cells" / f".{cid}.json.k1ll3d.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"cell_id": "half')
    sweep(spec, backend="serial", quiet=True, resume=True)
    assert not stale.exists() and cell_file(tmp_path / "sweep", cid).exists()


# ---------------------------------------------------------------------- 2. one worker per cell
def test_two_sweeps_on_one_folder_train_each_epoch_once(tmp_path):
    log = tmp_path / "epochs.log"
    spec = _spec(tmp_path, run="sweep_targets:slow_count",
                 base={"epochs": 3, "log": str(log)}, grid={"criterion": ["a", "b", "c", "d"], "seed": [0]})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "fts_core", "sweep", str(path), "--serial", "--resume"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert count_lines(log) == 4 * 3, log.read_text()  # 4 cells x 3 epochs, not twice that
    assert len(load_results(tmp_path / "sweep")) == 4
    assert any("skipped: another process was running them" in err for _, err in outs), outs
    assert {p.returncode for p in procs} <= {0, 1}


def test_a_claimed_cell_is_skipped_and_said_so(tmp_path):
    spec = SweepSpec.from_dict(_spec(tmp_path))
    cid = expand(spec)[0].cell_id
    with claim(claim_file(tmp_path / "sweep", cid), "test"):
        table = sweep(spec, backend="serial", quiet=True)
    assert len(table) == 1 and cell_states(spec)[cid] == "pending"
    assert len(sweep(spec, backend="serial", quiet=True, resume=True)) == 2  # the claim is released


def test_a_crashed_holder_leaves_no_claim(tmp_path):
    lock = tmp_path / "x.lock"
    code = f"from fts_core.experiments.claims import claim\nimport os\nwith claim({str(lock)!r}, 'x'): os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code], env=ENV).returncode == 9
    assert lock.exists()  # the file stays, the OS lock is gone with the process
    with claim(lock, "x"):
        with pytest.raises(Claimed, match=f"another process .*{os.getpid()}"):
            with claim(lock, "x"):
                pass


def test_run_on_a_folder_another_process_trains_is_refused(tmp_path):
    cfg = RunConfig(dataset="digits", width=0.0625, epochs=1, subset=64, out_dir=str(tmp_path), quiet=True)
    cfg.run_dir.mkdir(parents=True)
    with claim(cfg.run_dir / RUN_CLAIM, "test"):
        with pytest.raises(Claimed, match="run folder"):
            runner.run(cfg)
    assert cfg.run_dir.exists()  # the other process's folder is left alone


# ---------------------------------------------------------------------- 3. one clear line
def _cli(argv, capsys):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    return rc, err


def test_ctrl_c_during_a_sweep_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path)))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "sweep", interrupted)
    rc, err = _cli(["sweep", str(path), "--serial"], capsys)
    assert rc == 130 and err.strip().endswith("rerun with --resume to continue") and len(err.splitlines()) == 1


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device writing /x/ck.pt"),
                                         (errno.EROFS, "cannot write /x/ck.pt"),
                                         (errno.EACCES, "use a folder you can write to")])
def test_a_full_or_read_only_disk_is_one_line(tmp_path, monkeypatch, capsys, code, words):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"dataset": "digits", "epochs": 1}))

    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code), "/x/ck.pt")

    monkeypatch.setattr(cli, "run", failing)
    rc, err = _cli(["run", str(path)], capsys)
    assert rc == 1 and words in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("target, words", [("no_such_module_xyz:f", "module 'no_such_module_xyz' does not import"),
                                           ("sweep_targets:nothing", "'sweep_targets' has no 'nothing'"),
                                           ("sweep_targets", "must look like 'package.module:function'")])
def test_a_bad_run_target_is_one_line(tmp_path, capsys, target, words, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path, run=target)))
    rc, err = _cli(["sweep", str(path), "--serial"], capsys)
    assert rc == 2 and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "sweep").exists()


def test_failed_cells_fail_the_sweep(tmp_path):
    spec = _spec(tmp_path, run="sweep_targets:quick", grid={"sparsity": ["x"]})  # "x" / 10 raises in the cell
    with pytest.raises(SweepError, match=r"1 cell\(s\) failed, first .*TypeError.*rerun with --resume"):
        sweep(spec, backend="serial", quiet=True)


def test_a_result_json_of_the_wrong_shape_is_set_aside(tmp_path):
    (tmp_path / "result.json").write_text('{"run_name": 3}')
    with pytest.warns(RuntimeWarning, match="result.json: key 'run_name' is a int"):
        assert runner._stored_result(tmp_path) is None
    assert (tmp_path / "result.json.damaged").exists()


# ---------------------------------------------------------------------- 4. paths
def test_tilde_means_the_home_folder_in_a_run_config(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert RunConfig(out_dir="~/runs").out_dir == str(tmp_path / "runs")
    assert RunConfig(root="~/data").root == str(tmp_path / "data")


def test_a_files_paths_are_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    sweep_file = tmp_path / "conf" / "s.yaml"
    sweep_file.write_text(yaml.safe_dump(_spec(tmp_path, out_dir="../out")))
    run_file = tmp_path / "conf" / "r.yaml"
    run_file.write_text(yaml.safe_dump({"out_dir": "runs", "root": "~/d"}))
    monkeypatch.chdir("/")
    assert SweepSpec.from_yaml(sweep_file).sweep_dir == tmp_path / "out"
    cfg = RunConfig.from_yaml(run_file)
    assert cfg.out_dir == str(tmp_path / "conf" / "runs") and cfg.root == os.path.expanduser("~/d")


def test_status_from_another_folder_sees_the_finished_cells(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "s.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path, out_dir="../out")))
    sweep(SweepSpec.from_yaml(path), backend="serial", quiet=True)
    out = subprocess.run([sys.executable, "-m", "fts_core", "sweep", str(path), "--status"], capture_output=True,
                         text=True, env=ENV, cwd="/", check=True)
    assert f"2 done, 0 failed, 0 pending of 2 cells in {tmp_path / 'out'}" in out.stdout


def test_a_finished_run_is_returned_without_writing(tmp_path, monkeypatch):
    cfg = RunConfig(dataset="digits", out_dir=str(tmp_path), quiet=True)
    cfg.run_dir.mkdir()
    (cfg.run_dir / "config.yaml").write_text(cfg.to_yaml())
    stored = {"run_name": cfg.name, "run_dir": str(cfg.run_dir), "config": cfg.to_dict(), "test_accuracy_final": 0.5,
              "test_accuracy_best_val": 0.5, "best_epoch": 0, "realised_sparsity": 0.9}
    (cfg.run_dir / "result.json").write_text(json.dumps(stored))

    def no_writes(*args, **kwargs):
        raise AssertionError("a finished run must not need a writable folder")

    monkeypatch.setattr(runner, "_check_out_dir", no_writes)
    monkeypatch.setattr(runner, "_make_run_dir", no_writes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runner.run(cfg) == stored


def test_integer_inputs_on_a_model_that_expects_floats_are_named():
    import torch
    from torch import nn

    from fts_core.scoring import score

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    x, y = torch.randint(0, 5, (4, 1, 8, 8)), torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match=r"the inputs are torch.int64 \(integer\) and the model cannot take them"):
        score("fts", model, [(x, y)], prunable={"0.weight": model[0].weight})


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ValueError, match=r"unknown criterion 'fst' \(did you mean 'fts'\?\)"):
        RunConfig(criterion="fst").check_names()
    with pytest.raises(ValueError, match=r"unknown model 'resnet81' \(did you mean 'resnet18'\?\)"):
        RunConfig(model="resnet81").check_names()
    with pytest.raises(ValueError, match=r"unknown dataset 'digit' \(did you mean 'digits'\?\)"):
        RunConfig(dataset="digit").check_names()


def test_a_local_ray_that_misses_its_startup_timeout_is_started_again():
    """Ray gives its node a fixed 30 s; on a busy machine a start can miss it: start again,
    but never hide another error."""
    from fts_core.experiments import sweeps as S

    class FakeRay:
        def __init__(self, failures, message="The current node timed out during startup. ..."):
            self.failures, self.message, self.inits, self.shutdowns = failures, message, 0, 0

        def init(self, **kwargs):
            self.inits += 1
            if self.inits <= self.failures:
                raise Exception(self.message)

        def shutdown(self):
            self.shutdowns += 1

    ray = FakeRay(failures=2)
    S._start_local_ray(ray, {}, quiet=True)
    assert (ray.inits, ray.shutdowns) == (3, 2)
    with pytest.raises(Exception, match="timed out during startup"):
        S._start_local_ray(FakeRay(failures=S._RAY_STARTS), {}, quiet=True)
    other = FakeRay(failures=1, message="address already in use")
    with pytest.raises(Exception, match="address already in use"):
        S._start_local_ray(other, {}, quiet=True)
    assert other.inits == 1
