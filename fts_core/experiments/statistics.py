"""What a results table resolves: means with confidence intervals over seeds, paired
differences between criteria (same seed, same split), and a sentence generated from them.

    ci = summarise_ci(table)                               # mean, sd, n, 95 % interval per cell
    diffs = paired_differences(table, reference="fts")     # FTS − X per sparsity, paired on seed
    resolved_sentence(diffs)                               # which differences the data resolve

Intervals are Student-t intervals over seeds: ``mean ± t_{n−1, 0.975} · sd / √n``. With one
seed there is no interval (NaN), and nothing is called resolved. A difference is *resolved*
when its paired interval excludes 0. Pairing on the seed removes what two criteria share
within a seed (the initialization, the data order, the split), so a paired interval is
usually much narrower than the two criteria's own intervals suggest.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import pandas as pd
from scipy import stats

__all__ = ["t_interval", "summarise_ci", "paired_differences", "all_paired_differences", "resolved_sentence",
           "format_ci", "seeds_for_half_width", "t_quantile"]


ACCURACY = (0.0, 1.0)  # the range of an accuracy (a fraction)
DIFFERENCE = (-1.0, 1.0)  # the range of a difference of two accuracies


def t_interval(values: Sequence[float], confidence: float = 0.95,
               bounds: tuple[float, float] | None = None) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` of a Student-t interval for the mean (low/high NaN when n < 2),
    cut to ``bounds``, the range the value can take (e.g. :data:`ACCURACY`): a mean cannot lie
    outside it, however wide two runs that collapsed make the t-interval."""
    v = [float(x) for x in values if x == x]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = sum(v) / n
    if n < 2:
        return mean, math.nan, math.nan, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = t_quantile(n, confidence) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high, n


def t_quantile(n: int, confidence: float = 0.95) -> float:
    """The Student-t factor of a two-sided interval over ``n`` values (``n - 1`` degrees of freedom)."""
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))


def seeds_for_half_width(sd: float, half_width: float, confidence: float = 0.95, most: int = 100) -> int | None:
    """The fewest seeds n (>= 2) whose t-interval ``t_{n-1} · sd / √n`` is narrower than ``half_width``,
    for a spread ``sd`` measured over seeds; None when it takes more than ``most`` (or sd is unknown)."""
    if not sd == sd or half_width <= 0:
        return None
    for n in range(2, most + 1):
        if t_quantile(n, confidence) * sd / math.sqrt(n) < half_width:
            return n
    return None


def summarise_ci(table: pd.DataFrame, value: str = "test_accuracy_final",
                 by: Sequence[str] = ("sparsity", "criterion"), confidence: float = 0.95,
                 bounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """Per group of ``by``: ``mean, sd, n, low, high`` of ``value`` over the rows (the seeds).

    ``bounds``: the range the value can take (see :func:`t_interval`)."""
    missing = [c for c in (*by, value) if c not in table.columns]
    if missing:
        raise KeyError(f"column(s) {missing} not in the results table")
    rows = []
    for key, group in table.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high, n = t_interval(group[value].tolist(), confidence, bounds)
        sd = float(group[value].std(ddof=1)) if n > 1 else math.nan
        rows.append({**dict(zip(by, key)), "mean": mean, "sd": sd, "n": n, "low": low, "high": high})
    return pd.DataFrame(rows, columns=[*by, "mean", "sd", "n", "low", "high"])


def paired_differences(table: pd.DataFrame, reference: str = "fts", value: str = "test_accuracy_final",
                       pair_on: Sequence[str] = ("seed", "split_seed"), confidence: float = 0.95,
                       others: Iterable[str] | None = None) -> pd.DataFrame:
    """``reference − X`` for every other criterion X at every sparsity, paired on ``pair_on``.

    Returns a row per (sparsity, other): ``mean, low, high, n`` (pairs), ``resolved`` (the
    interval excludes 0) and ``sign`` (+1: the reference is better, −1: worse, 0: unresolved).
    Pairs missing on one side are left out, so ``n`` counts complete pairs only.
    """
    keys = [k for k in pair_on if k in table.columns]
    out = []
    for sparsity, at in table.groupby("sparsity", sort=True):
        ref = at[at["criterion"] == reference].set_index(keys)[value]
        names = sorted(set(at["criterion"]) - {reference}) if others is None else list(others)
        for other in names:
            oth = at[at["criterion"] == other].set_index(keys)[value]
            both = ref.index.intersection(oth.index)
            if len(both) == 0:
                continue
            d = (ref.loc[both] - oth.loc[both]).tolist()
            mean, low, high, n = t_interval(d, confidence, DIFFERENCE)
            resolved = n > 1 and (low > 0 or high < 0)
            out.append({"sparsity": sparsity, "reference": reference, "other": other, "mean": mean, "low": low,
                        "high": high, "n": n, "resolved": resolved,
                        "sign": (1 if mean > 0 else -1) if resolved else 0})
    return pd.DataFrame(out, columns=["sparsity", "reference", "other", "mean", "low", "high", "n", "resolved",
                                      "sign"])


def format_ci(mean: float, low: float, high: float, scale: float = 100.0, digits: int = 1) -> str:
    """``"3.1 [1.2, 5.0]"`` (``"3.1"`` without an interval)."""
    if mean != mean:
        return "–"
    if low != low:
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


def percent(s: float) -> str:
    """``0.9`` -> ``"90 %"`` (a no-break space keeps it on one line)."""
    return f"{100 * s:g}\u00a0%"


def resolved_sentence(diffs: pd.DataFrame, label=lambda c: c, scale: float = 100.0, unit: str = "points",
                      confidence: float = 0.95) -> str:
    """A paragraph, generated from :func:`paired_differences`, on what the data resolve."""
    if diffs.empty:
        return "There is no pair of criteria to compare."
    ref = label(diffs["reference"].iloc[0])
    n = int(diffs["n"].max())
    if n < 2:
        return (f"With {n} seed per criterion there are no confidence intervals, so no difference between "
                f"{ref} and another criterion is resolved.")
    parts = []
    for sparsity, at in diffs.groupby("sparsity", sort=True):
        better = at[at["sign"] > 0]
        worse = at[at["sign"] < 0]
        open_ = at[at["sign"] == 0]

        def listing(rows: pd.DataFrame) -> str:
            return ", ".join(f"{label(r.other)} ({scale * r.mean:+.1f}, {int(100 * confidence)} % interval "
                             f"{scale * r.low:+.1f} to {scale * r.high:+.1f})" for r in rows.itertuples())

        bits = []
        if len(better):
            bits.append(f"{ref} is better than {listing(better)}")
        if len(worse):
            bits.append(f"{ref} is worse than {listing(worse)}")
        if len(open_):
            bits.append("not resolved against " + ", ".join(label(r.other) for r in open_.itertuples()))
        parts.append(f"At {percent(sparsity)}, " + "; ".join(bits) + ".")
    return (f"Differences {ref} − X in test accuracy ({unit}), paired over {n} seeds, with "
            f"{int(100 * confidence)} % intervals. " + " ".join(parts))


def all_paired_differences(table: pd.DataFrame, value: str = "test_accuracy_final",
                           pair_on: Sequence[str] = ("seed", "split_seed"), confidence: float = 0.95) -> pd.DataFrame:
    """:func:`paired_differences` for every pair of criteria (each pair once, in name order)."""
    names = sorted(table["criterion"].unique())
    frames = [paired_differences(table, a, value, pair_on, confidence, others=names[i + 1:])
              for i, a in enumerate(names) if names[i + 1:]]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else paired_differences(table.iloc[:0], "", value)
