"""Layer-collapse study logic: grid, model states, sweep tables, first-collapse sparsity, and the
training runs (through fts_core.run, with RunConfig's protocol)."""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fts_core
from fts_core.chapters import collapse
from fts_core.chapters.collapse import (
    DENSE,
    first_collapse,
    prepare_model,
    run_outcome,
    sparsity_grid,
    sweep_collapse,
    train_config,
    train_pruned,
)
from fts_core.experiments.config import RunConfig
from fts_core.io import checkpoint_path, load_checkpoint
from fts_core.masks import prunable_parameters

WIDTH = 0.0625
DATA = dict(dataset="synthetic", data_options={"train_size": 80, "test_size": 40}, split_seed=0)
# the training runs of these tests: the bundle's data, a quick schedule, on the CPU
TRAIN = dict(DATA, width=WIDTH, epochs=2, batch_size=32, milestones=[1], score_samples=16, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def bundle():
    return fts_core.load_data("synthetic", train_size=80, test_size=40, seed=0)


def fake_scorer(criterion, model, data, *, num_samples=None, seed=0, quiet=True, sparsity=None, **_):
    """'deep_first': layer l scored U(0,1)·10^-l (later layers lose first -> the last layer empties
    early); 'uniform': U(0,1) everywhere; 'iterative': like uniform but demands ``sparsity``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (n, p) in enumerate(prunable_parameters(model).items()):
        s = torch.rand(p.shape, generator=g, dtype=torch.float64)
        out[n] = s * 10.0 ** (-i) if criterion == "deep_first" else s
    if criterion == "iterative":
        assert sparsity is not None
    return out


fake_scorer.criteria = ("deep_first", "uniform", "iterative")
fake_scorer.sparsity_dependent = frozenset({"iterative"})


def test_sparsity_grid_is_log_spaced_in_remaining_weights():
    grid = sparsity_grid(0.5, 0.999, 4)
    assert grid[0] == 0.5 and grid[-1] == 0.999
    dens = 1 - np.array(grid)
    ratios = dens[1:] / dens[:-1]
    assert np.allclose(ratios, ratios[0], rtol=1e-4)
    assert sparsity_grid(0.9, 0.999, 3) == [0.9, 0.99, 0.999]
    for bad in [(0.9, 0.5, 3), (0.5, 1.0, 3), (0.5, 0.9, 1)]:
        with pytest.raises(ValueError):
            sparsity_grid(*bad)


def test_states_share_the_initialisation(bundle):
    init, opt0 = prepare_model("vgg19", bundle, "init", width=WIDTH, seed=3)
    bn, opt1 = prepare_model("vgg19", bundle, "bn", width=WIDTH, seed=3)
    warm, opt2 = prepare_model("vgg19", bundle, "warmup", width=WIDTH, seed=3)
    assert opt0 is None and opt1 is None and isinstance(opt2, torch.optim.SGD)
    protocol = RunConfig()  # the warm-up optimiser is RunConfig's, not a copy of its numbers
    group = opt2.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (protocol.lr, protocol.momentum,
                                                                       protocol.weight_decay)
    p0, p1, p2 = (dict(m.named_parameters()) for m in (init, bn, warm))
    assert all(torch.equal(p0[k], p1[k]) for k in p0)  # BN refresh: no weight moves
    assert any(not torch.equal(p0[k], p2[k]) for k in p0)  # warm-up trains
    b0, b1 = dict(init.named_buffers()), dict(bn.named_buffers())
    assert any(not torch.equal(b0[k], b1[k]) for k in b0 if "running_var" in k)
    assert not init.training and not bn.training and not warm.training
    with pytest.raises(ValueError, match="'cold'"):
        prepare_model("vgg19", bundle, "cold", width=WIDTH)


def test_sweep_tables_and_collapse(bundle):
    grid = [0.5, 0.9, 0.99]
    sw = sweep_collapse("vgg19", bundle, criteria=("deep_first", "uniform", "iterative"), sparsities=grid,
                        states=("init", "bn"), width=WIDTH, num_samples=16, scorer=fake_scorer)
    L, N = sw.layers, sw.nets
    n_layers = 16
    assert len(L) == 2 * 3 * 3 * n_layers and len(N) == 2 * 3 * 3
    assert set(L.columns) >= {"model", "state", "criterion", "sparsity", "layer", "depth", "size", "kept",
                              "density", "effective_density"}
    total = int(L.groupby(["state", "criterion", "sparsity"])["size"].sum().iloc[0])
    kept = L.groupby(["state", "criterion", "sparsity"])["kept"].sum()
    for (state, crit, s), k in kept.items():
        assert k == round((1 - s) * total)
    assert L["density"].between(0, 1).all() and (L["effective_density"] <= L["density"] + 1e-12).all()
    # deep_first empties the last conv layer already at 50 %, uniform never on this grid
    dn = N[(N.criterion == "deep_first")]
    assert dn["layer_collapse"].all() and dn["disconnected"].all()
    assert (dn["first_empty"] != "").all() and (dn["empty_layers"] >= 1).all()
    # uniform scores: no collapse at 50-90 % (at 99 % the 108-weight first layer may empty by chance)
    un = N[(N.criterion == "uniform") & (N.sparsity <= 0.9)]
    assert not un["layer_collapse"].any() and un["path_exists"].all()
    fc = first_collapse(N)
    got = {(r.state, r.criterion): r.first_collapse for r in fc.itertuples()}
    assert got[("init", "deep_first")] == 0.5 and got[("init", "uniform")] > 0.9
    assert set(fc.columns) == {"model", "state", "criterion", "first_collapse", "monotone"}
    with pytest.raises(ValueError, match="'nope'"):
        sweep_collapse("vgg19", bundle, criteria=("nope",), scorer=fake_scorer)


def test_first_collapse_on_a_hand_made_table():
    rows = []
    for s, lc, dc in [(0.5, False, False), (0.9, True, False), (0.99, False, False), (0.999, True, True)]:
        rows.append(dict(model="m", state="init", criterion="c", sparsity=s, layer_collapse=lc, disconnected=dc))
    df = pd.DataFrame(rows)
    fc = first_collapse(df).iloc[0]
    assert fc.first_collapse == 0.9 and not fc.monotone
    assert first_collapse(df, "disconnected").iloc[0].first_collapse == 0.999
    with pytest.raises(ValueError, match="'bad'"):
        first_collapse(df, "bad")


def test_warmup_state_is_the_model_that_run_prunes(bundle, tmp_path):
    """prepare_model's "warmup" state is bitwise the network fts_core.run scores after its warm-up
    epoch (its checkpoint of epoch 0): the same init seed, data order and optimiser."""
    result = fts_core.run(RunConfig(model="vgg19", criterion="random", sparsity=0.5, warmup=1, seed=3,
                                    out_dir=str(tmp_path), quiet=True, keep_checkpoints=0, **TRAIN))
    ran = load_checkpoint(checkpoint_path(result["run_dir"], 0))["model"]
    model, _ = prepare_model("vgg19", bundle, "warmup", width=WIDTH, seed=3, batch_size=TRAIN["batch_size"])
    mine = model.state_dict()
    assert ran.keys() == mine.keys() and all(torch.equal(ran[k], mine[k]) for k in ran)


def test_train_config_maps_states_onto_runconfig_and_keeps_its_defaults():
    given = dict(width=WIDTH, seed=2, epochs=3)
    for state, warmup in collapse.STATE_WARMUP.items():
        cfg = train_config("vgg19", "fts", 0.9, state, **given)
        assert (cfg.model, cfg.criterion, cfg.sparsity, cfg.width, cfg.seed, cfg.epochs) == ("vgg19", "fts", 0.9,
                                                                                            WIDTH, 2, 3)
        assert {k: getattr(cfg, k) for k in warmup} == warmup
        # every field nobody named is RunConfig's default: lr, momentum, weight decay, batch size, ...
        named = {"model", "criterion", "sparsity", *warmup, *given}
        defaults = RunConfig()
        assert all(getattr(cfg, f.name) == getattr(defaults, f.name)
                   for f in dataclasses.fields(RunConfig) if f.name not in named)
    assert train_config("vgg19", "fts", 0.9, "init").prune_epoch == 0
    assert train_config("vgg19", "fts", 0.9, "bn").prune_epoch == 0
    assert train_config("vgg19", "fts", 0.9, "warmup").prune_epoch == 1
    with pytest.raises(ValueError, match=r"\['warmup'\] are set by .* state='bn'"):
        train_config("vgg19", "fts", 0.9, "bn", warmup=2)
    with pytest.raises(ValueError, match="'cold'"):
        train_config("vgg19", "fts", 0.9, "cold")
    with pytest.raises(ValueError, match="unknown config key.*'learning_rate'"):
        train_config("vgg19", "fts", 0.9, "init", learning_rate=0.1)


def test_collapse_holds_no_training_defaults():
    """The optimiser and schedule are RunConfig's: no function of the chapter takes them, and the
    module's source spells none of their values."""
    for fn in (prepare_model, sweep_collapse, train_config, train_pruned):
        params = inspect.signature(fn).parameters
        assert not {"lr", "momentum", "weight_decay", "milestones", "gamma"} & set(params), fn.__name__
        if "batch_size" in params:
            assert params["batch_size"].default is None, fn.__name__  # None = RunConfig's
    source = inspect.getsource(collapse)
    assert not re.search(r"\b(lr|momentum|weight_decay|milestones|gamma)\s*[:=][^=]", source)
    assert "manual_seed" not in source  # the init seed goes through fts_core.setup.seeding


def test_train_pruned_is_fts_core_run(tmp_path):
    """train_pruned gives what fts_core.run gives for the same RunConfig, spelt out by hand."""
    by_hand = RunConfig(model="vgg19", criterion="random", sparsity=0.9, warmup=1, warmup_kind="bn",
                        out_dir=str(tmp_path / "by_hand"), quiet=True, **TRAIN)
    expected = fts_core.run(by_hand)
    got = train_pruned("vgg19", "random", 0.9, "bn", out_dir=tmp_path / "chapter", **TRAIN)
    assert Path(got["run_dir"]).name == by_hand.name  # the same config (hash)
    assert {k: v for k, v in got.items() if k != "run_dir"} == \
        {k: v for k, v in run_outcome(expected).items() if k != "run_dir"}
    assert train_pruned("vgg19", "random", 0.9, "bn", out_dir=tmp_path / "chapter", **TRAIN) == got  # kept, reused


def test_train_pruned_keeps_sparsity_and_reports_collapse(bundle, tmp_path):
    out = train_pruned("vgg19", "random", 0.9, "warmup", out_dir=tmp_path, **TRAIN)
    assert abs(out["realised_sparsity"] - 0.9) < 1e-3 and not out["layer_collapse"] and out["path_exists"]
    # magnitude at 98 %: the wide layers' small initial weights lose, some layers empty
    out = train_pruned("vgg19", "magnitude", 0.98, "init", out_dir=tmp_path, **TRAIN)
    assert out["layer_collapse"] and out["empty_layers"] and out["path_exists"] is False
    # no input->output path: the output ignores the input, so one class is predicted for all
    fractions = np.bincount(bundle.test.y.cpu().numpy()) / len(bundle.test.y)
    assert np.isclose(fractions, out["test_accuracy"]).any()
    dense = train_pruned("vgg19", *DENSE, "init", out_dir=tmp_path, **TRAIN)
    assert dense["realised_sparsity"] == 0.0 and not dense["layer_collapse"] and dense["path_exists"]


def test_run_outcome_counts_only_pruned_weights_that_stayed_zero():
    result = {"test_accuracy_final": 0.5, "collapsed_layers": ["a"], "collapse": {"path_exists": False},
              "prunable_weights": 100, "kept_weights": 10, "pruned_weights_nonzero": 3, "run_dir": "r"}
    assert run_outcome(result) == {"test_accuracy": 0.5, "layer_collapse": True, "path_exists": False,
                                   "empty_layers": ["a"], "realised_sparsity": 0.87, "run_dir": "r"}


@pytest.mark.skipif(importlib.util.find_spec("fts_core.scoring") is None, reason="criteria.py not written yet")
def test_sweep_with_the_real_scorers(bundle):
    sw = sweep_collapse("resnet18", bundle, criteria=("magnitude", "snip"), sparsities=[0.5, 0.99],
                        states=("init",), width=WIDTH, num_samples=16)
    assert len(sw.nets) == 4 and sw.layers["density"].between(0, 1).all()
