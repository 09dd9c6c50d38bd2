"""Chapter 4's support code: one network's grid of finished runs, what it resolves, and the
paper's claims judged against it.

    grid = load_grid("sweeps/fashion_mnist_vgg19.yaml", "results/fashion_mnist_vgg19")
    grid.progress_line()              # how many cells of the grid are finished
    differences(grid)                 # FTS − X per sparsity, paired on the seed, with seed counts
    collapse_table(grid)              # which runs emptied a layer, per seed
    remedy_table(grid)                # scoring after a warm-up or a BatchNorm refresh vs at init
    judge_claims([grid, ...])         # the paper's claims: supported / contradicted / not resolved

Accuracies are fractions in [0, 1]; differences and interval widths are reported in points.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fts_core.experiments import results as R
from fts_core.experiments import statistics as ST
from fts_core.experiments.sweeps import SweepSpec, expand
from fts_core.scoring import CRITERIA

__all__ = ["Grid", "load_grid", "differences", "with_seed_counts", "width_note", "collapse_table", "remedy_table", "judge_claims",
           "plot_accuracy", "plot_differences", "plot_layer_density", "plot_seeds",
           "RESOLVE_POINTS", "SCORED"]

#: half-width (points) below which an interval is narrow enough to separate the criteria
RESOLVE_POINTS = 0.7
#: how the chapter names the networks
MODEL_NAMES = {"resnet18": "ResNet18", "vgg19": "VGG19"}
#: how a run was scored: at initialization, after a BatchNorm-statistics refresh, after dense epochs
SCORED = {"init": "at init", "bn": "after BN refresh", "train": "after warm-up"}


@dataclass
class Grid:
    """The finished cells of one sweep. ``table``: a row per finished cell (columns of
    :func:`fts_core.experiments.results.load_results`) plus ``kind``: ``dense``, ``init``
    (pruned at initialization), ``bn`` or ``train`` (pruned after that warm-up)."""

    name: str
    cell_ids: list[str]
    table: pd.DataFrame
    failed: pd.DataFrame
    metric: str = "test_accuracy_final"

    @property
    def main(self) -> pd.DataFrame:
        return self.table[self.table["kind"] == "init"]

    @property
    def dense(self) -> pd.DataFrame:
        return self.table[self.table["kind"] == "dense"]

    @property
    def remedies(self) -> pd.DataFrame:
        return self.table[self.table["kind"].isin(["bn", "train"])]

    @property
    def criteria(self) -> list[str]:
        return R.order(self.main["criterion"].unique())

    @property
    def sparsities(self) -> list[float]:
        return sorted(self.main["sparsity"].unique())

    @property
    def missing(self) -> int:
        return len(self.cell_ids) - len(self.table)

    @property
    def setting(self) -> str:
        t = self.table.iloc[0]
        return f"{t['dataset']}, {t['model']} at width {t['width']:g}, {int(t['epochs'])} epochs"

    @property
    def seeds(self) -> tuple[int, int]:
        """The fewest and most seeds of a (criterion, sparsity) pruned at init; (0, 0) before any."""
        n = self.main.groupby(["criterion", "sparsity"]).size()
        return (int(n.min()), int(n.max())) if len(n) else (0, 0)

    def progress_line(self) -> str:
        """One line: how much of the grid is finished (and that partial grids show what is there)."""
        lo, hi = self.seeds
        head = (f"{self.name}: {len(self.table)} of {len(self.cell_ids)} cells finished ({self.setting}): "
                f"{len(self.main)} pruned at initialization ({len(self.criteria)} criteria x {len(self.sparsities)} "
                f"sparsities x {lo}-{hi} seeds), {len(self.dense)} dense, {len(self.remedies)} with a warm-up")
        if self.missing:
            head += f". {self.missing} cells are missing (the sweep is still running): what follows uses the finished ones"
        return head + "."

    def dense_interval(self) -> tuple[float, float, float, int]:
        """``(mean, low, high, n)`` of the dense baseline's accuracy over seeds."""
        return ST.t_interval(self.dense[self.metric].tolist(), bounds=ST.ACCURACY)


