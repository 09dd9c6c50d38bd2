"""Pruning criteria at initialization: one registry, one ``score()``.

``score(criterion, model, data, ...)`` returns ``{name: Tensor}``, one score per prunable
parameter, shaped like it, **higher = keep**. A criterion is a function of a
:class:`ScoringContext` registered with one decorator line::

    @criterion("my_crit", per_sample=True, options={"alpha": 1.0})
    def my_crit(ctx):
        return {n: ctx.opt("alpha") * ctx.theta[n].abs() * ctx.fisher()[n] for n in ctx.names}

The context computes statistics lazily and caches them, so FTS, FD, FP and FBSS share one
per-sample pass (:mod:`fts_core.persample`), GraSP and the Hutchinson family use
:mod:`fts_core.curvature`, SynFlow :mod:`fts_core.synflow`.

Notation (``shared/paper-notes.md``): θ weights, ĝ = (1/N) Σ_n ∇ℓ_n the mean gradient,
F̂ = (1/N) Σ_n (∇ℓ_n)² the empirical Fisher diagonal (per-sample gradients, true labels),
H the Hessian of the mean loss, Ĥ its Hutchinson diagonal estimate.

Conventions follow the authors' code by default; each alternative is one option:

* ``fts``: ``|θĝ + ½θ²F̂|`` with a **+** (code); ``sign="-"`` gives ``|−θĝ + ½θ²F̂|``, the
  Taylor estimate of the loss change of removing the weight; ``absolute=False`` drops the
  absolute value. The code's batch factor ``B·F̂_B`` is the per-sample Fisher at B = 1
  (every shipped config); we always compute the exact per-sample F̂, i.e. B = 1.
* ``grasp``: ``−θ_P ⊙ (Hĝ)_P``, keeping the *highest* (the authors' v1 code);
  ``convention="reference"`` gives ``θ_P ⊙ (Hĝ)_P`` (Wang et al. remove the highest ``−θHĝ``).
  ĝ and the Hessian-vector product are taken over **all** trainable parameters (biases,
  BatchNorm, classifier included), as Wang et al. and the authors' code do, and only then
  restricted to the prunable entries P (so H_PO ĝ_O terms count).
  ``temperature`` divides the logits for both ĝ and Hĝ (1 by default; Wang et al. use 200).
* ``fbss``: ``½(F̂+ε)(θ − ĝ/(F̂+ε))²`` with damping ε = ``damping`` (the code has none, so
  F̂ = 0 gives NaN, ranked first by ``topk``; since ĝ² ≤ F̂, ε only matters where F̂ = 0,
  where the score becomes ``½εθ² ≈ 0``).
* ``snip``: ``|θ ⊙ ĝ|`` with ĝ over the whole scoring set (the code sums; original SNIP
  uses one batch); ``grad_norm``: ``|ĝ|``.
* Hutchinson family (2026 revision): Ĥ from ``probes`` Rademacher probes per batch at logit
  temperature ``temperature`` = 200 (the revision's code); ``hts`` uses ĝ at the same
  temperature (both terms are the Taylor terms of the same tempered loss).
* ``synflow``: a 100-round procedure; needs ``sparsity=`` (see :mod:`fts_core.synflow`).

BatchNorm: the authors score in eval mode (running statistics). Per-sample statistics are
only defined then (batch statistics couple the samples), so by default (``bn_mode=None``) a
per-sample criterion refuses a model with BatchNorm in train mode instead of silently
switching it: call ``model.eval()`` or pass ``bn_mode="eval"`` (see :func:`score`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fts_core import curvature, persample
from fts_core.synflow import synflow_scores

__all__ = ["CRITERIA", "ScoringContext", "criterion", "score", "BN_MODES"]

CriterionFn = Callable[["ScoringContext"], dict[str, Tensor]]
#: name -> criterion function (with attributes ``needs_data``, ``per_sample``, ``options``)
CRITERIA: dict[str, CriterionFn] = {}
BN_MODES = ("eval", "train", "as_is")
_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def criterion(name: str, *, needs_data: bool = True, per_sample: bool = False,
              options: Mapping[str, Any] | None = None) -> Callable[[CriterionFn], CriterionFn]:
    """Register ``fn(ctx) -> {name: Tensor}`` as criterion ``name``.

    per_sample: the criterion needs per-sample statistics (F̂): the scorer then checks that
    BatchNorm uses running statistics, and ĝ comes from the same pass. options: accepted
    keyword options and their defaults (read with ``ctx.opt(key)``).
    """
    def deco(fn: CriterionFn) -> CriterionFn:
        if name in CRITERIA:
            raise ValueError(f"criterion {name!r} is already registered")
        fn.needs_data = needs_data  # type: ignore[attr-defined]
        fn.per_sample = per_sample  # type: ignore[attr-defined]
        fn.options = dict(options or {})  # type: ignore[attr-defined]
        CRITERIA[name] = fn
        return fn
    return deco


# --------------------------------------------------------------------------- context
class ScoringContext:
    """What a criterion sees: model, prunable params, scoring batches, options, cached statistics.

    Attributes: ``model``, ``params`` (name -> Parameter), ``names``, ``batches``
    (list of ``(x, y)`` on the model's device), ``seed``, ``strategy``, ``chunk_size``,
    ``quiet``, ``input_shape`` (one sample's shape or None). Statistics (dicts name ->
    tensor, cached): :attr:`theta`, :meth:`mean_grad`, :meth:`fisher`, :meth:`grad_stats`,
    :meth:`grasp_hg`, :meth:`hutchinson`.
    """

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], batches: list[tuple[Tensor, Tensor]],
                 *, options: dict[str, Any], defaults: dict[str, Any], per_sample: bool, seed: int,
                 strategy: str, chunk_size: int | None, quiet: bool, input_shape: tuple[int, ...] | None) -> None:
        self.model, self.params, self.names, self.batches = model, params, list(params), batches
        self.seed, self.strategy, self.chunk_size, self.quiet = seed, strategy, chunk_size, quiet
        self.input_shape = input_shape
        self._options, self._defaults, self._per_sample = options, defaults, per_sample
        self._cache: dict[tuple, Any] = {}

    def opt(self, key: str) -> Any:
        """The value of option ``key`` (given to ``score`` or the registered default)."""
        return self._options.get(key, self._defaults[key])

    @property
    def theta(self) -> dict[str, Tensor]:
        """Weights θ, detached."""
        return {n: p.detach() for n, p in self.params.items()}

    def _cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def grad_stats(self, temperature: float = 1.0) -> persample.GradStats:
        """ĝ and F̂ from one per-sample pass (:func:`fts_core.persample.per_sample_stats`)."""
        return self._cached(("stats", float(temperature)), lambda: persample.per_sample_stats(
            self.model, self.params, self.batches, strategy=self.strategy, chunk_size=self.chunk_size,
            temperature=temperature, quiet=self.quiet))

    def fisher(self, temperature: float = 1.0) -> dict[str, Tensor]:
        """Empirical Fisher diagonal F̂ = (1/N) Σ_n g_n²."""
        return self.grad_stats(temperature).fisher

    def mean_grad(self, temperature: float = 1.0) -> dict[str, Tensor]:
        """Mean gradient ĝ: from the per-sample pass when the criterion needs one, else batched."""
        key = ("stats", float(temperature))
        if key in self._cache or self._per_sample:
            return self.grad_stats(temperature).mean_grad
        if ("hg", float(temperature)) in self._cache:
            return self._cache[("hg", float(temperature))][0]
        return self._cached(("grad", float(temperature)), lambda: persample.batched_mean_grad(
            self.model, self.params, self.batches, temperature=temperature, quiet=self.quiet))

    def grasp_hg(self, temperature: float = 1.0) -> dict[str, Tensor]:
        """(H ĝ)_P: Hessian of the mean tempered loss times its mean gradient, both over *all*
        trainable parameters, restricted to the prunable ones (:func:`fts_core.curvature.grasp_hg`)."""
        return self._cached(("hg", float(temperature)), lambda: curvature.grasp_hg(
            self.model, self.params, self.batches, temperature=temperature, quiet=self.quiet))[1]

    def hutchinson(self, probes: int = 10, temperature: float = 200.0) -> dict[str, Tensor]:
        """Hutchinson diagonal Ĥ (``probes`` Rademacher probes per batch, seeded by ``seed``)."""
        return self._cached(("hutch", int(probes), float(temperature)), lambda: curvature.hutchinson_diag(
            self.model, self.params, self.batches, probes=probes, temperature=temperature, seed=self.seed,
            quiet=self.quiet))


# --------------------------------------------------------------------------- criteria
@criterion("random", needs_data=False)
def _random(ctx: ScoringContext) -> dict[str, Tensor]:
    """Uniform [0, 1) scores from a CPU generator seeded by ``seed`` (device-independent)."""
    gen = torch.Generator().manual_seed(int(ctx.seed))
    return {n: torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.device, p.dtype)
            for n, p in ctx.params.items()}


@criterion("magnitude", needs_data=False)
def _magnitude(ctx: ScoringContext) -> dict[str, Tensor]:
    """|θ|."""
    return {n: t.abs() for n, t in ctx.theta.items()}


@criterion("grad_norm")
def _grad_norm(ctx: ScoringContext) -> dict[str, Tensor]:
    """|ĝ| elementwise (GN)."""
    return {n: g.abs() for n, g in ctx.mean_grad().items()}


@criterion("snip")
def _snip(ctx: ScoringContext) -> dict[str, Tensor]:
    """|θ ⊙ ĝ| (connection sensitivity)."""
    g, th = ctx.mean_grad(), ctx.theta
    return {n: (th[n] * g[n]).abs() for n in ctx.names}


@criterion("grasp", options={"temperature": 1.0, "convention": "authors"})
def _grasp(ctx: ScoringContext) -> dict[str, Tensor]:
    """−θ_P ⊙ (Hĝ)_P (authors: keep highest) or θ_P ⊙ (Hĝ)_P (``convention="reference"``, Wang et al.).

    ĝ and Hĝ are over all trainable parameters (biases, BatchNorm, classifier included), as in
    Wang et al. and the authors' code; only the product is restricted to the prunable entries."""
    conv = ctx.opt("convention")
    if conv not in ("authors", "reference"):
        raise ValueError(f"unknown grasp convention {conv!r}; allowed: ('authors', 'reference')")
    hg, th = ctx.grasp_hg(ctx.opt("temperature")), ctx.theta
    sign = -1.0 if conv == "authors" else 1.0
    return {n: sign * th[n] * hg[n] for n in ctx.names}


@criterion("synflow", needs_data=False, options={"sparsity": None, "rounds": 100, "schedule": "exponential",
                                                 "double": True, "input_shape": None})
def _synflow(ctx: ScoringContext) -> dict[str, Tensor]:
    """Final-round SynFlow scores, earlier-pruned weights at −1 (needs ``sparsity``)."""
    if ctx.opt("sparsity") is None:
        raise ValueError("criterion 'synflow' is an iterative procedure: pass the target sparsity, "
                         "e.g. score('synflow', model, data, sparsity=0.9); make_masks(scores, 0.9) "
                         "then reproduces the iterative mask")
    shape = ctx.opt("input_shape") or ctx.input_shape
    if shape is None:
        raise ValueError("criterion 'synflow' needs the input shape: pass data or input_shape=(C, H, W)")
    return synflow_scores(ctx.model, ctx.names, tuple(shape), sparsity=ctx.opt("sparsity"),
                          rounds=ctx.opt("rounds"), schedule=ctx.opt("schedule"),
                          double=ctx.opt("double"), quiet=ctx.quiet)


@criterion("fisher_diag", per_sample=True)
def _fisher_diag(ctx: ScoringContext) -> dict[str, Tensor]:
    """F̂ (FD)."""
    return dict(ctx.fisher())


@criterion("fisher_pruning", per_sample=True)
def _fisher_pruning(ctx: ScoringContext) -> dict[str, Tensor]:
    """½ θ² F̂ (FP: OBD with the empirical Fisher for the Hessian)."""
    f, th = ctx.fisher(), ctx.theta
    return {n: 0.5 * th[n].square() * f[n] for n in ctx.names}


def _taylor(ctx: ScoringContext, g: dict[str, Tensor], curv: dict[str, Tensor]) -> dict[str, Tensor]:
    sign, absolute = ctx.opt("sign"), ctx.opt("absolute")
    if sign not in ("+", "-"):
        raise ValueError(f"unknown sign {sign!r}; allowed: ('+', '-')")
    s = 1.0 if sign == "+" else -1.0
    th = ctx.theta
    out = {n: torch.addcmul(s * th[n] * g[n], th[n].square(), curv[n], value=0.5) for n in ctx.names}
    return {n: v.abs() for n, v in out.items()} if absolute else out


@criterion("fts", per_sample=True, options={"sign": "+", "absolute": True})
def _fts(ctx: ScoringContext) -> dict[str, Tensor]:
    """|θ ⊙ ĝ + ½ θ² ⊙ F̂| (Fisher-Taylor sensitivity; ``sign``/``absolute`` options)."""
    f = ctx.fisher()
    return _taylor(ctx, ctx.mean_grad(), f)


@criterion("fbss", per_sample=True, options={"damping": 1e-30})
def _fbss(ctx: ScoringContext) -> dict[str, Tensor]:
    """½ (F̂+ε) (θ − ĝ/(F̂+ε))² (diagonal OBS with a gradient term, damped)."""
    eps = float(ctx.opt("damping"))
    if not eps >= 0.0:
        raise ValueError(f"damping must be >= 0, got {eps!r}")
    f = ctx.fisher()
    g, th = ctx.mean_grad(), ctx.theta
    out = {}
    for n in ctx.names:
        fd = f[n] + eps
        out[n] = 0.5 * fd * (th[n] - g[n] / fd).square()
    return out


_HUTCH = {"probes": 10, "temperature": 200.0}


@criterion("hutchinson_diag", options=_HUTCH)
def _hutchinson_diag(ctx: ScoringContext) -> dict[str, Tensor]:
    """Ĥ = E_z[z ⊙ Hz] (Rademacher; may be negative)."""
    return dict(ctx.hutchinson(ctx.opt("probes"), ctx.opt("temperature")))


@criterion("hutchinson_pruning", options=_HUTCH)
def _hutchinson_pruning(ctx: ScoringContext) -> dict[str, Tensor]:
    """½ θ² Ĥ (OBD with the Hutchinson diagonal)."""
    h, th = ctx.hutchinson(ctx.opt("probes"), ctx.opt("temperature")), ctx.theta
    return {n: 0.5 * th[n].square() * h[n] for n in ctx.names}


@criterion("hts", options={**_HUTCH, "sign": "+", "absolute": True})
def _hts(ctx: ScoringContext) -> dict[str, Tensor]:
    """|θ ⊙ ĝ_T + ½ θ² ⊙ Ĥ_T| (Hutchinson-Taylor sensitivity, one temperature T for both)."""
    t = ctx.opt("temperature")
    h = ctx.hutchinson(ctx.opt("probes"), t)
    return _taylor(ctx, ctx.mean_grad(t), h)


# --------------------------------------------------------------------------- data
def _collect(data: Any, limit: int | None = None) -> list[tuple[Tensor, Tensor]]:
    """The ``(x, y)`` batches of ``data`` as tensors, where they are (not moved or cast yet)."""
    if data is None:
        return []
    out = []
    try:
        iterator = iter(data)
    except TypeError:
        raise ValueError(f"data must be an iterable of (inputs, targets) batches, got {type(data).__name__}") from None
    for i, batch in enumerate(iterator):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"batch {i} of data is not an (inputs, targets) pair: {type(batch).__name__}")
        x, y = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
        if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool or y.shape[0] != x.shape[0]:
            raise ValueError(f"batch {i}: targets must be integer class labels of shape ({x.shape[0]},), "
                             f"got dtype {y.dtype} shape {tuple(y.shape)}")
        if x.shape[0] > 0:
            out.append((x, y))
        if limit is not None and len(out) >= limit:
            break
    return out


