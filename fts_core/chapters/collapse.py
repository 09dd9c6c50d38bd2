"""Layer-collapse study (notebook 03): at which sparsity does each criterion empty a layer?

Layer collapse (Tanaka et al., NeurIPS 2020): a criterion that removes every weight of some
layer disconnects the network. For one architecture and dataset this module

1. prepares the network in three *states*, all from the same seeded initialisation:
   ``"init"`` (as built), ``"bn"`` (one pass of BatchNorm-statistics refresh over the
   training split: train-mode forwards, no weight update) and ``"warmup"`` (one dense epoch
   of SGD, the protocol's optimiser);
2. scores every criterion once per state (``fts_core.score``; sparsity-dependent criteria such
   as iterative SynFlow once per sparsity) and makes a mask at every sparsity of a grid
   log-spaced in *remaining* weights (50 % -> 99.9 % sparsity by default);
3. reports, per (state, criterion, sparsity), every layer's kept fraction and kept count
   (a tidy DataFrame ``layers``) and per net whether a layer is empty (*layer collapse*) and
   whether an input->output path is left (``masks.collapsed_layers``; table ``nets``);
4. finds the first sparsity of the grid at which each criterion collapses (``first_collapse``).

Everything is deterministic from ``seed``. Scoring data: ``num_samples`` images of the
training split, without augmentation, in eval mode (the scorer's default).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from fts_core.experiments.training import evaluate, make_optimizer, refresh_batchnorm, train_epoch
from fts_core.masks import apply_masks, collapsed_layers, make_masks, prunable_parameters
from fts_core.scoring import CRITERIA, score
from fts_core.setup.models import build_model

__all__ = [
    "STATES",
    "STATE_LABELS",
    "DEFAULT_CRITERIA",
    "sparsity_grid",
    "prepare_model",
    "criterion_scores",
    "criterion_masks",
    "CollapseSweep",
    "sweep_collapse",
    "first_collapse",
    "train_pruned",
]

STATES = ("init", "bn", "warmup")
STATE_LABELS = {"init": "at init", "bn": "after BN refresh", "warmup": "after 1 warm-up epoch"}
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
    batch_size: int = 32,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, torch.optim.Optimizer | None]:
    """The network in ``state`` and, for ``"warmup"``, its optimiser (with momentum buffers).

    The initialisation is drawn under ``torch.manual_seed(seed)``, so all states start from the
    same weights. ``"bn"``: one pass over the (augmented, shuffled) training loader with
    :func:`fts_core.experiments.training.refresh_batchnorm`; ``"warmup"``: one epoch of
    :func:`fts_core.experiments.training.train_epoch` with SGD(lr, momentum, weight_decay). The model is
    returned in eval mode."""
    _check_state(state)
    torch.manual_seed(seed)
    model = build_model(model_name, num_classes=bundle.num_classes, in_channels=bundle.in_channels, width=width)
    model.to(device if device is not None else bundle.train.x.device)
    optimizer = None
    if state != "init":
        loader = bundle.loader("train", batch_size, seed=seed, epoch=0)
        if state == "bn":
            refresh_batchnorm(model, loader)
        else:
            optimizer = make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
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
    batch_size: int = 32,
    score_batch_size: int = 128,
    path_check: bool = True,
    score_options: Mapping[str, Mapping[str, Any]] | None = None,
    scorer: Scorer | None = None,
) -> CollapseSweep:
    """Sweep criteria x states x sparsities on ``model_name`` (see the module docstring).

    ``bundle``: a :class:`fts_core.setup.loader.DataBundle`. ``score_options``: per-criterion extra
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


def train_pruned(
    model_name: str,
    bundle: Any,
    criterion: str,
    sparsity: float,
    state: str = "init",
    *,
    epochs: int = 3,
    width: float = 0.125,
    seed: int = 0,
    num_samples: int | None = 256,
    batch_size: int = 32,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    score_batch_size: int = 128,
    scorer: Scorer | None = None,
) -> dict[str, Any]:
    """Prune ``model_name`` in ``state`` with ``criterion`` at ``sparsity`` and train it.

    ``epochs`` counts the warm-up epoch for ``state="warmup"`` (the protocol's "160 epochs
    including warm-up"); the warm-up optimiser (momentum included) continues after pruning,
    its pruned momentum entries zeroed. ``criterion="dense"`` trains without pruning.
    Returns ``{"test_accuracy", "train_accuracy", "layer_collapse", "path_exists",
    "empty_layers", "realised_sparsity"}``."""
    model, optimizer = prepare_model(model_name, bundle, state, width=width, seed=seed, batch_size=batch_size,
                                     lr=lr, momentum=momentum, weight_decay=weight_decay)
    done = 1 if state == "warmup" else 0
    rep = None
    if criterion != "dense":
        data = bundle.loader("train", score_batch_size, shuffle=False, augment=False)
        masks = criterion_masks(model, criterion, data, [sparsity], num_samples=num_samples, seed=seed,
                                scorer=scorer)[sparsity]
        rep = collapsed_layers(masks, model)
        apply_masks(model, masks, optimizer=optimizer)
    if optimizer is None:
        optimizer = make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    train = {"accuracy": math.nan}
    for epoch in range(done, epochs):
        loader = bundle.loader("train", batch_size, seed=seed, epoch=epoch)
        train = train_epoch(model, loader, optimizer, quiet=True)
    test = evaluate(model, bundle.loader("test", 256))
    pp = prunable_parameters(model)
    zeros = sum(int((p == 0).sum()) for p in pp.values())
    return {
        "test_accuracy": test["accuracy"],
        "train_accuracy": train["accuracy"],
        "layer_collapse": bool(rep) if rep is not None else False,
        "path_exists": rep.path_exists if rep is not None else True,
        "empty_layers": list(rep) if rep is not None else [],
        "realised_sparsity": zeros / sum(p.numel() for p in pp.values()),
    }
