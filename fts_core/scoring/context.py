"""What a criterion sees: the model, its prunable parameters, the scoring batches, its options,
and the statistics it asks for, computed lazily and shared (FTS, FD, FP and FBSS share one
per-sample pass)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from fts_core.scoring.curvature import grasp_hg, hutchinson_diag
from fts_core.scoring.gradients import batched_mean_grad
from fts_core.scoring.persample import GradStats, per_sample_stats
from fts_core.scoring.registry import Options

__all__ = ["ScoringContext"]


class ScoringContext:
    """What a criterion sees: model, prunable params, scoring batches, options, cached statistics.

    Attributes: ``model``, ``params`` (name -> Parameter), ``names``, ``batches``
    (list of ``(x, y)`` on the model's device), ``options`` (the criterion's options record),
    ``seed``, ``strategy``, ``chunk_size``, ``quiet``, ``input_shape`` (one sample's shape or None). Statistics (dicts name ->
    tensor, cached): :attr:`theta`, :meth:`mean_grad`, :meth:`fisher`, :meth:`grad_stats`,
    :meth:`grasp_hg`, :meth:`hutchinson`.
    """

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], batches: list[tuple[Tensor, Tensor]],
                 *, options: Options, per_sample: bool, seed: int, strategy: str, chunk_size: int | None,
                 quiet: bool, input_shape: tuple[int, ...] | None) -> None:
        self.model, self.params, self.names, self.batches = model, params, list(params), batches
        self.seed, self.strategy, self.chunk_size, self.quiet = seed, strategy, chunk_size, quiet
        self.input_shape, self.options = input_shape, options
        self._per_sample = per_sample
        self._cache: dict[tuple, Any] = {}

    @property
    def theta(self) -> dict[str, Tensor]:
        """Weights θ, detached."""
        return {n: p.detach() for n, p in self.params.items()}

    def _cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def grad_stats(self, temperature: float = 1.0) -> GradStats:
        """ĝ and F̂ from one per-sample pass (:func:`fts_core.scoring.persample.per_sample_stats`)."""
        return self._cached(("stats", float(temperature)), lambda: per_sample_stats(
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
        return self._cached(("grad", float(temperature)), lambda: batched_mean_grad(
            self.model, self.params, self.batches, temperature=temperature, quiet=self.quiet))

    def grasp_hg(self, temperature: float = 1.0) -> dict[str, Tensor]:
        """(H ĝ)_P: Hessian of the mean tempered loss times its mean gradient, both over *all*
        trainable parameters, restricted to the prunable ones (:func:`fts_core.scoring.curvature.grasp_hg`)."""
        return self._cached(("hg", float(temperature)), lambda: grasp_hg(
            self.model, self.params, self.batches, temperature=temperature, quiet=self.quiet))[1]

    def hutchinson(self, probes: int = 10, temperature: float = 200.0) -> dict[str, Tensor]:
        """Hutchinson diagonal Ĥ (``probes`` Rademacher probes per batch, seeded by ``seed``)."""
        return self._cached(("hutch", int(probes), float(temperature)), lambda: hutchinson_diag(
            self.model, self.params, self.batches, probes=probes, temperature=temperature, seed=self.seed,
            quiet=self.quiet))
