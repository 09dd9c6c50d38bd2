"""Results tables: load the rows of sweeps and runs, summarise over seeds, lay them out like the
paper's Table 1 and compare with its published numbers (Gollini et al. 2025, v1).

:func:`load_results` -> :func:`summarise` (mean, std, n per sparsity and criterion) ->
:func:`paper_layout` (rows sparsities, columns criteria, "mean ± std"); :func:`paper_results`,
:func:`side_by_side`, :func:`compare_ordering` and :func:`ordering_sentence` set them against the paper.
Columns of :func:`load_results`, a row per cell: ``cell_id``, ``sweep``, ``status``, every config field
(``sparsity`` is the *target*), the run's scalar metrics (``test_accuracy_final``, ``realised_sparsity``,
``scoring_seconds``, ...; lists and dicts such as ``layer_density`` stay Python objects), ``seconds``
(wall time of the cell), ``cpu_seconds`` (CPU time of its process), ``started``, ``finished``,
``git_revision``, ``git_dirty``, ``version_<library>``, ``device_name``, ``hostname``, ``error``.
Accuracies are fractions in [0, 1]; the paper's numbers are percentages (use ``scale=100``).
"""
from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from fts_core.experiments.statistics import percent
from fts_core.io import (
    CELL_ROW,
    FAILURE_ROW,
    RUN_RESULT_KEYS,
    DamagedFileError,
    DamagedFileWarning,
    read_record,
)
from fts_core.scoring.registry import CRITERIA

PAPER_TABLE_FILE = Path(__file__).resolve().parent / "paper_results" / "paper_table1.csv"

_SCHEMA = {"cell": CELL_ROW, "failure": FAILURE_ROW, "run": RUN_RESULT_KEYS}
# bulky or redundant result entries left out of the table
_SKIP_RESULT = {"config", "history", "run_dir", "provenance"}


# ---------------------------------------------------------------------- loading
def load_results(path: str | os.PathLike | Sequence[str | os.PathLike], *, cell_ids: Iterable[str] | None = None,
                 status: str = "done") -> pd.DataFrame:
    """The results table, a row per cell (or per run).

    Args:
        path: a sweep directory (reads ``cells/*.json``, plus ``failures/*.json`` when
            ``status="all"``), a directory of run directories (every ``**/result.json``), a
            single cell/result JSON file, a ``results.csv``, or a list of these.
        cell_ids: keep only these cells (e.g. the cells of the current grid).
        status: ``"done"`` (finished cells only) or ``"all"`` (also the last failure of
            each failed cell, with ``error`` and ``traceback``).

    Returns:
        ``pandas.DataFrame`` sorted by cell id (columns: see the module docstring); an empty
        frame with the core columns when nothing has finished.
    """
    if status not in ("done", "all"):
        raise ValueError(f"status must be 'done' or 'all', got {status!r}")
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    rows: list[dict[str, Any]] = []
    frames: list[pd.DataFrame] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"no results at {str(p)!r}")
        if p.is_file() and p.suffix == ".csv":
            frames.append(pd.read_csv(p))
            continue
        for file, kind in _result_files(p, status):
            try:
                record, kind = _read(file, kind)
            except DamagedFileError as err:  # never half a row: the file is named and left out
                warnings.warn(f"left out damaged results file {err}", DamagedFileWarning, stacklevel=2)
                continue
            rows.append(_flatten(record, kind, file))
    table = pd.DataFrame(rows)
    if frames:
        table = pd.concat([table, *frames], ignore_index=True) if len(table) else pd.concat(frames, ignore_index=True)
    if table.empty:
        return pd.DataFrame(columns=["cell_id", "status"])
    if "status" not in table:
        table["status"] = "done"
    if cell_ids is not None:
        wanted = set(cell_ids)
        table = table[table["cell_id"].isin(wanted)]
    if status == "done":
        table = table[table["status"] == "done"]
    # a cell that finished after failing has both files: keep the finished row only
    table = table.sort_values(["cell_id", "status"], kind="stable")
    table = table.drop_duplicates("cell_id", keep="first") if "cell_id" in table else table
    return table.reset_index(drop=True)


def _result_files(p: Path, status: str) -> list[tuple[Path, str]]:
    if p.is_file():
        return [(p, "file")]
    if (p / "cells").is_dir() or (p / "sweep.yaml").exists():
        files = [(f, "cell") for f in sorted((p / "cells").glob("*.json"))]
        if status == "all":
            files += [(f, "failure") for f in sorted((p / "failures").glob("*.json"))]
        return files
    if (p / "result.json").exists():
        return [(p / "result.json", "run")]
    return [(f, "run") for f in sorted(p.rglob("result.json"))]


