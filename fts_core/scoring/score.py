"""``score(criterion, model, data, ...)``: the one entry point of every criterion.

BatchNorm: the authors score in eval mode (running statistics). Per-sample statistics are only
defined then (batch statistics couple the samples), so by default (``bn_mode=None``) a
per-sample criterion refuses a model with BatchNorm in train mode instead of silently
switching it: call ``model.eval()`` or pass ``bn_mode="eval"``. The model is returned as it
was given (weights, buffers, training flags, ``requires_grad``, ``.grad``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fts_core.hints import unknown_names
from fts_core.masks.prunable import prunable_parameters
from fts_core.scoring.context import ScoringContext
from fts_core.scoring.persample import check_strategy, choose_strategy
from fts_core.scoring.registry import CRITERIA, Criterion, Options
from fts_core.scoring.samples import collect, select, to_device

__all__ = ["score", "check_scoring", "check_bn_mode", "ScoringCall", "BN_MODES"]

BN_MODES = ("eval", "train", "as_is")
_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def score(criterion: str, model: nn.Module, data: Iterable | None = None, *, num_samples: int | None = None,
          per_class: int | None = None, chunk_size: int | None = None, bn_mode: str | None = None, seed: int = 0,
          strategy: str = "auto", prunable: Any = None, quiet: bool = True, options: Options | None = None,
          **option_values: Any) -> dict[str, Tensor]:
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
    its layer's methods, a shared parameter, a weight used outside its layer's call or a layer
    whose input's first dimension is not the samples, the exact generic path (vmap, else a
    batch-size-1 loop on the CPU). prunable: None (``prunable_parameters(model)``), a rule name or
    callable for it, or a dict name -> Parameter. quiet: False shows progress
    bars. options / option_values: the criterion's options, as its record
    (``CRITERIA[criterion].options``) or as keywords (``sign="-"``), not both.
    Every precondition is checked first, by :func:`check_scoring`.
    """
    data_free = criterion in CRITERIA and not CRITERIA[criterion].needs_data
    raw = collect(data, limit=1 if data_free else None)  # data-free: the input shape only
    labels = (torch.cat([y.reshape(-1).to(raw[0][1].device) for _, y in raw]).cpu() if raw  # one copy to the host
              else torch.zeros(0, dtype=torch.long))
    call = check_scoring(criterion, model, labels=labels, probe=raw[0][0] if raw else None, num_samples=num_samples, per_class=per_class, chunk_size=chunk_size,
                         bn_mode=bn_mode, strategy=strategy, prunable=prunable,
                         options=_one_options(criterion, options, option_values))
    crit, params = call.criterion, call.params
    first = next(iter(params.values()))
    dtype = first.dtype if first.is_floating_point() else torch.float32
    input_shape = tuple(raw[0][0].shape[1:]) if raw else None
    with _Restore(model):
        _set_bn_mode(model, bn_mode)
        if crit.needs_data:
            raw = select(raw, num_samples, per_class, seed, int(raw[0][0].shape[0]))
        ctx = ScoringContext(model, params, to_device(raw, first.device, dtype), options=call.options,
                             per_sample=crit.per_sample, seed=seed, strategy=strategy, chunk_size=chunk_size,
                             quiet=quiet, input_shape=input_shape)
        del raw
        raw_scores = crit(ctx)
    return _checked_scores(criterion, raw_scores, params)


@dataclass(frozen=True)
class ScoringCall:
    """A call of ``score()`` that passed :func:`check_scoring`: the criterion, its options
    record and the parameters to score (name -> Parameter of the model)."""

    criterion: Criterion
    options: Options
    params: dict[str, nn.Parameter]


def check_scoring(criterion: str, model: nn.Module, *, labels: Tensor | None = None, probe: Tensor | None = None,
                  num_samples: int | None = None, per_class: int | None = None, chunk_size: int | None = None,
                  bn_mode: str | None = None, strategy: str = "auto", prunable: Any = None,
                  options: Options | Mapping[str, Any] | None = None,
                  spelled: Mapping[str, str] | None = None) -> ScoringCall:
    """Every precondition of ``score()`` with the same arguments, checked before any work
    (``ValueError`` naming the argument, the value and what is allowed); the model is left as
    it was. labels: every label of the scoring data (1-D integers; None skips the data checks);
    probe: one input batch as the model takes it (its first sample is run once to count the
    outputs). Per-sample criteria are checked against the model's BatchNorm flags as they are
    now. spelled: how the caller names the arguments in messages, e.g.
    ``{"num_samples": "config score_samples"}``."""
    def arg(name: str) -> str:
        return (spelled or {}).get(name, name)

    crit = _check_call(criterion, model, bn_mode, strategy, chunk_size, arg)
    record = _options_record(crit, options)
    params = resolve_prunable(model, prunable)
    if crit.per_sample:
        _check_batchnorm_for_per_sample(criterion, model, bn_mode, arg)
        if strategy == "hooks":
            with _Flags(model):
                _set_bn_mode(model, bn_mode)
                choose_strategy(model, params, strategy, name=arg("strategy"))
    if crit.needs_data and labels is not None:
        if labels.numel() == 0:
            raise ValueError(f"criterion {criterion!r} needs scoring data, but data is empty")
        labels = labels.reshape(-1).cpu()
        _check_subset(labels, num_samples, per_class, arg)
        if probe is not None:
            _check_labels(model, labels, probe[:1], next(iter(params.values())))
    return ScoringCall(crit, record, params)


