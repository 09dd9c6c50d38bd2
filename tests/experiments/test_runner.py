"""fts_core.run: config checks, the protocol end to end, checkpoints, resume after a kill."""
from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import fts_core
from fts_core.io import (
    CorruptCheckpointError,
    atomic_write_bytes,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from fts_core.experiments.config import RunConfig
from fts_core.cli import parse_set as _parse_set
from fts_core.experiments.runner import run

# a run that takes about a second: 128 train / 32 val / 40 test synthetic images, ResNet18 at
# 1/16 width (4..32 channels), one dense warm-up epoch, pruning at the start of epoch 1
TINY = dict(dataset="synthetic", data_options={"train_size": 160, "test_size": 40}, model="resnet18",
            width=0.0625, criterion="fts", sparsity=0.8, epochs=4, warmup=1, batch_size=32, milestones=[2, 3],
            lr=0.05, score_samples=32, device="cpu", quiet=True, keep_checkpoints=0)
# what must agree bitwise between an interrupted and an uninterrupted run
_NUMBERS = ("test_accuracy_final", "test_loss_final", "test_accuracy_best_val", "test_loss_best_val", "best_epoch",
            "best_val_accuracy", "realised_sparsity", "kept_weights", "layer_density", "collapsed_layers",
            "pruned_weights_nonzero")


def _assert_same_run(a: dict, b: dict) -> None:
    for key in _NUMBERS:
        assert a[key] == b[key], key
    for key, values in a["history"].items():
        if key != "epoch_seconds":
            assert values == b["history"][key], key
    ca = load_checkpoint(checkpoint_path(a["run_dir"], a["config"]["epochs"] - 1))
    cb = load_checkpoint(checkpoint_path(b["run_dir"], b["config"]["epochs"] - 1))
    for part in ("model",):
        assert ca[part].keys() == cb[part].keys()
        assert all(torch.equal(ca[part][k], cb[part][k]) for k in ca[part]), part
    assert all(torch.equal(ca["best"]["state"][k], cb["best"]["state"][k]) for k in ca["best"]["state"])


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> dict:
    """The tiny config run once, uninterrupted, keeping every checkpoint."""
    return run({**TINY, "out_dir": str(tmp_path_factory.mktemp("runs"))})


def _copy_run(result: dict, out_dir: Path, keep_through: int) -> Path:
    """A copy of a finished run as a crash after epoch ``keep_through`` would have left it."""
    src = Path(result["run_dir"])
    dst = out_dir / src.name
    shutil.copytree(src, dst)
    (dst / "result.json").unlink()
    for epoch, path in list_checkpoints(dst):
        if epoch > keep_through:
            path.unlink()
    return dst


# ---------------------------------------------------------------------- config
def test_config_defaults_are_the_paper_protocol():
    c = RunConfig()
    assert (c.dataset, c.model, c.width, c.criterion) == ("cifar10", "resnet18", 1.0, "fts")
    assert (c.epochs, c.warmup, c.lr, c.momentum, c.weight_decay, c.batch_size) == (160, 0, 0.01, 0.9, 5e-4, 512)
    assert (c.milestones, c.gamma, c.split_seed, c.val_fraction) == ((60, 120), 0.2, 42, 0.2)
    assert RunConfig.from_dict(c.to_dict()) == c


def test_yaml_config_round_trip_and_yaml11_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("weight_decay: 5e-4\nlr: 1e-2\nmilestones: [3, 5]\nwidth: 1\nepochs: 6\n")
    c = RunConfig.from_yaml(path)
    assert c.weight_decay == 5e-4 and c.lr == 0.01 and c.milestones == (3, 5) and c.width == 1.0
    assert RunConfig.from_dict(yaml.safe_load(c.to_yaml())) == c
    (tmp_path / "empty.yaml").write_text("")  # an empty file is a mistake, not the CIFAR defaults
    with pytest.raises(ValueError, match="empty.yaml' is empty"):
        RunConfig.from_yaml(tmp_path / "empty.yaml")


def test_config_hash_ignores_where_and_how_loudly_but_not_what():
    c = RunConfig(**{k: v for k, v in TINY.items()})
    assert c.replace(out_dir="elsewhere", quiet=False, device="auto").config_hash() == c.config_hash()
    assert c.replace(seed=1).config_hash() != c.config_hash()
    assert c.replace(criterion_options={"sign": "-"}).config_hash() != c.config_hash()
    assert c.name.startswith("resnet18-w0.0625-synthetic-fts-s0.8-seed0-")


@pytest.mark.parametrize("change, match", [
    ({"lrr": 0.1}, r"unknown config key\(s\): 'lrr' \(did you mean 'lr'\?\)"),
    ({"warmup": 4}, r"warmup=4 must be < epochs=4"),
    ({"batch_size": 0}, r"batch_size=0: must be > 0"),
    ({"batch_size": -8}, r"batch_size=-8: must be > 0"),
    ({"sparsity": 1.0}, r"sparsity=1.0: must be in \[0, 1\)"),
    ({"warmup_kind": "dense"}, r"warmup_kind='dense': allowed: train, bn"),
    ({"milestones": [3, 2]}, r"milestones=\(3, 2\): must be strictly increasing"),
    ({"epochs": 2.5}, r"epochs=2.5: expected int"),
    ({"model": "resnet19"}, r"unknown model 'resnet19' \(did you mean 'resnet18'\?\); known: .*resnet18.*vgg19"),
    ({"dataset": "cifar11"}, r"unknown dataset 'cifar11' \(did you mean 'cifar10'\?\); known: .*cifar10.*digits"),
    ({"criterion": "ftss"}, r"unknown criterion 'ftss' \(did you mean 'fts'\?\); known: .*fts.*random"),
    ({"scope": "local"}, r"scope='local'.*global"),
    ({"prunable": "everything"}, r"unknown prunable rule 'everything'"),
    ({"criterion_options": {"sing": "-"}}, r"unknown option\(s\) 'sing' \(did you mean 'sign'\?\) for criterion 'fts'; allowed: sign, absolute"),
    ({"device": "gpu"}, r"device='gpu': allowed: auto, cpu"),
    # criterion option values, by known rule or by the type of the registered default
    ({"criterion_options": {"sign": -1}}, r"option 'sign' of criterion 'fts' must be '\+' or '-', got -1"),
    ({"criterion_options": {"absolute": "yes"}}, r"option 'absolute' of criterion 'fts' must be true or false"),
    ({"criterion": "grasp", "criterion_options": {"convention": "wang"}},
     r"option 'convention' of criterion 'grasp' must be 'authors' or 'reference', got 'wang'"),
    ({"criterion": "grasp", "criterion_options": {"temperature": 0}}, r"'temperature'.*must be a finite number > 0"),
    ({"criterion": "hts", "criterion_options": {"probes": 0}}, r"'probes' of criterion 'hts' must be an integer >= 1"),
    ({"criterion": "hutchinson_diag", "criterion_options": {"probes": 2.5}}, r"'probes'.*integer >= 1, got 2.5"),
    ({"criterion": "fbss", "criterion_options": {"damping": 0}}, r"'damping'.*> 0, got 0 .*0 would give NaN"),
    ({"criterion": "synflow", "criterion_options": {"schedule": "cosine"}},
     r"'schedule' of criterion 'synflow' must be 'exponential' or 'linear', got 'cosine'"),
    ({"criterion": "synflow", "criterion_options": {"sparsity": 1.5}}, r"'sparsity'.*>= 0 and < 1, got 1.5"),
    ({"criterion": "synflow", "criterion_options": {"input_shape": [3, 0, 32]}}, r"'input_shape'.*positive integers"),
    # scoring settings that score() would only refuse after the warm-up
    ({"bn_mode": "batch"}, r"bn_mode='batch': allowed: None, eval, train, as_is"),
    ({"strategy": "fast"}, r"strategy='fast': allowed: auto, loop, hooks, vmap"),
    ({"per_class": 2}, r"score_samples=32 and per_class=2: give at most one"),
    ({"score_samples": 129}, r"config score_samples=129: must be an integer in \[1, 128\] \(the scoring data has 128"),
    ({"score_samples": None, "per_class": 17}, r"config per_class=17: class \d+ of the scoring data has only 1[0-6] samples"),
    ({"bn_mode": "train"}, r"bn_mode='train': criterion 'fts' needs per-sample gradients, but BatchNorm 'bn1'"),
    ({"bn_mode": "as_is", "criterion": "fisher_diag"}, r"bn_mode='as_is': criterion 'fisher_diag' needs per-sample"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path, change, match):
    out = tmp_path / "runs"
    with pytest.raises((ValueError, TypeError), match=match):
        run({**TINY, "out_dir": str(out), **change})
    assert not out.exists()


def test_bad_scoring_settings_fail_before_any_training(tmp_path, monkeypatch):
    """The checks above run before the warm-up: no epoch is trained, no directory created."""
    import fts_core.experiments.runner

    def fail(*args, **kwargs):
        raise AssertionError("training started before the scoring settings were checked")

    monkeypatch.setattr(fts_core.experiments.runner, "train_epoch", fail)
    out = tmp_path / "runs"
    with pytest.raises(ValueError, match=r"config score_samples=1000: must be an integer in \[1, 128\]"):
        run({**TINY, "score_samples": 1000, "out_dir": str(out)})
    assert not out.exists()


def test_score_samples_do_not_limit_data_free_criteria(tmp_path):
    """random/magnitude/synflow ignore the scoring sample, so a large one is no error; synflow
    with ``sparsity: null`` aims at the run's sparsity."""
    r = run({**TINY, "criterion": "synflow", "criterion_options": {"sparsity": None, "rounds": 2},
             "score_samples": 10_000, "epochs": 1, "warmup": 0, "milestones": [], "out_dir": str(tmp_path)})
    assert r["realised_sparsity"] == pytest.approx(0.8, abs=1e-3) and r["pruned_weights_nonzero"] == 0


def test_hooks_strategy_on_layers_it_cannot_handle_fails_up_front(tmp_path, monkeypatch):
    from torch import nn

    from fts_core.setup.models import MODELS

    class Standardized(nn.Conv2d):  # transforms its weight before convolving: no exact per-layer rule
        def forward(self, x):
            w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
            return nn.functional.conv2d(x, w, self.bias)

    def grouped(num_classes=10, in_channels=3, width=1.0):
        return nn.Sequential(collections.OrderedDict(
            conv=nn.Conv2d(in_channels, 4, 3, groups=1), grouped=Standardized(4, 4, 3),
            pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), linear=nn.Linear(4, num_classes)))

    monkeypatch.setitem(MODELS, "test_grouped_cnn", grouped)
    out = tmp_path / "runs"
    with pytest.raises(ValueError, match=r"config strategy='hooks' cannot handle grouped.weight: Standardized overrides"):
        run({**TINY, "model": "test_grouped_cnn", "strategy": "hooks", "out_dir": str(out)})
    assert not out.exists()


def test_missing_dataset_files_fail_before_anything_is_written(tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(FileNotFoundError, match="missing"):
        run({**TINY, "dataset": "cifar10", "data_options": {}, "root": str(tmp_path / "nothing-here"),
             "out_dir": str(out)})
    assert not out.exists()


def test_existing_run_dir_with_another_config_is_refused(done, tmp_path):
    with pytest.raises(ValueError, match=r"different config \(differs in: seed\)"):
        run({**TINY, "out_dir": str(Path(done["run_dir"]).parent), "run_name": Path(done["run_dir"]).name,
             "seed": 1})


# ---------------------------------------------------------------------- the protocol
def test_run_follows_the_protocol(done):
    r = done
    run_dir = Path(r["run_dir"])
    assert {p.name for p in run_dir.iterdir()} == {"config.yaml", "mask.pt", "result.json",
                                                    *(f"checkpoint-000{e}.pt" for e in range(4))}
    assert json.loads((run_dir / "result.json").read_text()) == r
    assert RunConfig.from_yaml(run_dir / "config.yaml") == RunConfig.from_dict(r["config"])
    h = r["history"]
    assert h["epoch"] == [0, 1, 2, 3] and h["sparse"] == [False, True, True, True]  # pruned at epoch `warmup`
    assert h["lr"] == pytest.approx([0.05, 0.05, 0.01, 0.002])  # milestones count from epoch 0 of the run
    assert r["val_accuracy"] == h["val_accuracy"] and len(r["train_loss"]) == 4 and len(r["epoch_seconds"]) == 4
    # best-validation model: a sparse epoch with the highest validation accuracy (first of ties)
    sparse_val = h["val_accuracy"][1:]
    assert r["best_epoch"] == 1 + sparse_val.index(max(sparse_val)) and r["best_val_accuracy"] == max(sparse_val)
    for key in ("test_accuracy_final", "test_accuracy_best_val"):
        assert 0.0 <= r[key] <= 1.0
    # sparsity over the prunable set, exactly round((1 - s) n) kept, and exactly zero after training
    masks = torch.load(run_dir / "mask.pt")
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert r["prunable_weights"] == total and r["kept_weights"] == kept == round(0.2 * total)
    assert r["realised_sparsity"] == pytest.approx(0.8, abs=1 / total)
    assert r["layer_density"] == pytest.approx({n: m.float().mean().item() for n, m in masks.items()})
    assert r["pruned_weights_nonzero"] == 0
    final = load_checkpoint(checkpoint_path(run_dir, 3))["model"]
    for name, m in masks.items():
        assert torch.count_nonzero(final[name][~m]) == 0, name
    assert isinstance(r["collapsed_layers"], list)
    made = r["provenance"]  # stored once, under one key
    assert r["scoring_seconds"] > 0 and made["device"].startswith("cpu") and r["resumed_from"] == []
    assert made["versions"]["torch"] == torch.__version__ and made["versions"]["fts_core"] == fts_core.__version__
    assert set(made) == {"git_revision", "git_dirty", "versions", "device"}
    assert not {"device", "versions", "git_revision", "sparsity", "target_sparsity"} & set(r)  # one name each


def test_finished_run_is_read_back_without_recomputing(done, monkeypatch):
    import fts_core.experiments.runner

    def fail(*args, **kwargs):
        raise AssertionError("a finished run must not load data or train")

    monkeypatch.setattr(fts_core.experiments.runner, "load_data", fail)
    monkeypatch.setattr(fts_core.experiments.runner, "train_epoch", fail)
    again = run({**TINY, "out_dir": str(Path(done["run_dir"]).parent), "quiet": False})
    assert again == done


@pytest.mark.parametrize("crashed_after", [0, 2])  # 0: dense warm-up only, re-scoring needed; 2: sparse
def test_resume_from_a_checkpoint_is_bitwise_identical(done, tmp_path, crashed_after):
    _copy_run(done, tmp_path, keep_through=crashed_after)
    resumed = run({**TINY, "out_dir": str(tmp_path)})
    assert resumed["resumed_from"] == [crashed_after + 1]
    _assert_same_run(done, resumed)


def test_channels_last_training_keeps_masks_and_resumes_bitwise(tmp_path):
    """NHWC layout after scoring: gradient hooks survive the layout change, weights stay sparse."""
    config = {**TINY, "width": 0.25, "channels_last": True, "epochs": 3, "out_dir": str(tmp_path / "a")}
    straight = run(config)
    assert straight["pruned_weights_nonzero"] == 0 and straight["channels_last"] is True
    w = load_checkpoint(checkpoint_path(straight["run_dir"], 2))["model"]["conv1.weight"]
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    _copy_run(straight, tmp_path, keep_through=1)
    resumed = run({**config, "out_dir": str(tmp_path)})
    assert resumed["resumed_from"] == [2]
    _assert_same_run(straight, resumed)


def test_channels_last_is_automatic_on_cpu_and_refused_where_onednn_corrupts_memory(tmp_path):
    # width 1/16: the first shortcut (1x1, stride 2) has 4 input channels: oneDNN#6035
    assert run({**TINY, "out_dir": str(tmp_path / "auto")})["channels_last"] is False
    with pytest.raises(ValueError, match=r"layer2\.0\.shortcut\.0.*4 input channels.*oneDNN#6035"):
        run({**TINY, "channels_last": True, "out_dir": str(tmp_path / "forced")})
    assert not (tmp_path / "forced").exists()  # refused before anything was written
    wide = run({**TINY, "width": 0.25, "epochs": 2, "warmup": 0, "milestones": [1], "out_dir": str(tmp_path / "w")})
    assert wide["channels_last"] is True


def test_damaged_newest_checkpoint_is_skipped_with_a_warning(done, tmp_path):
    run_dir = _copy_run(done, tmp_path, keep_through=2)
    newest = checkpoint_path(run_dir, 2)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # half-written
    with pytest.warns(RuntimeWarning, match=r"checkpoint-0002\.pt.*checksum mismatch"):
        resumed = run({**TINY, "out_dir": str(tmp_path)})
    assert resumed["resumed_from"] == [2]  # from checkpoint-0001
    _assert_same_run(done, resumed)


def test_batchnorm_warmup_prunes_before_epoch_zero(tmp_path, monkeypatch):
    import fts_core.experiments.runner

    calls = []
    original = fts_core.experiments.runner.refresh_batchnorm
    monkeypatch.setattr(fts_core.experiments.runner, "refresh_batchnorm", lambda *a, **k: calls.append(1) or original(*a, **k))
    r = run({**TINY, "warmup_kind": "bn", "warmup": 2, "epochs": 2, "milestones": [1], "out_dir": str(tmp_path)})
    assert len(calls) == 2  # two refresh passes, not counted as epochs
    assert r["prune_epoch"] == 0 and r["history"]["sparse"] == [True, True]
    assert r["history"]["lr"] == pytest.approx([0.05, 0.01]) and r["pruned_weights_nonzero"] == 0


# ---------------------------------------------------------------------- a real kill
def _cli(config: Path, out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "fts_core", "run", str(config), "--set", f"out_dir={out_dir}", "--quiet"]


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(done, tmp_path):
    """`python -m fts_core run` killed (SIGKILL) after the first sparse checkpoint, then run
    again: it resumes and ends bitwise where the uninterrupted run (``done``) ended."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "keep_checkpoints": 2}))  # not part of the config hash
    cfg = RunConfig.from_yaml(config)
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}  # `done` ran on one thread too
    victim = subprocess.Popen(_cli(config, tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = tmp_path / cfg.name
    deadline = time.monotonic() + 240
    while not checkpoint_path(run_dir, 1).exists():  # the first sparse epoch is on disk
        assert victim.poll() is None, f"the run ended before it could be killed: {victim.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (run_dir / "result.json").exists(), "killed too late to test anything"
    left = [e for e, _ in list_checkpoints(run_dir)]
    assert left and max(left) < 3

    resumed = subprocess.run(_cli(config, tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    b = json.loads((run_dir / "result.json").read_text())
    assert done["resumed_from"] == [] and b["resumed_from"] == [max(left) + 1]
    _assert_same_run(done, b)
    assert [e for e, _ in list_checkpoints(run_dir)] == [3]  # keep_checkpoints=2, then only the final one
    assert str(run_dir) in resumed.stdout and "test accuracy final" in resumed.stdout


# ---------------------------------------------------------------------- command line
def test_cli_reports_bad_keys_and_writes_nothing(tmp_path, capsys):
    from fts_core.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / "runs")}))
    assert main(["run", str(config), "--set", "epochs=3", "--set", "learning_rate=0.1"]) == 2
    assert "'learning_rate'" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_set_values_are_parsed_as_yaml():
    assert _parse_set(["epochs=3", "milestones=[1, 2]", "lr=1e-3", "subset=null", "run_name=a=b"]) == {
        "epochs": 3, "milestones": [1, 2], "lr": "1e-3", "subset": None, "run_name": "a=b"}
    assert RunConfig.from_dict(_parse_set(["lr=1e-3"])).lr == 1e-3
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _parse_set(["epochs"])


# ---------------------------------------------------------------------- checkpoint files
def test_checkpoint_round_trip_is_exact(tmp_path):
    state = {"epoch": 3, "w": torch.randn(5, 3), "rng": torch.get_rng_state(), "hist": [0.5, 0.25], "m": None,
             "nested": {"mask": torch.rand(4) > 0.5}}
    path = save_checkpoint(state, tmp_path / "checkpoint-0003.pt")
    back = load_checkpoint(path)
    assert back["epoch"] == 3 and back["hist"] == [0.5, 0.25] and back["m"] is None
    assert torch.equal(back["w"], state["w"]) and torch.equal(back["rng"], state["rng"])
    assert torch.equal(back["nested"]["mask"], state["nested"]["mask"])
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-0003.pt"]  # no temporaries left


def test_damaged_checkpoints_are_detected(tmp_path):
    path = save_checkpoint({"epoch": 0, "w": torch.randn(100)}, tmp_path / "c.pt")
    data = path.read_bytes()
    for cut in (0, 10, 90, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptCheckpointError):
            load_checkpoint(path)
    flipped = bytearray(data)
    flipped[-40] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        load_checkpoint(path)
    torch.save({"epoch": 0}, path)  # a plain torch file is not one of ours
    with pytest.raises(CorruptCheckpointError, match="header"):
        load_checkpoint(path)


def test_latest_good_checkpoint_and_pruning(tmp_path):
    for e in range(4):
        save_checkpoint({"epoch": e}, checkpoint_path(tmp_path, e))
    checkpoint_path(tmp_path, 3).write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="checkpoint-0003"):
        epoch, state = latest_checkpoint(tmp_path)
    assert epoch == 2 and state == {"epoch": 2}
    with pytest.warns(RuntimeWarning) as caught:
        assert latest_checkpoint(tmp_path, validate=lambda e, s: "required test" if e >= 2 else None)[0] == 1
    assert sum("checkpoint-0002.pt: required test" in str(w.message) for w in caught) == 1
    assert [p.name for p in prune_checkpoints(tmp_path, keep=2)] == ["checkpoint-0001.pt", "checkpoint-0000.pt"]
    assert [e for e, _ in list_checkpoints(tmp_path)] == [3, 2]
    assert prune_checkpoints(tmp_path, keep=0) == []


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # fails while writing the temporary
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # usual permissions, not mkstemp's 0600