def _read(file: Path, kind: str) -> tuple[dict[str, Any], str]:
    """The record of a cell row, failure row or run result, checked to be one (``kind`` "file":
    whichever it holds); :class:`~fts_core.io.DamagedFileError` naming the file otherwise."""
    in_sweep = kind == "cell"  # a sweep's cells/<cell id>.json, not a file the user named
    if kind == "file":
        record = read_record(file, {})
        kind = "cell" if "cell_id" in record and "params" in record else "failure" if "error" in record else "run"
    record = read_record(file, _SCHEMA[kind])
    if kind == "cell" and (record["status"] != "done" or not record["cell_id"]
                           or (in_sweep and record["cell_id"] != file.stem)):
        raise DamagedFileError(file, f"holds cell {record['cell_id']!r} with status {record['status']!r}")
    return record, kind


def _flatten(record: Mapping[str, Any], kind: str, file: Path) -> dict[str, Any]:
    """One table row from a sweep cell record, a failure record or a runner ``result.json``."""
    if kind == "run":  # a bare runner result: wrap it like a sweep cell
        record = {"cell_id": record.get("run_name") or file.parent.name, "status": "done", "kind": "run",
                  "params": record.get("config", {}), "result": record, "finished": record.get("finished_at")}
    result = record.get("result") or {}
    config = dict(record.get("params") or {})
    if isinstance(result.get("config"), Mapping):
        config = {**result["config"], **config}
    row: dict[str, Any] = {"cell_id": record.get("cell_id"), "sweep": record.get("sweep"),
                           "status": record.get("status", "done"), "kind": record.get("kind")}
    row.update(config)
    for key, value in result.items():
        if key in _SKIP_RESULT:
            continue
        name = key
        if name in row:
            name = f"result_{name}"
        row[name] = value
    for key in ("seconds", "cpu_seconds", "started", "finished", "hostname", "attempts", "notebook_output", "error",
                "traceback"):
        if key in record:
            row[key if key not in config else f"cell_{key}"] = record[key]
    made = record.get("provenance") or result.get("provenance") or {}
    row.update(git_revision=made.get("git_revision"), git_dirty=made.get("git_dirty"), device_name=made.get("device"))
    for lib, version in (made.get("versions") or {}).items():
        row[f"version_{lib}"] = version
    return row


# ---------------------------------------------------------------------- summaries
def summarise(table: pd.DataFrame, value: str = "test_accuracy_final", by: Sequence[str] = ("sparsity", "criterion"),
              ddof: int = 1) -> pd.DataFrame:
    """Mean, standard deviation (``ddof``; 1 = sample std) and count of ``value`` over seeds.

    Returns columns ``*by, mean, std, n`` (std is NaN for a single seed with ddof=1).
    """
    missing = [c for c in (*by, value) if c not in table.columns]
    if missing:
        raise KeyError(f"column(s) {missing} not in the results table; columns: {sorted(map(str, table.columns))}")
    grouped = table.groupby(list(by), sort=True)[value]
    out = grouped.agg(mean="mean", n="count").reset_index()
    out["std"] = grouped.std(ddof=ddof).values
    return out[[*by, "mean", "std", "n"]]


def label(criterion: str) -> str:
    """A criterion's label from the registry (``"fts"`` -> ``"FTS"``); unknown names as given."""
    return CRITERIA[criterion].label if criterion in CRITERIA else criterion


def order(criteria: Iterable[str]) -> list[str]:
    """Criteria in the paper's column order (its Table 1), then the other registered ones in
    registry order, then unknown ones in the order given."""
    criteria = list(dict.fromkeys(criteria))
    known = [c for c in dict.fromkeys([*_paper_criteria(), *CRITERIA]) if c in criteria]
    return known + [c for c in criteria if c not in known]


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``"90.12 ± 0.34"`` (``"90.12"`` when the std is NaN)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def paper_layout(summary: pd.DataFrame, *, scale: float = 100.0, digits: int = 2,
                 criteria: Sequence[str] | None = None, labels: bool = True) -> pd.DataFrame:
    """The paper's table layout: a row per sparsity, a column per criterion, ``"mean ± std"`` strings.

    ``summary`` comes from :func:`summarise` (columns sparsity, criterion, mean, std);
    ``scale=100`` turns fractions into percentages. Columns follow the paper's order.
    """
    criteria = order(criteria or summary["criterion"].unique())
    cells = {(r.sparsity, r.criterion): format_mean_std(r.mean * scale, r.std * scale, digits)
             for r in summary.itertuples()}
    sparsities = sorted(summary["sparsity"].unique())
    out = pd.DataFrame(
        [[cells.get((s, c), "–") for c in criteria] for s in sparsities],
        index=pd.Index(sparsities, name="sparsity"),
        columns=[label(c) if labels else c for c in criteria],
    )
    return out