def load_grid(sweep: SweepSpec | str | os.PathLike, results_dir: str | os.PathLike, *, name: str | None = None,
              metric: str = "test_accuracy_final") -> Grid:
    """The finished cells of a sweep's grid (a sweep file or a parsed spec) found in ``results_dir``
    (``FileNotFoundError`` when none has finished). ``name`` labels the network (default: the model's name)."""
    spec = sweep if isinstance(sweep, SweepSpec) else SweepSpec.from_yaml(sweep)
    cell_ids = [c.cell_id for c in expand(spec)]
    everything = R.load_results(results_dir, cell_ids=cell_ids, status="all") if Path(results_dir).exists() else None
    if everything is None or everything.empty:
        raise FileNotFoundError(f"no finished cell of the sweep {spec.name!r} in {str(results_dir)!r}; run it with "
                                "`python -m fts_core sweep SWEEP.yaml --resume`")
    table = everything[everything["status"] == "done"].reset_index(drop=True)
    table["kind"] = np.where(table["sparsity"] == 0, "dense",
                             np.where(table["warmup"].fillna(0) > 0, table["warmup_kind"], "init"))
    failed = everything[everything["status"] == "failed"].reset_index(drop=True)
    return Grid(name or MODEL_NAMES.get(str(table["model"].iloc[0]), str(table["model"].iloc[0])), cell_ids, table,
                failed, metric)


def differences(grid: Grid) -> pd.DataFrame:
    """FTS − X at every sparsity, paired on the seed (:func:`~fts_core.experiments.statistics.paired_differences`),
    with the seed counts of :func:`with_seed_counts`."""
    return with_seed_counts(ST.paired_differences(grid.main, reference="fts", value=grid.metric))


