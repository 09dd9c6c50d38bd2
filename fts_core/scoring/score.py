"""``score(criterion, model, data, ...)``: the one entry point of every criterion.

BatchNorm: the authors score in eval mode (running statistics). Per-sample statistics are only
defined then (batch statistics couple the samples), so by default (``bn_mode=None``) a
per-sample criterion refuses a model with BatchNorm in train mode instead of silently
switching it: call ``model.eval()`` or pass ``bn_mode="eval"``. The model is returned as it
was given (weights, buffers, training flags, ``requires_grad``, ``.grad``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fts_core.hints import unknown_names
from fts_core.masks.prunable import prunable_parameters
from fts_core.scoring.context import ScoringContext
from fts_core.scoring.persample import STRATEGIES
from fts_core.scoring.registry import CRITERIA, Criterion
from fts_core.scoring.samples import collect, label_range, select, to_device

__all__ = ["score", "BN_MODES"]

BN_MODES = ("eval", "train", "as_is")
_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def score(criterion: str, model: nn.Module, data: Iterable | None = None, *, num_samples: int | None = None,
          per_class: int | None = None, chunk_size: int | None = None, bn_mode: str | None = None, seed: int = 0,
          strategy: str = "auto", prunable: Any = None, quiet: bool = True, **options: Any) -> dict[str, Tensor]:
    """Scores ``{name: Tensor}`` (shape of each prunable parameter, higher = keep).

    criterion: a key of ``CRITERIA``. data: iterable of ``(inputs, targets)`` batches (a
    DataLoader, a TensorLoader, a list of tensor pairs), materialised once so every pass sees the
    same (e.g. augmented) samples; only the scoring samples are moved to the model's device (cast
    to its dtype); None for the data-free ``random``, ``magnitude`` and ``synflow`` (with
    ``input_shape=``). num_samples / per_class: a random subset (``torch.randperm`` on a CPU
    generator seeded by ``seed``) of N samples in all / ``per_class`` per class, in data order,
    re-batched at the first batch's size. chunk_size: samples per vectorised step of the
    per-sample pass (default 32).
    bn_mode: ``None`` (default: like ``"eval"``, but a per-sample criterion refuses train-mode
    BatchNorm), ``"eval"`` (running statistics, the authors'), ``"train"`` (batch statistics;
    refused for per-sample criteria; buffers restored), ``"as_is"`` (the model's own flags).
    seed: random scores, subsets, Hutchinson probes. strategy: per-sample strategy
    (:mod:`fts_core.scoring.persample`); ``"auto"`` takes the vectorised per-layer path for stock
    Linear (any input rank), Conv1d/2d/3d (any groups, padding mode), ConvTranspose1d/2d/3d,
    eval-mode BatchNorm, LayerNorm, GroupNorm, Embedding and MultiheadAttention (every projection,
    ``out_proj`` included) where it is exact, and for any other module, a subclass that overrides
    its layer's methods, a shared parameter or a weight used outside its layer's call, the exact
    generic path (vmap, else a batch-size-1 loop on the CPU). prunable: None (``prunable_parameters(model)``), a
    rule name or callable for it, or a dict name -> Parameter. quiet: False shows progress
    bars. options: the criterion's options (its record in ``CRITERIA[criterion].options``).
    """
    crit = _check_call(criterion, model, bn_mode, strategy, chunk_size)
    opts = crit.options.from_dict(options)
    params = resolve_prunable(model, prunable)
    if crit.per_sample:
        _check_batchnorm_for_per_sample(criterion, model, bn_mode)
    first = next(iter(params.values()))
    dtype = first.dtype if first.is_floating_point() else torch.float32
    raw = collect(data, limit=None if crit.needs_data else 1)  # data-free: the input shape only
    if crit.needs_data and not raw:
        raise ValueError(f"criterion {criterion!r} needs scoring data, but data is empty")
    input_shape = tuple(raw[0][0].shape[1:]) if raw else None
    with _Restore(model):
        _set_bn_mode(model, bn_mode)
        if crit.needs_data:
            _check_labels(model, raw, first.device, dtype)
            raw = select(raw, num_samples, per_class, seed, int(raw[0][0].shape[0]))
        ctx = ScoringContext(model, params, to_device(raw, first.device, dtype), options=opts,
                             per_sample=crit.per_sample, seed=seed, strategy=strategy, chunk_size=chunk_size,
                             quiet=quiet, input_shape=input_shape)
        del raw
        raw_scores = crit(ctx)
    return _checked_scores(criterion, raw_scores, params)


def resolve_prunable(model: nn.Module, prunable: Any) -> dict[str, nn.Parameter]:
    """The parameters to score: ``prunable_parameters(model, rule)`` or a given dict (checked)."""
    if prunable is None:
        return prunable_parameters(model)
    if isinstance(prunable, Mapping):
        own = {id(p): n for n, p in model.named_parameters()}
        out = {}
        for n, p in prunable.items():
            if id(p) not in own:
                raise ValueError(f"prunable parameter {n!r} is not a parameter of the model")
            out[own[id(p)]] = p
        if not out:
            raise ValueError("prunable is empty: the model has no prunable parameter")
        return out
    return prunable_parameters(model, rule=prunable)


def _check_call(criterion: str, model: Any, bn_mode: str | None, strategy: str, chunk_size: Any) -> Criterion:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {unknown_names([criterion], CRITERIA)}; known: {', '.join(CRITERIA)}")
    if bn_mode is not None and bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; allowed: None, {', '.join(map(repr, BN_MODES))}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; allowed: {STRATEGIES}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    return CRITERIA[criterion]


def _check_batchnorm_for_per_sample(criterion: str, model: nn.Module, bn_mode: str | None) -> None:
    """Per-sample statistics need BatchNorm on running statistics (see the module docstring)."""
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, _BN_TYPES)]
    if bn_mode is None and (train_bn := [n for n, m in bns if m.training]):
        raise ValueError(
            f"criterion {criterion!r} needs per-sample gradients, but the model has BatchNorm in train "
            f"mode ({train_bn[0]!r}{f' and {len(train_bn) - 1} more' if len(train_bn) > 1 else ''}), whose "
            "batch statistics mix the samples of a batch: call model.eval() before scoring, or pass "
            'bn_mode="eval" to let the scorer switch BatchNorm to its running statistics while scoring '
            "(as the authors do; the model's flags are restored afterwards)")
    no_running = [n for n, m in bns if m.running_mean is None]
    if no_running:
        raise ValueError(f"criterion {criterion!r} needs per-sample gradients, but BatchNorm "
                         f"{no_running[0]!r} has no running statistics (track_running_stats=False), so it "
                         "always uses batch statistics; use a criterion without per-sample statistics")
    batch_stats = [n for n, m in bns if (bn_mode == "train") or (bn_mode == "as_is" and m.training)]
    if batch_stats:
        raise ValueError(f"criterion {criterion!r} needs per-sample gradients, but BatchNorm "
                         f"{batch_stats[0]!r} would use batch statistics (bn_mode={bn_mode!r}, "
                         f"training={model.training}); use bn_mode='eval' (the authors' setting)")


def _set_bn_mode(model: nn.Module, bn_mode: str | None) -> None:
    if bn_mode in (None, "eval"):
        model.eval()
    elif bn_mode == "train":
        model.train()


def _check_labels(model: nn.Module, raw: list, device: torch.device, dtype: torch.dtype) -> None:
    """Labels must index the model's outputs (one probe forward in eval mode finds how many)."""
    ymin, ymax = label_range(raw)
    modes = [(m, m.training) for m in model.modules()]
    probe = to_device([(raw[0][0][:1], raw[0][1][:1])], device, dtype)[0][0]
    try:
        with torch.no_grad():  # eval for the probe forward (one sample: batch statistics would fail)
            num_classes = model.eval()(probe).shape[-1]
    except RuntimeError as err:
        if probe.is_floating_point():
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"the inputs are {probe.dtype} (integer) and the model cannot take them ({first}); convert "
                         "images to floating point (x.float()), or give integer token ids only to a model that "
                         "embeds them (nn.Embedding)") from None
    finally:
        for m, t in modes:
            m.training = t
    if ymin < 0 or ymax >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}] (the model's outputs), got min {ymin}, max {ymax}")


def _checked_scores(criterion: str, raw: Mapping[str, Tensor], params: Mapping[str, nn.Parameter]) -> dict[str, Tensor]:
    out = {}
    for n, p in params.items():
        s = raw[n].detach()
        if s.shape != p.shape:
            raise RuntimeError(f"criterion {criterion!r} returned shape {tuple(s.shape)} for {n!r}, "
                               f"expected {tuple(p.shape)}")
        out[n] = s
    return out


class _Restore:
    """Snapshot and restore module training flags, buffers and parameter flags/grads."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> "_Restore":
        m = self.model
        self.modes = [(mod, mod.training) for mod in m.modules()]
        self.buffers = [(b, b.detach().clone()) for b in m.buffers()]
        self.flags = [(p, p.requires_grad, p.grad) for p in m.parameters()]
        return self

    def __exit__(self, *exc: Any) -> None:
        for mod, t in self.modes:
            mod.training = t
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        for p, f, g in self.flags:
            p.requires_grad_(f)
            p.grad = g
