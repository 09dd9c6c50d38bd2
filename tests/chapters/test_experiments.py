"""Chapter 4's support code on small synthetic grids whose verdicts are known by construction."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fts_core.chapters import experiments as E
from fts_core.experiments import statistics as ST

SPARSITIES = (0.9, 0.99)


def _row(criterion, sparsity, seed, acc, kind="init", empty=0, cut=False):
    return {"criterion": criterion, "sparsity": sparsity, "seed": seed, "split_seed": 42, "kind": kind,
            "test_accuracy_final": acc, "collapsed_layers": [f"l{i}" for i in range(empty)],
            "collapse": {"path_exists": not cut}, "warmup": 0 if kind in ("init", "dense") else 1,
            "warmup_kind": "train" if kind != "bn" else "bn", "dataset": "toy", "model": "vgg19", "width": 0.125,
            "epochs": 2, "layer_density": {"a": 0.1, "b": 0.0 if empty else 0.2}}


def _grid(fts_gain=0.05, noise=0.002, seeds=5, collapse_init=True, remedy_fixes=True, missing=0):
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        base = 0.8 + 0.01 * seed  # a seed effect shared by every criterion: pairing removes it
        rows.append(_row("random", 0.0, seed, 0.9 + 0.01 * seed, kind="dense"))
        for s in SPARSITIES:
            rows.append(_row("random", s, seed, base + noise * rng.standard_normal()))
            rows.append(_row("snip", s, seed, base + fts_gain + noise * rng.standard_normal(),
                             empty=2 if (collapse_init and s == 0.99) else 0))
            rows.append(_row("fts", s, seed, base + fts_gain + noise * rng.standard_normal(),
                             empty=1 if (collapse_init and s == 0.99) else 0, cut=seed == 0 and collapse_init))
        for c in ("fts", "snip"):
            rows.append(_row(c, 0.99, seed, base + fts_gain + 0.02 + noise * rng.standard_normal(), kind="bn",
                             empty=0 if remedy_fixes else 3))
    table = pd.DataFrame(rows)
    ids = [f"cell{i}" for i in range(len(table) + missing)]
    return E.Grid("VGG19", ids, table, pd.DataFrame())


def test_seeds_for_half_width_is_the_smallest_n_whose_interval_is_narrow_enough():
    for sd, hw in ((1.0, 1.0), (0.3, 0.1), (2.0, 0.5)):
        n = ST.seeds_for_half_width(sd, hw)
        half = lambda k: stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k)  # noqa: E731
        assert half(n) < hw <= half(n - 1) if n > 2 else half(n) < hw
    assert ST.seeds_for_half_width(1.0, 1.0) == 7  # t(6)/√7 = 0.925, t(5)/√6 = 1.05
    assert ST.seeds_for_half_width(1.0, 1e-3) is None and ST.seeds_for_half_width(float("nan"), 1.0) is None


def test_the_dense_interval_stays_inside_what_an_accuracy_can_be():
    grid = _grid()
    spread = grid.table["kind"] == "dense"
    grid.table.loc[spread, "test_accuracy_final"] = [0.1, 0.99, 0.2, 0.98, 0.15]  # a wide spread over seeds
    mean, low, high, n = grid.dense_interval()
    assert n == 5 and 0.0 <= low < mean < high <= 1.0 and (low, high) != (mean, mean)


def test_progress_line_says_how_many_cells_are_missing():
    assert "missing" not in _grid().progress_line()
    line = _grid(missing=7).progress_line()
    assert "7 cells are missing" in line and "5-5 seeds" in line


def test_differences_are_paired_and_count_the_seeds_that_would_resolve_them():
    d = E.differences(_grid(fts_gain=0.05))
    vs_random = d[d.other == "random"]
    assert vs_random["resolved"].all() and (vs_random["sign"] > 0).all()  # FTS +5 points, noise 0.2
    assert (vs_random["half_width"] < 1).all()
    open_ = E.differences(_grid(fts_gain=0.0, noise=0.01))
    for r in open_[~open_["resolved"]].itertuples():  # the seed count resolves the measured mean at the measured sd
        if not pd.isna(r.seeds_needed):
            assert ST.t_quantile(r.seeds_needed) * r.sd / math.sqrt(r.seeds_needed) < abs(r.mean)
    note = E.width_note(open_)
    assert "paired intervals are wider than ±0.7 points" in note


def test_collapse_table_lists_empty_layers_per_seed_and_lost_paths():
    table = E.collapse_table(_grid())
    fts = table[(table.criterion == "FTS") & (table.scored == "at init")].iloc[0]
    assert fts["seed 0"] == "1!" and fts["seed 1"] == "1"
    assert not ((table.criterion == "Random").any())  # random never emptied a layer here
    assert E.collapse_table(_grid(collapse_init=False)).empty


def test_claims_are_judged_from_the_numbers():
    def verdicts(grid):
        v = E.judge_claims([grid])
        return dict(zip(v["key"], v["verdict"]))

    good = verdicts(_grid(fts_gain=0.05))
    assert good["fts_vs_random"] == "supported"
    assert good["fts_vs_snip"] == "supported"  # equal in expectation, interval within ±0.7 points
    assert good["collapse_at_init"] == "supported"
    assert good["bn_avoids_collapse"] == "supported" and good["bn_raises_accuracy"] == "supported"
    assert good["warmup_avoids_collapse"] == "not resolved by these runs"  # no warm-up runs
    bad = verdicts(_grid(fts_gain=-0.05, remedy_fixes=False))
    assert bad["fts_vs_random"] == "contradicted" and bad["bn_avoids_collapse"] == "contradicted"
    noisy = verdicts(_grid(fts_gain=0.001, noise=0.05, seeds=3))
    assert noisy["fts_vs_random"] == "not resolved by these runs"
    assert verdicts(_grid(collapse_init=False))["bn_avoids_collapse"] == "not resolved by these runs"


@pytest.mark.parametrize("plot", [E.plot_accuracy, E.plot_layer_density])
def test_figures_have_a_row_per_network_with_pruned_runs(plot):
    import matplotlib

    matplotlib.use("Agg")
    only_dense = _grid()
    only_dense.table = only_dense.table[only_dense.table.kind == "dense"]
    assert plot([only_dense]) is None
    fig = plot([_grid(), only_dense, _grid()])
    assert len(fig.axes) == (4 if plot is E.plot_accuracy else 2)