# ---------------------------------------------------------------------- the paper's numbers
def paper_results(model: str = "resnet18", dataset: str = "cifar10") -> pd.DataFrame:
    """The paper's published test accuracies (%) for one setting, long format.

    Columns: ``sparsity, criterion`` (our key), ``label`` (the paper's), ``mean, std`` (percent,
    over seeds 0, 42, 123), ``source``. Only v1 Table 1 (ResNet18, CIFAR-10) is shipped;
    other settings raise ``ValueError`` listing the available ones.
    """
    table = _paper_table()
    available = sorted(set(zip(table["model"], table["dataset"])))
    sel = table[(table["model"] == model) & (table["dataset"] == dataset)]
    if sel.empty:
        raise ValueError(f"no published numbers shipped for model={model!r}, dataset={dataset!r}; "
                         f"available: {', '.join(f'{m}/{d}' for m, d in available)}")
    return sel.drop(columns=["model", "dataset"]).reset_index(drop=True)


def has_paper_results(model: str, dataset: str) -> bool:
    """Whether :func:`paper_results` has numbers for this model and dataset."""
    table = _paper_table()
    return bool(((table["model"] == model) & (table["dataset"] == dataset)).any())


def paper_citation() -> str:
    """The citation comment lines at the top of the shipped CSV, joined."""
    lines = []
    with open(PAPER_TABLE_FILE) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines)


def _paper_table() -> pd.DataFrame:
    return pd.read_csv(PAPER_TABLE_FILE, comment="#")


@functools.lru_cache(maxsize=1)
def _paper_criteria() -> tuple[str, ...]:
    """The criteria of the paper's Table 1, in its column order."""
    return tuple(dict.fromkeys(_paper_table()["criterion"]))