def with_seed_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (paired intervals: ``mean, low, high, n, resolved``, fractions) plus ``sd`` of the
    paired differences, ``half_width`` (points) and ``seeds_needed``: the seeds that would resolve
    the measured mean (an open difference) or bring a resolved one's interval within
    ±``RESOLVE_POINTS`` (NA: more than 100)."""
    if frame.empty:
        return frame.assign(sd=[], half_width=[], seeds_needed=[])
    half = 100 * (frame["high"] - frame["low"]) / 2
    sd = half / 100 * np.sqrt(frame["n"]) / [ST.t_quantile(n) if n > 1 else np.nan for n in frame["n"]]
    target = np.where(frame["resolved"], RESOLVE_POINTS / 100, frame["mean"].abs())
    needed = pd.array([ST.seeds_for_half_width(s, t) for s, t in zip(sd, target)], dtype="Int64")
    return frame.assign(sd=sd, half_width=half, seeds_needed=needed)


def width_note(frame: pd.DataFrame, describe=None, few: int = 10) -> str:
    """A sentence on the intervals of ``frame`` (from :func:`with_seed_counts`) wider than
    ±``RESOLVE_POINTS``, and on the seeds that would resolve the open ones at the spread measured
    (those within ``few`` seeds are named by ``describe(row)``; default: "X at s %")."""
    if frame.empty:
        return ""
    describe = describe or (lambda r: f"{R.label(r.other)} at {100 * r.sparsity:g} %")
    wide = frame[frame["half_width"] > RESOLVE_POINTS]
    n = int(frame["n"].max())
    if wide.empty:
        return f"Every paired interval is within ±{RESOLVE_POINTS} points ({n} seeds)."
    text = (f"{len(wide)} of {len(frame)} paired intervals are wider than ±{RESOLVE_POINTS} points with {n} seeds "
            f"(median ±{wide['half_width'].median():.1f}).")
    open_ = frame[~frame["resolved"].astype(bool)]
    soon = open_[open_["seeds_needed"].fillna(few + 1) <= few].sort_values("seeds_needed")
    if len(open_):
        named = "; ".join(f"{describe(r)} ({r.seeds_needed})" for r in soon.itertuples())
        text += (f" At the spread measured, {len(soon)} of the {len(open_)} open differences would be resolved with "
                 f"at most {few} seeds" + (f" (seeds needed): {named}" if named else "") +
                 f"; the other {len(open_) - len(soon)} have means too small against their spread for that.")
    return text


def collapse_table(grid: Grid) -> pd.DataFrame:
    """Runs that lost a whole prunable layer: a row per (criterion, sparsity, how scored) with any,
    a column per seed: the number of empty layers (``0``: none, ``–``: not run), ``!`` added
    when no input-output path is left."""
    t = grid.table[grid.table["kind"] != "dense"]
    if t.empty:
        return pd.DataFrame()
    t = t.assign(empty=t["collapsed_layers"].map(len),
                 cut=t["collapse"].map(lambda c: isinstance(c, dict) and c.get("path_exists") is False))
    seeds = sorted(t["seed"].unique())
    rows = []
    for (c, s, kind), g in t.groupby(["criterion", "sparsity", "kind"], sort=False):
        if not g["empty"].any():
            continue
        by_seed = g.set_index("seed")
        cells = {f"seed {sd}": (f"{by_seed.at[sd, 'empty']}" + ("!" if by_seed.at[sd, "cut"] else ""))
                 if sd in by_seed.index else "–" for sd in seeds}
        rows.append({"criterion": R.label(c), "sparsity": f"{100 * s:g} %", "scored": SCORED[kind], **cells,
                     "_order": (R.order(t["criterion"].unique()).index(c), s, list(SCORED).index(kind))})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values("_order").drop(columns="_order").reset_index(drop=True)


def remedy_table(grid: Grid) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scoring after a remedy against scoring at init, for the criteria and sparsities that have remedy runs.

    Returns ``(table, effects)``: a display table (accuracy interval per way of scoring, paired
    difference to at-init), and ``effects``, a row per (criterion, sparsity, kind) with the paired
    ``mean, low, high, n, resolved`` (fractions) and ``empty_runs`` / ``empty_runs_init`` (runs with an empty layer)."""
    rem = grid.remedies
    if rem.empty:
        return pd.DataFrame(), pd.DataFrame()
    base = grid.main[grid.main["criterion"].isin(rem["criterion"].unique())
                     & grid.main["sparsity"].isin(rem["sparsity"].unique())]
    both = pd.concat([base, rem])
    rows, effects = [], []
    for (c, s), g in both.groupby(["criterion", "sparsity"]):
        init = g[g["kind"] == "init"].set_index("seed")
        for kind in ("init", "bn", "train"):
            k = g[g["kind"] == kind].set_index("seed")
            if k.empty:
                continue
            mean, low, high, _ = ST.t_interval(k[grid.metric].tolist(), bounds=ST.ACCURACY)
            row = {"criterion": R.label(c), "sparsity": f"{100 * s:g} %", "scored": SCORED[kind],
                   "accuracy (%)": ST.format_ci(mean, low, high), "runs with an empty layer":
                   f"{int((k['collapsed_layers'].map(len) > 0).sum())} of {len(k)}"}
            if kind != "init":
                common = k.index.intersection(init.index)
                dm, dl, dh, dn = ST.t_interval((k.loc[common, grid.metric] - init.loc[common, grid.metric]).tolist(),
                                               bounds=ST.DIFFERENCE)
                row["vs at init (points)"] = ST.format_ci(dm, dl, dh)
                effects.append({"criterion": c, "sparsity": s, "kind": kind, "mean": dm, "low": dl, "high": dh,
                                "n": dn, "resolved": dn > 1 and (dl > 0 or dh < 0),
                                "empty_runs": int((k["collapsed_layers"].map(len) > 0).sum()),
                                "empty_runs_init": int((init["collapsed_layers"].map(len) > 0).sum())})
            rows.append(row)
    return pd.DataFrame(rows).fillna(""), with_seed_counts(pd.DataFrame(effects))


# ---------------------------------------------------------------------- the paper's claims
OPEN = "not resolved by these runs"


def _intervals(d: pd.DataFrame, key: str = "sparsity") -> str:
    """``"90 %: +1.1 [+0.7, +1.6]; ..."`` (points) of paired differences."""
    return "; ".join(f"{100 * getattr(r, key):g} %: {100 * r.mean:+.1f} [{100 * r.low:+.1f}, {100 * r.high:+.1f}]"
                     for r in d.itertuples())


def _verdict_better(diffs: pd.DataFrame, other: str, sparsities: list[float]) -> tuple[str, str]:
    """'FTS is better than ``other`` at each of ``sparsities``' against paired differences."""
    d = diffs[(diffs["other"] == other) & diffs["sparsity"].isin(sparsities)]
    if d.empty:
        return OPEN, "not in this grid"
    if (d["sign"] < 0).any():
        return "contradicted", _intervals(d)
    return ("supported" if len(d) == len(sparsities) and (d["sign"] > 0).all() else OPEN), _intervals(d)


