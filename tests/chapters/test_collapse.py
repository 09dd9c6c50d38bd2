"""Layer-collapse study logic: grid, model states, sweep tables, first-collapse sparsity."""
from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

import fts_core
from fts_core.chapters.collapse import (
    first_collapse,
    prepare_model,
    sparsity_grid,
    sweep_collapse,
    train_pruned,
)
from fts_core.masks import prunable_parameters

WIDTH = 0.0625


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


def test_train_pruned_keeps_sparsity_and_reports_collapse(bundle):
    out = train_pruned("vgg19", bundle, "uniform", 0.9, "warmup", epochs=2, width=WIDTH, scorer=fake_scorer)
    assert out["realised_sparsity"] >= 0.9 - 1e-3 and not out["layer_collapse"]
    out = train_pruned("vgg19", bundle, "deep_first", 0.9, "init", epochs=1, width=WIDTH, scorer=fake_scorer)
    assert out["layer_collapse"] and out["path_exists"] is False
    # no input->output path: the output ignores the input, so one class is predicted for all
    fractions = np.bincount(bundle.test.y.cpu().numpy()) / len(bundle.test.y)
    assert np.isclose(fractions, out["test_accuracy"]).any()


@pytest.mark.skipif(importlib.util.find_spec("fts_core.scoring") is None, reason="criteria.py not written yet")
def test_sweep_with_the_real_scorers(bundle):
    sw = sweep_collapse("resnet18", bundle, criteria=("magnitude", "snip"), sparsities=[0.5, 0.99],
                        states=("init",), width=WIDTH, num_samples=16)
    assert len(sw.nets) == 4 and sw.layers["density"].between(0, 1).all()