def _to_device(batches: list[tuple[Tensor, Tensor]], device: torch.device,
               dtype: torch.dtype) -> list[tuple[Tensor, Tensor]]:
    """Batches on ``device``: float inputs cast to the model's ``dtype``, labels int64 (no copy
    when already so)."""
    out = []
    for x, y in batches:
        x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device=device)
        out.append((x, y.to(device=device, dtype=torch.long)))
    return out


def _label_range(batches: list[tuple[Tensor, Tensor]]) -> tuple[int, int]:
    """(min, max) label over all batches, where the labels are: one concatenation, one
    ``aminmax``, one host sync (no per-batch ``.item()``)."""
    where = batches[0][1].device
    y = torch.cat([b[1].to(device=where, dtype=torch.long) for b in batches])
    lo, hi = torch.aminmax(y)
    ymin, ymax = torch.stack([lo, hi]).tolist()
    return int(ymin), int(ymax)


def _select(batches: list[tuple[Tensor, Tensor]], num_samples: int | None, per_class: int | None,
            seed: int, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    """Reproducible subset: ``per_class`` samples of every class or ``num_samples`` in all.

    Indices come from ``torch.randperm`` on a CPU generator seeded by ``seed`` (over the whole
    data, or within each class), sorted back into data order; the chosen rows are gathered batch
    by batch (the inputs are never concatenated as a whole, so no second full copy of the data
    exists) and re-batched at ``batch_size``.
    """
    if num_samples is None and per_class is None:
        return batches
    if num_samples is not None and per_class is not None:
        raise ValueError("give num_samples or per_class, not both")
    sizes = [int(b[0].shape[0]) for b in batches]
    n = sum(sizes)
    gen = torch.Generator().manual_seed(int(seed))
    if per_class is not None:
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise ValueError(f"per_class must be an integer >= 1, got {per_class!r}")
        y_cpu = torch.cat([b[1].reshape(-1).cpu() for b in batches])  # labels only (small)
        picks = []
        for c in torch.unique(y_cpu).tolist():
            idx = torch.nonzero(y_cpu == c).flatten()
            if idx.numel() < per_class:
                raise ValueError(f"per_class={per_class} but class {c} has only {idx.numel()} samples")
            picks.append(idx[torch.randperm(idx.numel(), generator=gen)[:per_class]])
        chosen = torch.cat(picks)
    else:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= n:
            raise ValueError(f"num_samples must be an integer in [1, {n}] (the data size), got {num_samples!r}")
        chosen = torch.randperm(n, generator=gen)[:num_samples]
    chosen = torch.sort(chosen).values
    xs, ys, start = [], [], 0
    for (x, y), size in zip(batches, sizes):
        lo, hi = torch.searchsorted(chosen, torch.tensor([start, start + size])).tolist()
        if hi > lo:
            local = chosen[lo:hi] - start
            xs.append(x[local.to(x.device)])
            ys.append(y[local.to(y.device)])
        start += size
    x_sel, y_sel = torch.cat(xs), torch.cat(ys)
    del xs, ys
    return [(x_sel[i:i + batch_size], y_sel[i:i + batch_size]) for i in range(0, x_sel.shape[0], batch_size)]


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


def _resolve_prunable(model: nn.Module, prunable: Any) -> dict[str, nn.Parameter]:
    from fts_core.masks import prunable_parameters

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


# --------------------------------------------------------------------------- score
def score(criterion: str, model: nn.Module, data: Iterable | None = None, *, num_samples: int | None = None,
          per_class: int | None = None, chunk_size: int | None = None, bn_mode: str | None = None, seed: int = 0,
          strategy: str = "auto", prunable: Any = None, quiet: bool = True, **options: Any) -> dict[str, Tensor]:
    """Scores ``{name: Tensor}`` (shape of each prunable parameter, higher = keep).

    criterion: a key of :data:`CRITERIA`. data: iterable of ``(inputs, targets)`` batches
    (a DataLoader, a TensorLoader, a list of tensor pairs); materialised once so every pass
    sees the same (e.g. augmented) samples, and only the scoring samples are moved to the
    model's device (cast to its dtype); may be None for the data-free ``random``,
    ``magnitude`` and ``synflow`` (with ``input_shape=``).
    num_samples / per_class: a random subset (``torch.randperm`` on a CPU generator seeded
    by ``seed``) of N samples in all / of ``per_class`` per class, in data order, re-batched
    at the first batch's size. chunk_size: samples per vectorised step of the per-sample
    pass (memory bound; default 32).
    bn_mode: how BatchNorm is run while scoring.

    * ``None`` (default): like ``"eval"``, except that a **per-sample** criterion (FTS, FD,
      FP, FBSS) refuses a model with a BatchNorm module in train mode (ValueError): batch
      statistics would mix the samples, so either call ``model.eval()`` first or pass
      ``bn_mode="eval"`` to let the scorer switch BatchNorm to its running statistics;
    * ``"eval"``: the whole model in eval mode while scoring (the authors: running statistics);
    * ``"train"``: batch statistics (refused for per-sample criteria; buffers restored);
    * ``"as_is"``: the model's own flags (per-sample criteria refuse train-mode BatchNorm).

    The model's flags are restored afterwards in every case. seed: random scores, subsets,
    Hutchinson probes. strategy: per-sample strategy (see :mod:`fts_core.persample`).
    prunable: None (``masks.prunable_parameters(model)``), a rule name/callable for it, or a
    dict name -> Parameter. quiet: False shows tqdm bars for the per-sample, GraSP, Hutchinson
    and SynFlow passes. options: criterion options (see the criterion's ``options``). The
    model is returned unmodified (weights, buffers, training flags, ``requires_grad``,
    ``.grad``).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    fn = CRITERIA[criterion]
    unknown = sorted(set(options) - set(fn.options))  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for criterion {criterion!r}; "
                         f"allowed: {sorted(fn.options) or 'none'}")  # type: ignore[attr-defined]
    if bn_mode is not None and bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; allowed: None, {', '.join(map(repr, BN_MODES))}")
    if strategy not in persample.STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; allowed: {persample.STRATEGIES}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    params = _resolve_prunable(model, prunable)
    first = next(iter(params.values()))
    per_sample = bool(fn.per_sample)  # type: ignore[attr-defined]
    if per_sample:
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
    device = first.device
    dtype = first.dtype if first.is_floating_point() else torch.float32
    raw = _collect(data, limit=None if fn.needs_data else 1)  # data-free: the input shape only
    if fn.needs_data and not raw:  # type: ignore[attr-defined]
        raise ValueError(f"criterion {criterion!r} needs scoring data, but data is empty")
    input_shape = tuple(raw[0][0].shape[1:]) if raw else None
    with _Restore(model):
        if bn_mode in (None, "eval"):
            model.eval()
        elif bn_mode == "train":
            model.train()
        if fn.needs_data:  # type: ignore[attr-defined]
            ymin, ymax = _label_range(raw)
            modes = [(m, m.training) for m in model.modules()]
            with torch.no_grad():  # eval for the probe forward (one sample, batch statistics fail)
                probe = _to_device([(raw[0][0][:1], raw[0][1][:1])], device, dtype)[0][0]
                num_classes = model.eval()(probe).shape[-1]
            for m, t in modes:
                m.training = t
            if ymin < 0 or ymax >= num_classes:
                raise ValueError(f"labels must lie in [0, {num_classes - 1}] (the model's outputs), "
                                 f"got min {ymin}, max {ymax}")
            raw = _select(raw, num_samples, per_class, seed, int(raw[0][0].shape[0]))
        batches = _to_device(raw, device, dtype)
        del raw
        ctx = ScoringContext(model, params, batches, options=options, defaults=fn.options,  # type: ignore[attr-defined]
                             per_sample=per_sample, seed=seed, strategy=strategy, chunk_size=chunk_size,
                             quiet=quiet, input_shape=input_shape)
        raw_scores = fn(ctx)
    out = {}
    for n, p in params.items():
        s = raw_scores[n].detach()
        if s.shape != p.shape:
            raise RuntimeError(f"criterion {criterion!r} returned shape {tuple(s.shape)} for {n!r}, "
                               f"expected {tuple(p.shape)}")
        out[n] = s
    return out