def paper_summary(paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's long table as a :func:`summarise`-style frame, as fractions (÷100)."""
    out = paper[["sparsity", "criterion", "mean", "std"]].copy()
    out["mean"] /= 100.0
    out["std"] /= 100.0
    out["n"] = 3
    return out


def side_by_side(summary: pd.DataFrame, paper: pd.DataFrame, *, scale: float = 100.0, digits: int = 2,
                 criteria: Sequence[str] | None = None) -> pd.DataFrame:
    """Our numbers next to the paper's: rows sparsity, columns (criterion label, ours | paper).

    ``summary``: :func:`summarise` output (fractions); ``paper``: :func:`paper_results` (percent).
    Sparsities present in either table are shown; a missing entry is ``"–"``.
    """
    criteria = order(criteria or summary["criterion"].unique())
    ours = paper_layout(summary, scale=scale, digits=digits, criteria=criteria, labels=False)
    theirs = paper_layout(paper_summary(paper), scale=100.0, digits=digits,
                          criteria=[c for c in criteria if c in set(paper["criterion"])] or criteria,
                          labels=False)
    sparsities = sorted(set(ours.index) | set(theirs.index))
    data, columns = {}, []
    for c in criteria:
        for who, frame in (("ours", ours), ("paper", theirs)):
            col = (label(c), who)
            columns.append(col)
            data[col] = [frame.at[s, c] if (s in frame.index and c in frame.columns) else "–" for s in sparsities]
    out = pd.DataFrame(data, index=pd.Index(sparsities, name="sparsity"))
    out.columns = pd.MultiIndex.from_tuples(columns, names=["criterion", "source"])
    return out


# ---------------------------------------------------------------------- orderings
def compare_ordering(summary: pd.DataFrame, paper: pd.DataFrame, *, criteria: Sequence[str] | None = None,
                     sparsities: Sequence[float] | None = None,
                     resolved: pd.DataFrame | None = None) -> dict[str, Any]:
    """Compare how our results and the paper's order the criteria, sparsity by sparsity.

    Only criteria and sparsities present in both are compared. For every pair of criteria at a
    sparsity: do both tables put them in the same order? ``resolved`` (the rows of
    :func:`fts_core.experiments.statistics.paired_differences` over all pairs: ``sparsity, reference, other,
    sign``) says which pairs our data resolve; only those count as agreeing or disagreeing.
    Without it, a pair counts as resolved when the gap between the two means exceeds the larger
    of the two seed standard deviations.

    Returns a dict: ``sparsities``, ``criteria``, ``ours`` / ``paper`` ({sparsity: criteria
    best first}), ``pairs`` (compared), ``resolved`` (of them), ``agree`` / ``disagree`` (of the
    resolved), ``unresolved``, ``kendall_tau`` ((agree − disagree) / resolved), ``best_ours`` /
    ``best_paper`` ({sparsity: criterion}).
    """
    theirs = paper_summary(paper)
    both_c = set(summary["criterion"]) & set(theirs["criterion"])
    if criteria is not None:
        both_c &= set(criteria)
    both_s = set(summary["sparsity"].round(6)) & set(theirs["sparsity"].round(6))
    if sparsities is not None:
        both_s &= {round(float(s), 6) for s in sparsities}
    crit, sps = order(both_c), sorted(both_s)
    if len(crit) < 2 or not sps:
        raise ValueError(f"nothing to compare: criteria in both tables {crit}, sparsities in both {sps}")

    def lookup(frame: pd.DataFrame) -> dict[tuple[float, str], tuple[float, float]]:
        return {(round(float(r.sparsity), 6), r.criterion): (float(r.mean), float(getattr(r, "std", math.nan)))
                for r in frame.itertuples()}

    signs: dict[tuple[float, str, str], int] = {}
    if resolved is not None:
        for r in resolved.itertuples():
            signs[(round(float(r.sparsity), 6), r.reference, r.other)] = int(r.sign)
            signs[(round(float(r.sparsity), 6), r.other, r.reference)] = -int(r.sign)
    ours_v, paper_v = lookup(summary), lookup(theirs)
    out: dict[str, Any] = {"sparsities": sps, "criteria": crit, "ours": {}, "paper": {}, "best_ours": {},
                           "best_paper": {}, "pairs": 0, "resolved": 0, "agree": 0, "disagree": 0}
    for s in sps:
        present = [c for c in crit if (s, c) in ours_v and (s, c) in paper_v]
        rank_o = sorted(present, key=lambda c: -ours_v[(s, c)][0])
        rank_p = sorted(present, key=lambda c: -paper_v[(s, c)][0])
        out["ours"][s], out["paper"][s] = rank_o, rank_p
        out["best_ours"][s], out["best_paper"][s] = rank_o[0], rank_p[0]
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                out["pairs"] += 1
                if resolved is not None:
                    sign = signs.get((s, a, b), 0)
                else:
                    (mo_a, so_a), (mo_b, so_b) = ours_v[(s, a)], ours_v[(s, b)]
                    gap = mo_a - mo_b
                    sign = (1 if gap > 0 else -1) if abs(gap) > max(_nz(so_a), _nz(so_b)) else 0
                if sign == 0:
                    continue
                out["resolved"] += 1
                d_p = paper_v[(s, a)][0] - paper_v[(s, b)][0]
                if d_p != 0 and (d_p > 0) == (sign > 0):
                    out["agree"] += 1
                else:
                    out["disagree"] += 1
    out["unresolved"] = out["pairs"] - out["resolved"]
    n = out["resolved"]
    out["kendall_tau"] = (out["agree"] - out["disagree"]) / n if n else float("nan")
    return out


def _nz(x: float) -> float:
    return 0.0 if x is None or math.isnan(x) else x


def ordering_sentence(comparison: Mapping[str, Any], *, ours: str, paper: str = "the paper's Table 1",
                      same_setting: bool = False) -> str:
    """A sentence, generated from :func:`compare_ordering`, on how the orderings compare.

    ``ours`` describes our setting (e.g. "Fashion-MNIST, ResNet18 at width 0.125, 2 epochs");
    ``same_setting`` says whether it is the paper's setting (else the sentence says it is not).
    Only the pairs our data resolve are counted as agreeing or disagreeing.
    """
    c = comparison
    sps = c["sparsities"]

    def chain(ranking: Sequence[str]) -> str:
        return " > ".join(label(x) for x in ranking)

    ours_txt = "; ".join(f"{percent(s)}: {chain(c['ours'][s])}" for s in sps)
    paper_txt = "; ".join(f"{percent(s)}: {chain(c['paper'][s])}" for s in sps)
    pairs, resolved, agree = c["pairs"], c["resolved"], c["agree"]
    text = f"Ordering by mean test accuracy ({ours}): {ours_txt}; {paper}: {paper_txt}. "
    if resolved == 0:
        text += (f"None of the {pairs} pairwise differences at the sparsities both tables have is resolved by "
                 "our data, so the orderings cannot be compared. ")
    else:
        if agree == resolved:
            verdict = "all agree with"
        elif agree > resolved - agree:
            verdict = "mostly agree with"
        elif agree == resolved - agree:
            verdict = "half agree with"
        else:
            verdict = "mostly disagree with"
        text += (f"Our data resolve {resolved} of the {pairs} pairwise differences at the sparsities both tables "
                 f"have; of those, {agree} have the paper's order and {resolved - agree} the opposite one "
                 f"(they {verdict} {paper}; Kendall τ over the resolved pairs {c['kendall_tau']:.2f}). The other "
                 f"{pairs - resolved} are not resolved and count neither way. ")
    if not same_setting:
        text += "Our setting is not the paper's, so only the orderings are comparable, not the accuracies."
    else:
        text += "The setting is the paper's, so the accuracies are directly comparable."
    return text