def _verdict_not_worse(diffs: pd.DataFrame, other: str) -> tuple[str, str]:
    """'FTS is not worse than ``other``' with a margin of ``RESOLVE_POINTS``: supported when every
    interval's low end is above −margin, contradicted when one is resolved below zero."""
    d = diffs[diffs["other"] == other]
    if d.empty:
        return OPEN, "not in this grid"
    if (d["sign"] < 0).any():
        return "contradicted", _intervals(d)
    return ("supported" if (100 * d["low"] > -RESOLVE_POINTS).all() else OPEN), _intervals(d)


def _verdict_remedy_collapse(effects: pd.DataFrame, kind: str) -> tuple[str, str]:
    """'Scoring after the remedy ``kind`` avoids the layer collapse seen at init'."""
    e = effects[effects["kind"] == kind] if len(effects) else effects
    if e.empty:
        return OPEN, "no such runs"
    evidence = "; ".join(f"{R.label(r.criterion)} {100 * r.sparsity:g} %: {r.empty_runs_init} runs at init, "
                         f"{r.empty_runs} after" for r in e.itertuples())
    collapsed = e[e["empty_runs_init"] > 0]
    if collapsed.empty:
        return OPEN, evidence + " (no collapse at init to remedy)"
    if (collapsed["empty_runs"] > 0).any():
        return "contradicted", evidence
    return "supported", evidence


def _verdict_remedy_accuracy(effects: pd.DataFrame, kind: str) -> tuple[str, str]:
    """'Scoring after the remedy ``kind`` raises accuracy where scoring at init collapsed'."""
    e = effects[(effects["kind"] == kind) & (effects["empty_runs_init"] > 0)] if len(effects) else effects
    if e.empty:
        return OPEN, "no collapse at init to remedy"
    evidence = "; ".join(f"{R.label(r.criterion)} {100 * r.sparsity:g} %: {100 * r.mean:+.1f} "
                         f"[{100 * r.low:+.1f}, {100 * r.high:+.1f}]" for r in e.itertuples())
    if ((e["resolved"]) & (e["mean"] < 0)).any():
        return "contradicted", evidence
    if (e["resolved"] & (e["mean"] > 0)).all():
        return "supported", evidence
    return OPEN, evidence


def _verdict_collapse_at_init(grid: Grid) -> tuple[str, str]:
    """'Data-dependent criteria empty whole layers at high sparsity when scored at init'."""
    m = grid.main[grid.main["sparsity"] >= 0.98]
    m = m[m["criterion"].map(lambda c: CRITERIA[c].needs_data if c in CRITERIA else False)]
    if m.empty:
        return OPEN, "no data-dependent criterion at 98 % or above"
    hit = m[m["collapsed_layers"].map(len) > 0]
    evidence = (", ".join(f"{R.label(c)} {100 * s:g} % ({len(g)} of "
                          f"{len(m[(m.criterion == c) & (m.sparsity == s)])} runs)"
                          for (c, s), g in hit.groupby(["criterion", "sparsity"]))
                or f"no empty layer in {len(m)} runs")
    return ("supported" if len(hit) else "contradicted"), evidence


