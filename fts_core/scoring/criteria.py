"""The pruning criteria: each one function, its options record and one registry line.

Every criterion returns ``{name: Tensor}``, one score per prunable parameter, shaped like it,
**higher = keep**. Notation: θ weights, ĝ = (1/N) Σ_n ∇ℓ_n, F̂ = (1/N) Σ_n (∇ℓ_n)² (per-sample
gradients, true labels), H the Hessian of the mean loss, Ĥ its Hutchinson estimate; the formulas are
in :mod:`fts_core.scoring.formulas`. Where the paper and the authors' code disagree, the default
follows the code unless the code has a defect, and the other convention is an option (the guide's
"The criteria", ``book/guide.md``, gives each one and why):

* ``fts``, ``hts``: ``sign`` ("+" the code, "-" the removal expansion) and ``absolute``;
* ``grasp``: keeps the highest −θ_P ⊙ (Hĝ)_P (the code); ``convention="reference"``: Wang et al.'s sign;
* ``fbss``: damped by ``damping`` ε; ``convention="authors"``: the code's undamped score, NaN where F̂ = 0;
* ``synflow``: needs ``sparsity`` (:mod:`fts_core.scoring.synflow`); ``convention="authors"``: the revision's;
* Hutchinson family: ``probes`` per batch at ``temperature`` 200, as in the 2026 revision's code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from fts_core.scoring import formulas as Fm
from fts_core.scoring.context import ScoringContext
from fts_core.scoring.registry import Options, criterion, option
from fts_core.scoring.synflow import CONVENTIONS as SYNFLOW_CONVENTIONS
from fts_core.scoring.synflow import SCHEDULES, synflow_scores
from fts_core.setup.seeding import make_generator

Scores = dict[str, Tensor]


# --------------------------------------------------------------------------- options records
@dataclass(frozen=True)
class TaylorOptions(Options):
    sign: str = option("+", "sign of the first-order term: '+' the authors' code, '-' the removal expansion",
                       choices=("+", "-"))
    absolute: bool = option(True, "score the absolute value of the Taylor sum")


@dataclass(frozen=True)
class GraspOptions(Options):
    temperature: float = option(1.0, "logits are divided by it for ĝ and Hĝ", low=0.0, low_open=True)
    convention: str = option("authors", "authors: keep the highest −θHĝ; reference: Wang et al.'s sign",
                             choices=("authors", "reference"))


@dataclass(frozen=True)
class FbssOptions(Options):
    damping: float = option(1e-30, "ε added to F̂ (0 would give NaN where F̂ = 0: use convention='authors')",
                            low=0.0, low_open=True)
    convention: str = option("damped", "damped: ours; authors: their undamped expression, NaN where F̂ = 0",
                             choices=("damped", "authors"))


@dataclass(frozen=True)
class SynflowOptions(Options):
    sparsity: Optional[float] = option(None, "target sparsity of the procedure (a run passes its own)",
                                       low=0.0, high=1.0, high_open=True)
    rounds: int = option(100, "pruning rounds", low=1)
    schedule: str = option("exponential", "kept fraction per round", choices=SCHEDULES)
    double: bool = option(True, "compute in float64 (ours; the authors' convention uses the model's dtype)")
    input_shape: Optional[tuple[int, ...]] = option(None, "one sample's shape when no data is given, e.g. [3, 32, 32]")
    convention: str = option("ours", "ours: Tanaka et al.'s schedule; authors: the 2026 revision's",
                             choices=SYNFLOW_CONVENTIONS)


@dataclass(frozen=True)
class HutchinsonOptions(Options):
    probes: int = option(10, "Rademacher probes per batch", low=1)
    temperature: float = option(200.0, "logits are divided by it (the revision's code: 200)", low=0.0, low_open=True)


@dataclass(frozen=True)
class HtsOptions(HutchinsonOptions, TaylorOptions):
    pass


# --------------------------------------------------------------------------- criteria
@criterion("random", label="Random", needs_data=False)
def random_scores(ctx: ScoringContext) -> Scores:
    """Uniform [0, 1) scores from a CPU generator seeded by ``seed`` (device-independent)."""
    gen = make_generator(int(ctx.seed))
    return {n: torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.device, p.dtype)
            for n, p in ctx.params.items()}


@criterion("magnitude", label="Magnitude", needs_data=False)
def magnitude(ctx: ScoringContext) -> Scores:
    """|θ|."""
    return {n: t.abs() for n, t in ctx.theta.items()}


@criterion("grad_norm", label="GN")
def grad_norm(ctx: ScoringContext) -> Scores:
    """|ĝ| elementwise (GN)."""
    return {n: g.abs() for n, g in ctx.mean_grad().items()}


@criterion("snip", label="SNIP")
def snip(ctx: ScoringContext) -> Scores:
    """|θ ⊙ ĝ| (connection sensitivity)."""
    g, th = ctx.mean_grad(), ctx.theta
    return {n: Fm.snip(th[n], g[n]) for n in ctx.names}


@criterion("grasp", label="GraSP", options=GraspOptions)
def grasp(ctx: ScoringContext) -> Scores:
    """−θ_P ⊙ (Hĝ)_P (authors: keep highest) or θ_P ⊙ (Hĝ)_P (``convention="reference"``)."""
    hg, th = ctx.grasp_hg(ctx.options.temperature), ctx.theta
    sign = -1.0 if ctx.options.convention == "authors" else 1.0
    return {n: sign * th[n] * hg[n] for n in ctx.names}


@criterion("synflow", label="SynFlow", options=SynflowOptions, needs_data=False, iterative=True)
def synflow(ctx: ScoringContext) -> Scores:
    """Final-round SynFlow scores, earlier-pruned weights at −1 (needs ``sparsity``)."""
    o = ctx.options
    if o.sparsity is None:
        raise ValueError("criterion 'synflow' is an iterative procedure: pass the target sparsity, "
                         "e.g. score('synflow', model, data, sparsity=0.9); make_masks(scores, 0.9) "
                         "then reproduces the iterative mask")
    shape = o.input_shape or ctx.input_shape
    if shape is None:
        raise ValueError("criterion 'synflow' needs the input shape: pass data or input_shape=(C, H, W)")
    return synflow_scores(ctx.model, ctx.names, tuple(shape), sparsity=o.sparsity, rounds=o.rounds,
                          schedule=o.schedule, double=o.double, convention=o.convention, quiet=ctx.quiet)


@criterion("fisher_diag", label="FD", per_sample=True)
def fisher_diag(ctx: ScoringContext) -> Scores:
    """F̂ (FD)."""
    return dict(ctx.fisher())


@criterion("fisher_pruning", label="FP", per_sample=True)
def fisher_pruning(ctx: ScoringContext) -> Scores:
    """½ θ² F̂ (FP: OBD with the empirical Fisher for the Hessian)."""
    f, th = ctx.fisher(), ctx.theta
    return {n: Fm.fisher_pruning(th[n], f[n]) for n in ctx.names}


@criterion("fts", label="FTS", options=TaylorOptions, per_sample=True)
def fts(ctx: ScoringContext) -> Scores:
    """|θ ⊙ ĝ + ½ θ² ⊙ F̂| (Fisher-Taylor sensitivity; ``sign``/``absolute`` options)."""
    f, g, th, o = ctx.fisher(), ctx.mean_grad(), ctx.theta, ctx.options
    sign = 1.0 if o.sign == "+" else -1.0
    return {n: Fm.taylor(th[n], g[n], f[n], sign, o.absolute) for n in ctx.names}


@criterion("fbss", label="FBSS", options=FbssOptions, per_sample=True)
def fbss(ctx: ScoringContext) -> Scores:
    """½ (F̂+ε) (θ − ĝ/(F̂+ε))² (diagonal OBS with a gradient term, damped); ``convention="authors"``:
    the authors' undamped expression, NaN where F̂ = 0."""
    f, g, th, o = ctx.fisher(), ctx.mean_grad(), ctx.theta, ctx.options
    if o.convention == "authors":
        return {n: Fm.fbss_authors(th[n], g[n], f[n]) for n in ctx.names}
    return {n: Fm.fbss(th[n], g[n], f[n], o.damping) for n in ctx.names}


