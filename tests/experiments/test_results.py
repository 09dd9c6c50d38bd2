"""Results tables: loading rows, seed summaries, the paper's layout, the published numbers,
and the generated sentence comparing orderings."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fts_core.experiments import results
from fts_core.experiments.results import (
    compare_ordering,
    format_mean_std,
    has_paper_results,
    load_results,
    ordering_sentence,
    paper_citation,
    paper_layout,
    paper_results,
    paper_summary,
    side_by_side,
    summarise,
)
from fts_core.experiments.statistics import (
    all_paired_differences,
    paired_differences,
    resolved_sentence,
    summarise_ci,
    t_interval,
)
from fts_core.experiments.sweeps import sweep
from fts_core.scoring.registry import CRITERIA

ACC = {  # made-up accuracies per (criterion, sparsity) and a per-seed offset
    ("fts", 0.9): 0.80, ("snip", 0.9): 0.78, ("random", 0.9): 0.70,
    ("fts", 0.95): 0.75, ("snip", 0.95): 0.76, ("random", 0.95): 0.60,
}
SEED_OFFSET = {0: -0.015, 1: 0.0, 2: 0.015}


def fake_run(config: dict) -> dict:
    """Stand-in for fts_core.run returning the made-up accuracies."""
    acc = ACC[(config["criterion"], config["sparsity"])] + SEED_OFFSET[config["seed"]]
    return {"test_accuracy_final": acc, "realised_sparsity": config["sparsity"] + 1e-4, "scoring_seconds": 0.5,
            "history": {"epoch": [0]}, "layer_density": {"conv": 0.1}}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "sweep"
    spec = {"name": "r", "out_dir": str(out), "run": "test_results:fake_run", "base": {"dataset": "digits"},
            "grid": {"criterion": ["fts", "snip", "random"], "sparsity": [0.9, 0.95], "seed": [0, 1, 2]}}
    sweep(spec, backend="serial", quiet=True)
    return load_results(out)


def test_load_results_gives_a_flat_row_per_cell(table):
    assert len(table) == 18 and table["cell_id"].is_unique
    # the target sparsity stays `sparsity`; the run's realised one is renamed
    assert np.allclose(table["realised_sparsity"] - table["sparsity"], 1e-4)
    assert (table["dataset"] == "digits").all()
    assert "history" not in table.columns  # bulky entries are left out
    assert table["layer_density"].iloc[0] == {"conv": 0.1}  # nested values stay Python objects
    for column in ("seconds", "git_revision", "device_name", "version_python", "hostname", "started"):
        assert column in table.columns


def test_load_results_reads_csv_run_dirs_and_filters(table, tmp_path):
    # a results.csv round trip
    csv = tmp_path / "r.csv"
    table.drop(columns=["layer_density"]).to_csv(csv, index=False)
    assert len(load_results(csv)) == 18
    # runner-style run directories (result.json with a config), today's layout and the earlier one
    made = {"device": "cpu (x, 2 threads)", "versions": {"torch": "2"}, "git_revision": "abc", "git_dirty": False}
    layouts = [{"sparsity": 0.9, "target_sparsity": 0.9, **made}, {"realised_sparsity": 0.9, "provenance": made}]
    for i, crit in enumerate(["fts", "snip"]):
        run_dir = tmp_path / "runs" / f"run{i}"
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps({
            "run_name": f"run{i}", "run_dir": str(run_dir),
            "config": {"criterion": crit, "sparsity": 0.9, "seed": 0, "device": "auto"},
            "test_accuracy_final": 0.5 + i / 10, "test_accuracy_best_val": 0.5, "best_epoch": 0, "history": {},
            **layouts[i]}))
    runs = load_results(tmp_path / "runs")
    assert sorted(runs["cell_id"]) == ["run0", "run1"]
    assert set(runs["device_name"]) == {"cpu (x, 2 threads)"} and set(runs["device"]) == {"auto"}
    assert set(runs["version_torch"]) == {"2"} and set(runs["git_revision"]) == {"abc"}
    assert set(runs["realised_sparsity"]) == {0.9} and "target_sparsity" not in runs  # one name each
    only = load_results(tmp_path / "runs", cell_ids=["run1"])
    assert list(only["criterion"]) == ["snip"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_results(tmp_path / "nowhere")
    assert load_results(tmp_path / "runs" / "run0" / "result.json")["cell_id"].tolist() == ["run0"]


def test_summarise_is_the_mean_and_sample_std_over_seeds(table):
    s = summarise(table)
    assert list(s.columns) == ["sparsity", "criterion", "mean", "std", "n"]
    assert len(s) == 6 and (s["n"] == 3).all()
    row = s[(s["criterion"] == "fts") & (s["sparsity"] == 0.9)].iloc[0]
    values = [0.80 + o for o in SEED_OFFSET.values()]
    assert math.isclose(row["mean"], np.mean(values)) and math.isclose(row["std"], np.std(values, ddof=1))
    with pytest.raises(KeyError, match="no_such_metric"):
        summarise(table, value="no_such_metric")


def test_paper_layout_rows_sparsity_columns_criteria_in_paper_order(table):
    layout = paper_layout(summarise(table))
    assert list(layout.index) == [0.9, 0.95]
    assert list(layout.columns) == ["Random", "SNIP", "FTS"]  # the paper's column order
    assert layout.at[0.9, "FTS"] == "80.00 ± 1.50"
    assert format_mean_std(90.0, float("nan")) == "90.00"


def test_paper_numbers_are_table1_of_v1_with_citation():
    paper = paper_results("resnet18", "cifar10")
    assert len(paper) == 5 * 9
    assert set(paper["sparsity"]) == {0.8, 0.9, 0.95, 0.98, 0.99}
    fts = paper[(paper["criterion"] == "fts") & (paper["sparsity"] == 0.9)].iloc[0]
    assert (fts["mean"], fts["std"], fts["label"]) == (90.55, 0.23, "FTS")
    mag = paper[(paper["criterion"] == "magnitude") & (paper["sparsity"] == 0.99)].iloc[0]
    assert (mag["mean"], mag["std"]) == (71.99, 0.28)
    assert set(paper["criterion"]) <= set(CRITERIA)  # the registry knows every criterion of the paper, and
    assert all(CRITERIA[c].label == lab for c, lab in zip(paper["criterion"], paper["label"]))  # its label
    assert "2502.11450" in paper_citation() and "gollini2025fishing" in paper_citation()
    assert has_paper_results("resnet18", "cifar10") and not has_paper_results("vgg19", "cifar10")
    with pytest.raises(ValueError, match="resnet18/cifar10"):
        paper_results("vgg19", "cifar100")
    # the layout reproduces the published row
    assert paper_layout(paper_summary(paper)).loc[0.99, "GraSP"] == "84.56 ± 0.46"


def test_side_by_side_pairs_ours_with_the_paper(table):
    paper = paper_results()
    both = side_by_side(summarise(table), paper)
    assert both.columns.names == ["criterion", "source"]
    assert both.at[0.9, ("FTS", "paper")] == "90.55 ± 0.23"
    assert both.at[0.9, ("FTS", "ours")] == "80.00 ± 1.50"
    assert both.at[0.8, ("FTS", "ours")] == "–"  # the paper has 80 %, we do not
    assert list(both.index) == [0.8, 0.9, 0.95, 0.98, 0.99]


def test_ordering_comparison_counts_only_resolved_pairs(table):
    paper = paper_results()
    theirs = paper_summary(paper)
    everything = all_paired_differences(table)  # our made-up data: every pair resolved when paired
    assert everything["resolved"].all() and len(everything) == 2 * 3
    # the paper against itself, with every pair declared resolved in the paper's own direction
    signs = pd.DataFrame([{"sparsity": s, "reference": a, "other": b, "sign": 1 if ma > mb else -1}
                          for s, g in theirs.groupby("sparsity") for a, ma in zip(g.criterion, g["mean"])
                          for b, mb in zip(g.criterion, g["mean"]) if a < b])
    same = compare_ordering(theirs, paper, criteria=["fts", "snip", "random"], resolved=signs)
    assert same["pairs"] == same["resolved"] == same["agree"] == 5 * 3 and same["kendall_tau"] == 1.0
    flipped = theirs.assign(mean=lambda d: 1 - d["mean"])
    opposite = compare_ordering(flipped, paper, criteria=["fts", "snip", "random"], resolved=signs.assign(sign=lambda d: -d.sign))
    assert opposite["agree"] == 0 and opposite["disagree"] == 15 and opposite["kendall_tau"] == -1.0

    # ours: FTS > SNIP at 90 %, SNIP > FTS at 95 %: by one point, which one seed std (1.5) does not
    # resolve, but the paired differences do (the per-seed offset is shared)
    unpaired = compare_ordering(summarise(table), paper)
    assert unpaired["pairs"] == 6 and unpaired["resolved"] == 5 and unpaired["unresolved"] == 1
    ours = compare_ordering(summarise(table), paper, resolved=everything)
    assert ours["sparsities"] == [0.9, 0.95] and ours["criteria"] == ["random", "snip", "fts"]
    assert ours["ours"][0.95] == ["snip", "fts", "random"] and ours["paper"][0.95] == ["fts", "snip", "random"]
    assert ours["pairs"] == ours["resolved"] == 6 and ours["agree"] == 5 and ours["disagree"] == 1
    text = ordering_sentence(ours, ours="toy setting")
    assert "resolve 6 of the 6 pairwise differences" in text and "5 have the paper's order and 1 the opposite" in text
    assert "not the paper's" in text and "95\u00a0%: SNIP > FTS > Random" in text
    none = compare_ordering(summarise(table), paper, resolved=everything.assign(sign=0))
    assert "cannot be compared" in ordering_sentence(none, ours="toy")
    with pytest.raises(ValueError, match="nothing to compare"):
        compare_ordering(summarise(table), paper, criteria=["fts"])


def test_confidence_intervals_are_student_t_over_seeds():
    from scipy import stats

    values = [0.71, 0.74, 0.69, 0.75, 0.72]
    mean, low, high, n = t_interval(values)
    half = stats.t.ppf(0.975, 4) * np.std(values, ddof=1) / math.sqrt(5)
    assert n == 5 and mean == pytest.approx(np.mean(values)) and high - mean == pytest.approx(half)
    assert mean - low == pytest.approx(half)
    m1, l1, h1, n1 = t_interval([0.7])
    assert n1 == 1 and m1 == 0.7 and math.isnan(l1) and math.isnan(h1)


def test_intervals_can_be_cut_to_the_range_of_the_value():
    collapsed = pd.DataFrame({"sparsity": 0.9, "criterion": "random", "seed": [0, 1, 2],
                              "test_accuracy_final": [0.88, 0.10, 0.87]})
    free = summarise_ci(collapsed).iloc[0]
    cut = summarise_ci(collapsed, bounds=(0.0, 1.0)).iloc[0]
    assert free["low"] < 0 and free["high"] > 1  # the t-interval of a bimodal sample
    assert (cut["low"], cut["high"]) == (0.0, 1.0) and cut["mean"] == free["mean"]


def test_paired_differences_and_the_generated_sentence(table):
    ci = summarise_ci(table)
    row = ci[(ci.criterion == "fts") & (ci.sparsity == 0.9)].iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.80) and row["low"] < 0.80 < row["high"]
    d = paired_differences(table, reference="fts")
    assert len(d) == 4 and d["resolved"].all()  # the seed offset cancels in every pair
    at95 = d[(d.sparsity == 0.95) & (d.other == "snip")].iloc[0]
    assert at95["mean"] == pytest.approx(-0.01) and at95["sign"] == -1
    text = resolved_sentence(d, label=results.label)
    assert "At 90\u00a0%, FTS is better than Random (+10.0" in text and "SNIP (+2.0, 95 % interval" in text
    assert "At 95\u00a0%, FTS is better than Random (+15.0" in text and "FTS is worse than SNIP (-1.0" in text
    noisy = table.assign(test_accuracy_final=table["test_accuracy_final"]
                         + np.where(table["criterion"] == "fts", [0.05, -0.05, 0.0] * 6, 0.0)[: len(table)])
    unresolved = paired_differences(noisy, reference="fts")
    assert not unresolved["resolved"].all()
    assert "not resolved against" in resolved_sentence(unresolved, label=results.label)
    one_seed = paired_differences(table[table.seed == 0], reference="fts")
    assert not one_seed["resolved"].any() and "no confidence intervals" in resolved_sentence(one_seed)


def test_empty_sweep_directory_gives_an_empty_table(tmp_path):
    (tmp_path / "cells").mkdir()
    empty = load_results(tmp_path)
    assert isinstance(empty, pd.DataFrame) and empty.empty and "cell_id" in empty.columns


def test_a_row_of_the_earlier_layout_is_read_with_its_provenance_once():
    from fts_core.io import upgrade_record
    made = {"git_revision": "abc", "git_dirty": False, "versions": {"torch": "2"}, "device": "cpu (x, 1 threads)"}
    result = {"test_accuracy_final": 0.5, "sparsity": 0.9, "target_sparsity": 0.9, **made}
    row = upgrade_record({"cell_id": "c", "status": "done", "params": {}, "result": result, **made})
    assert row["provenance"] == made and not set(made) & set(row)
    assert "provenance" not in row["result"] and not set(made) & set(row["result"])
    assert row["result"]["realised_sparsity"] == 0.9 and "sparsity" not in row["result"]
    assert "target_sparsity" not in row["result"]
    assert upgrade_record(row) == row  # today's layout is left as it is
