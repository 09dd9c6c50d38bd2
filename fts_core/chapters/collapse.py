"""Layer-collapse study (notebook 03): at which sparsity does each criterion empty a layer?

Layer collapse (Tanaka et al., NeurIPS 2020): a global mask that removes every weight of some
layer disconnects the network. For one architecture and dataset: :func:`prepare_model` gives the
network in three *states* (:data:`STATES`: as built, after a BatchNorm-statistics refresh, after
one dense SGD epoch; each the model :func:`fts_core.run` scores after that warm-up,
:data:`STATE_WARMUP`); :func:`sweep_collapse` scores every criterion per state and reports, at
every sparsity of a grid log-spaced in remaining weights, each layer's kept fraction (table
``layers``) and per net whether a layer is empty or no input->output path is left (table
``nets``); :func:`first_collapse` finds the first such sparsity; :func:`train_pruned` trains a
pruned network with one :func:`fts_core.run` (RunConfig's protocol and seeding). Everything is
deterministic from ``seed``.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from fts_core.experiments.config import RunConfig
from fts_core.experiments.runner import run
from fts_core.experiments.training import make_optimizer, refresh_batchnorm, train_epoch
from fts_core.masks import collapsed_layers, make_masks
from fts_core.scoring import CRITERIA, score
from fts_core.setup.models import build_model
from fts_core.setup.seeding import seed_torch

__all__ = [
    "STATES",
    "STATE_LABELS",
    "STATE_WARMUP",
    "DENSE",
    "DEFAULT_CRITERIA",
    "sparsity_grid",
    "prepare_model",
    "criterion_scores",
    "criterion_masks",
    "CollapseSweep",
    "sweep_collapse",
    "first_collapse",
    "train_config",
    "train_pruned",
    "run_outcome",
]

STATES = ("init", "bn", "warmup")
STATE_LABELS = {"init": "at init", "bn": "after BN refresh", "warmup": "after 1 warm-up epoch"}
#: each state as RunConfig's warm-up before scoring (a "train" warm-up epoch counts in ``epochs``)
STATE_WARMUP: dict[str, dict[str, Any]] = {
    "init": {"warmup": 0},
    "bn": {"warmup": 1, "warmup_kind": "bn"},
    "warmup": {"warmup": 1, "warmup_kind": "train"},
}
#: the dense baseline as the sweep files spell it: (criterion, sparsity); sparsity 0 keeps every
#: weight, so the criterion does not matter
DENSE = ("random", 0.0)
#: the notebook's cheap default subset (the full list is ``fts_core.CRITERIA``)
DEFAULT_CRITERIA = ("random", "magnitude", "synflow", "grad_norm", "snip", "grasp", "fisher_pruning", "fts")


def sparsity_grid(low: float = 0.5, high: float = 0.999, num: int = 8) -> list[float]:
    """``num`` sparsities from ``low`` to ``high``, log-spaced in the remaining fraction
    ``1 - s`` (so 0.5, 0.9, 0.99, 0.999 are equally spaced for ``num=4``). Rounded to 6
    decimals so they print and compare stably."""
    if not (0 <= low < high < 1) or isinstance(num, bool) or int(num) < 2:
        raise ValueError(f"need 0 <= low < high < 1 and num >= 2, got low={low!r}, high={high!r}, num={num!r}")
    dens = np.geomspace(1 - low, 1 - high, int(num))
    return [round(float(1 - d), 6) for d in dens]


def _check_state(state: str) -> str:
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}; allowed: {STATES}")
    return state


def prepare_model(
    model_name: str,
    bundle: Any,
    state: str = "init",
    *,
    width: float = 0.125,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, torch.optim.Optimizer | None]:
    """The network in ``state`` as :func:`fts_core.run` scores it, and for ``"warmup"`` its optimiser.

    The initialisation is drawn after ``seed_torch(seed)``, so all states start from the same
    weights, those of a run with this seed. ``"bn"`` / ``"warmup"`` follow RunConfig's protocol
    (:data:`STATE_WARMUP`): one pass over the training loader of epoch 0 (shuffled with ``seed``,
    augmented as RunConfig's ``augment``) with :func:`~fts_core.experiments.training.refresh_batchnorm`,
    or one epoch of :func:`~fts_core.experiments.training.train_epoch` with RunConfig's SGD.
    ``batch_size``: None = RunConfig's. The model is returned in eval mode."""
    protocol = RunConfig(model=model_name, width=width, seed=seed, **STATE_WARMUP[_check_state(state)],
                         **({} if batch_size is None else {"batch_size": batch_size}))
    seed_torch(protocol.seed)
    model = build_model(model_name, num_classes=bundle.num_classes, in_channels=bundle.in_channels,
                        width=protocol.width)
    model.to(device if device is not None else bundle.train.x.device)
    optimizer = None
    if protocol.warmup:
        loader = bundle.loader("train", protocol.batch_size, seed=protocol.seed, augment=protocol.augment)
        if protocol.warmup_kind == "bn":
            refresh_batchnorm(model, loader)
        else:
            optimizer = make_optimizer(model, protocol.lr, protocol.momentum, protocol.weight_decay)
            train_epoch(model, loader, optimizer, quiet=True)
    model.eval()
    return model, optimizer


Scorer = Callable[..., dict]


def _needs_sparsity(criterion: str, scorer: Scorer | None) -> bool:
    """Whether the criterion is a procedure towards a sparsity (the registry's ``iterative``
    flag; an injected scorer lists such criteria in its attribute ``sparsity_dependent``)."""
    if scorer is not None:
        return criterion in getattr(scorer, "sparsity_dependent", ())
    return criterion in CRITERIA and CRITERIA[criterion].iterative


def criterion_scores(
    model: nn.Module,
    criterion: str,
    data: Iterable,
    sparsities: Sequence[float],
    *,
    num_samples: int | None = 256,
    seed: int = 0,
    score_options: Mapping[str, Any] | None = None,
    scorer: Scorer | None = None,
) -> dict[float, dict[str, torch.Tensor]]:
    """``{sparsity: scores}`` for one criterion: scored once (the same dict for every sparsity),
    or once per sparsity when the scorer takes a ``sparsity`` argument (iterative SynFlow).

    ``scorer``: ``fts_core.score`` by default; any function with its signature (tests inject
    one; its attribute ``sparsity_dependent`` lists the criteria that take ``sparsity``)."""
    run = score if scorer is None else scorer
    opts = dict(num_samples=num_samples, seed=seed, quiet=True, **(score_options or {}))
    if _needs_sparsity(criterion, scorer):
        return {s: run(criterion, model, data, sparsity=s, **opts) for s in sparsities}
    scores = run(criterion, model, data, **opts)
    return {s: scores for s in sparsities}


def criterion_masks(
    model: nn.Module,
    criterion: str,
    data: Iterable,
    sparsities: Sequence[float],
    *,
    num_samples: int | None = 256,
    seed: int = 0,
    scope: str = "global",
    score_options: Mapping[str, Any] | None = None,
    scorer: Scorer | None = None,
) -> dict[float, dict[str, torch.Tensor]]:
    """``{sparsity: masks}`` for one criterion (see :func:`criterion_scores`)."""
    per_s = criterion_scores(model, criterion, data, sparsities, num_samples=num_samples, seed=seed,
                             score_options=score_options, scorer=scorer)
    return {s: make_masks(sc, s, scope) for s, sc in per_s.items()}


def _score_stats(t: torch.Tensor) -> tuple[float, float]:
    """(log10 of the layer's largest score, fraction of its scores that are exactly 0).

    A layer is emptied by a global mask exactly when its largest score falls below the global
    threshold, so the profile of layer maxima decides the order of layer collapse (ties aside).
    SynFlow's -1 marks (pruned in earlier rounds) count as non-positive."""
    t = t.detach().double().reshape(-1)
    top = float(t.max())
    return (math.log10(top) if top > 0 else -math.inf), float((t == 0).double().mean())


@dataclass
class CollapseSweep:
    """Result of :func:`sweep_collapse`.

    ``layers``: one row per (model, state, criterion, sparsity, layer) with ``depth`` (position
    of the layer among the prunable ones), ``size``, ``kept``, ``density`` (kept fraction) and
    ``effective_density`` (kept and on an input->output path; NaN without the path check),
    ``log10_max_score`` (log10 of the layer's largest score: a global mask empties the layer
    exactly when this falls below the global threshold) and ``zero_score_fraction``.
    ``nets``: one row per (model, state, criterion, sparsity) with ``empty_layers`` (count),
    ``first_empty`` (name of the shallowest empty layer or ""), ``layer_collapse`` (any layer
    empty), ``path_exists`` and ``disconnected`` (no path; False without the path check).
    ``seconds``: wall time per (model, state) for preparation + scoring + reports.
    """

    layers: pd.DataFrame
    nets: pd.DataFrame
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)