@criterion("hutchinson_diag", label="HD", options=HutchinsonOptions)
def hutchinson_diag(ctx: ScoringContext) -> Scores:
    """Ĥ = E_z[z ⊙ Hz] (Rademacher; may be negative)."""
    return dict(ctx.hutchinson(ctx.options.probes, ctx.options.temperature))


@criterion("hutchinson_pruning", label="HP", options=HutchinsonOptions)
def hutchinson_pruning(ctx: ScoringContext) -> Scores:
    """½ θ² Ĥ (OBD with the Hutchinson diagonal)."""
    h, th = ctx.hutchinson(ctx.options.probes, ctx.options.temperature), ctx.theta
    return {n: Fm.obd(th[n], h[n]) for n in ctx.names}


@criterion("hts", label="HTS", options=HtsOptions)
def hts(ctx: ScoringContext) -> Scores:
    """|θ ⊙ ĝ_T + ½ θ² ⊙ Ĥ_T| (Hutchinson-Taylor sensitivity, one temperature T for both)."""
    o = ctx.options
    h = ctx.hutchinson(o.probes, o.temperature)
    g, th = ctx.mean_grad(o.temperature), ctx.theta
    sign = 1.0 if o.sign == "+" else -1.0
    return {n: Fm.taylor(th[n], g[n], h[n], sign, o.absolute) for n in ctx.names}
