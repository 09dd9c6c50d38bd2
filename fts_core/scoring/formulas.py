"""The Taylor-family saliencies as pure functions of tensors (any shape, elementwise).

θ weights, ĝ the mean gradient, F̂ the empirical Fisher diagonal, H a curvature diagonal (the
Hessian's, or Hutchinson's estimate of it). Removing weight q changes the loss by
ΔL_q ≈ −θ_q g_q + ½ θ_q² H_qq; the scorers, chapter 1's exact checks and chapter 2 all use these
functions, so each formula exists once.

Sign convention of FTS: the authors' code adds the first-order term (``sign=+1``, the Taylor
estimate of *doubling* the weight); the removal expansion has ``sign=-1``. With the absolute
value taken of the sum, the two rank differently only where the terms are comparable.
"""
from __future__ import annotations

from torch import Tensor

__all__ = ["snip", "fisher_pruning", "obd", "taylor", "fbss", "fbss_authors"]


def snip(theta: Tensor, grad: Tensor) -> Tensor:
    """|θ ⊙ ĝ|: the magnitude of the first-order term (connection sensitivity)."""
    return (theta * grad).abs()


def fisher_pruning(theta: Tensor, fisher: Tensor) -> Tensor:
    """½ θ² F̂: Optimal Brain Damage with the empirical Fisher in place of the Hessian."""
    return 0.5 * theta.square() * fisher


def obd(theta: Tensor, hessian: Tensor) -> Tensor:
    """½ θ² H: Optimal Brain Damage."""
    return 0.5 * theta.square() * hessian


def taylor(theta: Tensor, grad: Tensor, curvature: Tensor, sign: float = 1.0, absolute: bool = True) -> Tensor:
    """``|sign·θĝ + ½θ²H|`` (without the absolute value if ``absolute=False``): FTS with H = F̂,
    HTS with Hutchinson's H, the exact second-order removal estimate with the Hessian, sign −1."""
    out = (sign * theta * grad).addcmul_(theta.square(), curvature, value=0.5)
    return out.abs() if absolute else out


def fbss(theta: Tensor, grad: Tensor, fisher: Tensor, damping: float) -> Tensor:
    """½ (F̂+ε)(θ − ĝ/(F̂+ε))²: diagonal OBS with a gradient term, damped by ε = ``damping``."""
    fd = fisher + damping
    return 0.5 * fd * (theta - grad / fd).square()


def fbss_authors(theta: Tensor, grad: Tensor, fisher: Tensor) -> Tensor:
    """The authors' undamped FBSS, in their order of operations (batch factor B = 1): NaN where
    F̂ = 0, equal to :func:`fbss` up to round-off elsewhere."""
    inv = 1.0 / fisher
    return (1.0 / (2.0 * inv)) * (theta - inv * grad).square()