def sweep_collapse(
    model_name: str,
    bundle: Any,
    *,
    criteria: Sequence[str] = DEFAULT_CRITERIA,
    sparsities: Sequence[float] | None = None,
    states: Sequence[str] = STATES,
    width: float = 0.125,
    num_samples: int | None = 256,
    seed: int = 0,
    scope: str = "global",
    batch_size: int | None = None,
    score_batch_size: int = 128,
    path_check: bool = True,
    score_options: Mapping[str, Mapping[str, Any]] | None = None,
    scorer: Scorer | None = None,
) -> CollapseSweep:
    """Sweep criteria x states x sparsities on ``model_name`` (see the module docstring).

    ``bundle``: a :class:`fts_core.setup.loader.DataBundle`. ``batch_size``: of the warm-up
    states (None = RunConfig's, see :func:`prepare_model`). ``score_options``: per-criterion extra
    keyword arguments for the scorer. ``scorer``: see :func:`criterion_masks`.
    Returns a :class:`CollapseSweep`."""
    known = list(CRITERIA) if scorer is None else list(getattr(scorer, "criteria", criteria))
    unknown = [c for c in criteria if c not in known]
    if unknown or not criteria:
        raise ValueError(f"unknown criteria {unknown!r}; known: {known}")
    for st in states:
        _check_state(st)
    sparsities = sparsity_grid() if sparsities is None else [float(s) for s in sparsities]
    for s in sparsities:
        if not 0 <= s <= 1:
            raise ValueError(f"sparsity {s!r} outside [0, 1]")
    score_data = bundle.loader("train", score_batch_size, shuffle=False, augment=False)
    layer_rows: list[dict[str, Any]] = []
    net_rows: list[dict[str, Any]] = []
    seconds: dict[tuple[str, str], float] = {}
    for state in states:
        t0 = time.perf_counter()
        model, _ = prepare_model(model_name, bundle, state, width=width, seed=seed, batch_size=batch_size)
        for crit in criteria:
            per_s = criterion_scores(model, crit, score_data, sparsities, num_samples=num_samples, seed=seed,
                                     score_options=(score_options or {}).get(crit), scorer=scorer)
            key = dict(model=model_name, state=state, criterion=crit)
            for s, scores in per_s.items():
                layers, net = _mask_rows(model, scores, s, scope, path_check)
                layer_rows += [{**key, "sparsity": s, **row} for row in layers]
                net_rows.append({**key, "sparsity": s, **net})
        seconds[(model_name, state)] = time.perf_counter() - t0
    return CollapseSweep(pd.DataFrame(layer_rows), pd.DataFrame(net_rows), seconds)