def _one_options(criterion: str, options: Options | None, values: Mapping[str, Any]) -> Options | Mapping[str, Any]:
    if options is not None and values:
        raise ValueError(f"criterion {criterion!r}: give its options as a record (options=...) or as keywords "
                         f"({', '.join(values)}), not both")
    return options if options is not None else values


def _options_record(crit: Criterion, options: Options | Mapping[str, Any] | None) -> Options:
    """The criterion's options record: a record of its own class passes through unchanged."""
    if isinstance(options, Options):
        if type(options) is not crit.options:
            raise ValueError(f"criterion {crit.name!r} takes options {crit.options.__name__}, got "
                             f"{type(options).__name__}")
        return options
    return crit.make_options(options)


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


def check_bn_mode(bn_mode: Any, name: str = "bn_mode") -> str | None:
    """``bn_mode`` if it is None or one of :data:`BN_MODES`, else ``ValueError`` naming ``name``."""
    if bn_mode is not None and bn_mode not in BN_MODES:
        raise ValueError(f"{name}={bn_mode!r}: allowed: None, {', '.join(BN_MODES)}")
    return bn_mode


def _check_call(criterion: str, model: Any, bn_mode: str | None, strategy: str, chunk_size: Any,
                arg: Any) -> Criterion:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {unknown_names([criterion], CRITERIA)}; known: {', '.join(CRITERIA)}")
    check_bn_mode(bn_mode, arg("bn_mode"))
    check_strategy(strategy, arg("strategy"))
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{arg('chunk_size')}={chunk_size!r}: must be an integer >= 1")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    return CRITERIA[criterion]


def _check_subset(labels: Tensor, num_samples: Any, per_class: Any, arg: Any) -> None:
    """``num_samples`` / ``per_class`` fit the data (labels on the CPU)."""
    if num_samples is not None and per_class is not None:
        raise ValueError(f"{arg('num_samples')}={num_samples!r} and {arg('per_class')}={per_class!r}: give at most one")
    n = int(labels.numel())
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                    or not 1 <= num_samples <= n):
        raise ValueError(f"{arg('num_samples')}={num_samples!r}: must be an integer in [1, {n}] (the scoring data "
                         f"has {n} samples); use at most {n}, or None for all of them")
    if per_class is not None:
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise ValueError(f"{arg('per_class')}={per_class!r}: must be an integer >= 1")
        counts = torch.bincount(labels.clamp(min=0))
        present = counts[counts > 0]
        smallest = int(present.min())
        if per_class > smallest:
            c = int(torch.nonzero(counts == smallest)[0])
            raise ValueError(f"{arg('per_class')}={per_class}: class {c} of the scoring data has only {smallest} "
                             f"samples; use at most {smallest}, or None")


def _check_batchnorm_for_per_sample(criterion: str, model: nn.Module, bn_mode: str | None, arg: Any) -> None:
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
        raise ValueError(f"{arg('bn_mode')}={bn_mode!r}: criterion {criterion!r} needs per-sample gradients, but "
                         f"BatchNorm {batch_stats[0]!r} would use batch statistics (training={model.training}); "
                         "use bn_mode='eval' (the authors' setting) or a criterion without per-sample statistics")


def _set_bn_mode(model: nn.Module, bn_mode: str | None) -> None:
    if bn_mode in (None, "eval"):
        model.eval()
    elif bn_mode == "train":
        model.train()


def _check_labels(model: nn.Module, labels: Tensor, probe: Tensor, first: Tensor) -> None:
    """Labels must index the model's outputs (one probe forward in eval mode finds how many)."""
    dtype = first.dtype if first.is_floating_point() else torch.float32
    probe = probe.to(device=first.device, dtype=dtype) if probe.is_floating_point() else probe.to(first.device)
    try:
        with torch.no_grad(), _Flags(model):  # eval for the probe (one sample: batch statistics would fail)
            num_classes = model.eval()(probe).shape[-1]
    except RuntimeError as err:
        if probe.is_floating_point():
            raise
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"the inputs are {probe.dtype} (integer) and the model cannot take them ({first_line}); "
                         "convert images to floating point (x.float()), or give integer token ids only to a model "
                         "that embeds them (nn.Embedding)") from None
    ymin, ymax = int(labels.min()), int(labels.max())
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


class _Flags:
    """Snapshot and restore the modules' training flags."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> "_Flags":
        self.modes = [(mod, mod.training) for mod in self.model.modules()]
        return self

    def __exit__(self, *exc: Any) -> None:
        for mod, t in self.modes:
            mod.training = t


class _Restore(_Flags):
    """Snapshot and restore training flags, buffers and parameter flags/grads."""

    def __enter__(self) -> "_Restore":
        super().__enter__()
        self.buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        self.flags = [(p, p.requires_grad, p.grad) for p in self.model.parameters()]
        return self

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        for p, f, g in self.flags:
            p.requires_grad_(f)
            p.grad = g