#: the paper's claims about the compared criteria and the remedy: (key, text, judge(grid, diffs, effects))
CLAIMS = [
    ("fts_vs_random", "FTS is better than random pruning at every sparsity",
     lambda g, d, e: _verdict_better(d, "random", g.sparsities)),
    ("fts_vs_magnitude", "FTS is better than magnitude pruning at 98 and 99 %",
     lambda g, d, e: _verdict_better(d, "magnitude", [0.98, 0.99])),
    ("fts_vs_fbss", "FTS is better than FBSS at every sparsity",
     lambda g, d, e: _verdict_better(d, "fbss", g.sparsities)),
    ("fts_vs_grasp", "FTS is better than GraSP at 90 to 98 %",
     lambda g, d, e: _verdict_better(d, "grasp", [0.9, 0.95, 0.98])),
    ("fts_vs_snip", f"FTS is not worse than SNIP (by more than {RESOLVE_POINTS} points) at any sparsity",
     lambda g, d, e: _verdict_not_worse(d, "snip")),
    ("fts_vs_fisher_pruning", f"FTS is not worse than Fisher pruning (by more than {RESOLVE_POINTS} points) "
     "at any sparsity", lambda g, d, e: _verdict_not_worse(d, "fisher_pruning")),
    ("collapse_at_init", "data-dependent criteria empty whole layers at 98-99 % when scored at initialization",
     lambda g, d, e: _verdict_collapse_at_init(g)),
    ("warmup_avoids_collapse", "one dense warm-up epoch before scoring avoids that collapse",
     lambda g, d, e: _verdict_remedy_collapse(e, "train")),
    ("bn_avoids_collapse", "a BatchNorm-statistics refresh before scoring avoids it as well (the revision)",
     lambda g, d, e: _verdict_remedy_collapse(e, "bn")),
    ("warmup_raises_accuracy", "where scoring at init collapsed, the warm-up epoch raises accuracy",
     lambda g, d, e: _verdict_remedy_accuracy(e, "train")),
    ("bn_raises_accuracy", "where scoring at init collapsed, the BatchNorm refresh raises accuracy",
     lambda g, d, e: _verdict_remedy_accuracy(e, "bn")),
]


def judge_claims(grids: list[Grid]) -> pd.DataFrame:
    """A row per (claim, network): ``key, claim, network, verdict, evidence``; verdicts are
    ``supported``, ``contradicted`` or ``not resolved by these runs``, generated from the numbers."""
    rows = []
    for grid in grids:
        diffs = differences(grid)
        effects = remedy_table(grid)[1]
        for key, text, judge in CLAIMS:
            verdict, evidence = judge(grid, diffs, effects)
            rows.append({"key": key, "claim": text, "network": grid.name, "verdict": verdict, "evidence": evidence})
    return pd.DataFrame(rows, columns=["key", "claim", "network", "verdict", "evidence"])


# ---------------------------------------------------------------------- figures
_MARKERS = "os^vDPX*<>"


def plot_accuracy(grids: list[Grid]):
    """Accuracy against sparsity, a row per network: all criteria (left) and a zoom on those whose
    interval stays above 50 % (right); mean and 95 % interval over seeds, the dense interval in grey."""
    import matplotlib.pyplot as plt

    grids = [g for g in grids if len(g.main)]
    if not grids:
        return None
    fig, rows = plt.subplots(len(grids), 2, figsize=(8.4, 4.0 * len(grids) + 0.2), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.35]})
    for grid, axes in zip(grids, rows):
        ci = ST.summarise_ci(grid.main, value=grid.metric, bounds=ST.ACCURACY)
        crits, sps = grid.criteria, grid.sparsities
        _, d_low, d_high, _ = grid.dense_interval()
        offsets, xpos = np.linspace(-0.12, 0.12, len(crits)), {s: i for i, s in enumerate(sps)}
        for ax in axes:
            for k, (c, off) in enumerate(zip(crits, offsets)):
                g = ci[ci.criterion == c].sort_values("sparsity")
                err = np.vstack([g["mean"] - g["low"], g["high"] - g["mean"]]).clip(min=0) * 100
                ax.errorbar(np.array([xpos[s] for s in g.sparsity]) + off, 100 * g["mean"],
                            yerr=None if np.isnan(err).all() else np.nan_to_num(err), marker=_MARKERS[k % 10], ms=4,
                            capsize=3, lw=2.2 if c == "fts" else 1.0, label=R.label(c), color=f"C{k}")
            if d_low == d_low:
                ax.axhspan(100 * d_low, 100 * d_high, color="0.8", zorder=0, label="dense (95 % interval)")
            ax.set_xticks(range(len(sps)), [f"{100 * s:g} %" for s in sps])
            ax.set_xlabel("sparsity")
            ax.grid(alpha=0.3)
        clear = ci[ci["low"] > 0.5]
        if len(clear):
            upper = max(clear["high"].max(), d_high if d_high == d_high else 0)
            axes[1].set_ylim(100 * clear["low"].min() - 1, 100 * upper + 0.5)
        lo, hi = grid.seeds
        axes[0].set_ylabel(f"{grid.name}: test accuracy (%)")
        axes[0].set_title(f"{grid.name}, all criteria ({lo}-{hi} seeds)" if lo != hi else
                          f"{grid.name}, all criteria ({lo} seeds)", fontsize=10)
        axes[1].set_title("zoom (intervals that leave the panel are cut)", fontsize=10)
        axes[1].legend(ncol=2, fontsize=7.5, loc="lower left")
    fig.suptitle(f"{grids[0].table['dataset'].iloc[0]}: mean and 95 % interval over seeds", fontsize=10)
    fig.tight_layout()
    return fig