def _mask_rows(model: nn.Module, scores: Mapping[str, torch.Tensor], sparsity: float, scope: str,
               path_check: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One mask's per-layer rows and its row for the whole network."""
    masks = make_masks(scores, sparsity, scope)
    depth = {n: i for i, n in enumerate(masks)}
    rep = collapsed_layers(masks, model if path_check else None)
    eff = rep.effective_density or {}
    layers = []
    for n, m in masks.items():
        kept = int(m.sum().item())
        top, zeros = _score_stats(scores[n])
        layers.append(dict(layer=n, depth=depth[n], size=m.numel(), kept=kept, density=kept / m.numel(),
                           effective_density=eff.get(n, math.nan), log10_max_score=top, zero_score_fraction=zeros))
    empty = list(rep)
    net = dict(empty_layers=len(empty), first_empty=min(empty, key=depth.get) if empty else "",
               layer_collapse=bool(empty), path_exists=rep.path_exists, disconnected=rep.path_exists is False,
               kept=rep.kept, total=rep.total)
    return layers, net


def first_collapse(nets: pd.DataFrame, kind: str = "layer_collapse") -> pd.DataFrame:
    """First sparsity of the grid at which each (model, state, criterion) collapses.

    kind: ``"layer_collapse"`` (a layer is empty) or ``"disconnected"`` (no input->output
    path). Returns columns model, state, criterion, first_collapse (``inf`` when it never
    collapses on the grid; compare with the grid's maximum) and ``monotone`` (collapsed at
    every grid sparsity above the first one)."""
    if kind not in ("layer_collapse", "disconnected"):
        raise ValueError(f"unknown kind {kind!r}; allowed: 'layer_collapse', 'disconnected'")
    rows = []
    for (model, state, crit), g in nets.groupby(["model", "state", "criterion"], sort=False):
        g = g.sort_values("sparsity")
        hit = g[g[kind]]
        first = float(hit["sparsity"].min()) if len(hit) else math.inf
        monotone = bool(g.loc[g["sparsity"] >= first, kind].all()) if len(hit) else True
        rows.append(dict(model=model, state=state, criterion=crit, first_collapse=first, monotone=monotone))
    return pd.DataFrame(rows)


def train_config(model_name: str, criterion: str, sparsity: float, state: str = "init", **fields: Any) -> RunConfig:
    """The :class:`RunConfig` of one training run: ``model_name`` pruned with ``criterion`` at
    ``sparsity`` after the warm-up of ``state`` (:data:`STATE_WARMUP`). Every other field is
    RunConfig's default (the paper's protocol) unless ``fields`` names it, e.g. ``dataset``,
    ``split_seed``, ``width``, ``seed``, ``epochs``, ``batch_size``, ``milestones``, ``score_samples``.
    ``ValueError`` for an unknown state or field, or a field that the arguments already set."""
    warmup = STATE_WARMUP[_check_state(state)]
    clash = sorted({"model", "criterion", "sparsity", "warmup", "warmup_kind"} & set(fields))
    if clash:
        raise ValueError(f"train_config: field(s) {clash} are set by model_name, criterion, sparsity and "
                         f"state={state!r}; pass those arguments instead")
    return RunConfig.from_dict({"model": model_name, "criterion": criterion, "sparsity": sparsity, **warmup,
                                **fields})


def train_pruned(
    model_name: str,
    criterion: str,
    sparsity: float,
    state: str = "init",
    *,
    out_dir: str | os.PathLike,
    quiet: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """Prune ``model_name`` in ``state`` with ``criterion`` at ``sparsity`` and train it: one
    ``fts_core.run(train_config(...))``, the library's prune-and-train protocol.

    ``out_dir``: folder that keeps the run (relative to the working directory); called again
    with the same arguments, the stored result is returned. ``fields``: RunConfig fields (see
    :func:`train_config`). The dense baseline is ``train_pruned(model, *DENSE, ...)``.
    Returns :func:`run_outcome` of the run's result."""
    config = train_config(model_name, criterion, sparsity, state, out_dir=str(Path(out_dir).expanduser().resolve()),
                          quiet=quiet, **fields)
    return run_outcome(run(config))


def run_outcome(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the chapter reads from a result of :func:`fts_core.run`: ``test_accuracy`` (final
    model), ``layer_collapse`` (some prunable layer is empty), ``path_exists``, ``empty_layers``,
    ``realised_sparsity`` (fraction of the prunable weights pruned by the mask and still exactly 0
    after training: the mask held) and ``run_dir``."""
    total = result["prunable_weights"]
    return {
        "test_accuracy": result["test_accuracy_final"],
        "layer_collapse": bool(result["collapsed_layers"]),
        "path_exists": result["collapse"]["path_exists"],
        "empty_layers": list(result["collapsed_layers"]),
        "realised_sparsity": (total - result["kept_weights"] - result["pruned_weights_nonzero"]) / total,
        "run_dir": result["run_dir"],
    }