def plot_differences(grid: Grid, diffs: pd.DataFrame):
    """FTS − X per sparsity (points) with paired 95 % intervals; green: FTS better, red: worse, grey: open."""
    import matplotlib.pyplot as plt

    sps, others = grid.sparsities, [c for c in grid.criteria if c != "fts"]
    ncols = min(2, len(sps))
    nrows = -(-len(sps) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(8.2, 2.9 * nrows + 0.4), sharey=True, squeeze=False)
    for ax in axes.flat[len(sps):]:
        ax.set_visible(False)
    for ax, s in zip(axes.flat, sps):
        g = diffs[diffs.sparsity == s].set_index("other").reindex(others)
        for y, r in enumerate(g.itertuples()):
            color = "C2" if r.sign > 0 else ("C3" if r.sign < 0 else "0.5")
            err = [[100 * (r.mean - r.low)], [100 * (r.high - r.mean)]] if r.low == r.low else None
            ax.errorbar([100 * r.mean], [y], xerr=err, fmt="o", color=color, capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{100 * s:g} %", fontsize=10)
        ax.set_xlabel("FTS − X (points)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_yticks(range(len(others)), [R.label(c) for c in others])
    axes[0, 0].invert_yaxis()
    fig.suptitle(f"{grid.name}: paired differences, 95 % intervals (green: FTS better, red: worse, grey: open)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_layer_density(grids: list[Grid], floor: float = 1e-4):
    """Kept fraction of every prunable layer at each grid's highest sparsity, a panel per network
    (mean over seeds; a marker on ``floor`` is an empty layer)."""
    import matplotlib.pyplot as plt

    grids = [g for g in grids if len(g.main)]
    if not grids:
        return None
    fig, axes = plt.subplots(len(grids), 1, figsize=(8, 3.4 * len(grids)), squeeze=False)
    for grid, ax in zip(grids, axes[:, 0]):
        top = grid.sparsities[-1]
        at_top = grid.main[grid.main.sparsity == top]
        for k, c in enumerate(grid.criteria):
            dens = pd.DataFrame(list(at_top[at_top.criterion == c]["layer_density"]))
            if not dens.empty:
                ax.plot(np.arange(dens.shape[1]), np.clip(dens.mean().to_numpy(), floor, None),
                        marker=_MARKERS[k % 10], ms=4, lw=2.2 if c == "fts" else 1.0, label=R.label(c), color=f"C{k}")
        ax.set_yscale("log")
        ax.set_ylim(floor * 0.8, 1.2)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_xlabel("prunable layer, input to output")
        ax.set_ylabel("kept fraction")
        ax.set_title(f"{grid.name}: per-layer density at {100 * top:g} % sparsity (floor: empty layer)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(ncol=4, fontsize=8)
    fig.tight_layout()
    return fig


def plot_seeds(grid: Grid, sparsity: float, metric: str | None = None):
    """Every seed's accuracy per criterion at one sparsity (bars: the mean)."""
    import matplotlib.pyplot as plt

    metric = metric or grid.metric
    sub = grid.main[grid.main["sparsity"] == sparsity]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for k, c in enumerate(grid.criteria):
        v = 100 * sub[sub.criterion == c][metric].to_numpy()
        ax.bar(k, v.mean() if len(v) else 0, color=f"C{k}", alpha=0.5)
        ax.scatter(np.full(len(v), k), v, color="k", s=12)
    ax.set_xticks(range(len(grid.criteria)), [R.label(c) for c in grid.criteria], rotation=45, fontsize=8)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{grid.name}, sparsity {100 * sparsity:g} %")
    return fig
