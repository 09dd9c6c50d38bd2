"""Hessian-vector products (double backprop) for GraSP and the Hutchinson Hessian diagonal.

Everything refers to the mean scoring loss over N samples at logit temperature T::

    L_T(θ) = (1/N) Σ_n ℓ(f(x_n; θ)/T, y_n)        Hv = ∇_θ (∇_θ L_T · v)

:func:`grasp_hg` returns ``(ĝ_P, (Hĝ)_P)``, ĝ and Hĝ taken over every trainable parameter
(:func:`trainable_parameters`, or ``wrt``) and only then restricted to the prunable ones P;
:func:`hutchinson_diag` estimates diag(H)_P with Rademacher probes over P only. Batches are
processed one at a time (H = Σ_b H_b: exact when samples do not interact, i.e. BatchNorm in eval
mode). :func:`second_order` runs attention on the math kernel and names an operation that has no
second derivative (``ValueError``). Why GraSP keeps the cross terms: ``book/guide.md``, "The criteria".
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from fts_core.scoring.gradients import (
    Batches,
    batched_mean_grad,
    cross_entropy_sum,
    mean_over_batches,
    requires_grad,
    zeros_for_none,
)

__all__ = ["hessian_vector_product", "grasp_hg", "hutchinson_diag", "rademacher_like", "trainable_parameters",
           "second_order"]

_NO_DOUBLE_BACKWARD = re.compile(r"derivative for (\S+) is not implemented")


@contextlib.contextmanager
def second_order(what: str) -> Iterator[None]:
    """Where ``what`` (e.g. "GraSP") differentiates twice: attention on the math kernel, and an
    operation without a second derivative reported by name (``ValueError``), not as torch's error."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    except (RuntimeError, NotImplementedError) as err:
        found = _NO_DOUBLE_BACKWARD.search(str(err))
        if found is None:
            raise
        op = found.group(1).rstrip(".")
        raise ValueError(f"{what} needs second derivatives, but torch has no derivative of {op} (the backward "
                         f"of an operation in this model, e.g. an activation such as Hardsigmoid/Hardswish); "
                         "use a first-order criterion (fts, snip, fisher_pruning, ...) or replace that "
                         "operation") from None


def _num_samples(batches: Batches) -> int:
    return sum(int(x.shape[0]) for x, _ in batches)


def trainable_parameters(model: nn.Module, params: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every parameter of ``model`` with ``requires_grad`` or in ``params`` (model order)."""
    keep = set(params)
    return {n: p for n, p in model.named_parameters() if p.requires_grad or n in keep}


def hessian_vector_product(model: nn.Module, params: dict[str, Tensor], batches: Batches,
                           vector: dict[str, Tensor], *, temperature: float = 1.0, quiet: bool = True,
                           desc: str = "Hessian-vector product") -> dict[str, Tensor]:
    """``H v`` of the mean loss w.r.t. ``params`` (the Hessian block of exactly these parameters);
    dict name -> tensor shaped like each parameter."""
    def batch_sum(x: Tensor, y: Tensor, plist: list[Tensor]) -> Sequence[Tensor | None]:
        grads = torch.autograd.grad(cross_entropy_sum(model(x), y, temperature), plist, create_graph=True,
                                    allow_unused=True)
        dot = sum((g * vector[n].detach()).sum() for n, g in zip(params, grads) if g is not None)
        return torch.autograd.grad(dot, plist, allow_unused=True)

    with second_order(desc):
        return mean_over_batches(params, batches, batch_sum, quiet=quiet, desc=desc)


def grasp_hg(model: nn.Module, params: dict[str, Tensor], batches: Batches, *, temperature: float = 1.0,
             wrt: dict[str, Tensor] | None = None, quiet: bool = True) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(ĝ_P, (H ĝ)_P)`` at logit temperature T: two passes over the data (gradient, then HVP).

    ĝ and H ĝ are computed over ``wrt`` (default :func:`trainable_parameters`: every trainable
    parameter, as Wang et al. and the authors' code) and returned for the names of ``params``."""
    wrt = trainable_parameters(model, params) if wrt is None else wrt
    missing = [n for n in params if n not in wrt]
    if missing:
        raise ValueError(f"grasp_hg: wrt lacks the prunable parameters {missing}")
    g = batched_mean_grad(model, wrt, batches, temperature=temperature, quiet=quiet, desc="grasp: gradient")
    hg = hessian_vector_product(model, wrt, batches, g, temperature=temperature, quiet=quiet,
                                desc="grasp: Hessian-gradient product")
    return {n: g[n] for n in params}, {n: hg[n] for n in params}


def rademacher_like(p: Tensor, generator: torch.Generator) -> Tensor:
    """A ±1 tensor shaped like ``p`` (same dtype/device) drawn from ``generator``."""
    z = torch.randint(0, 2, p.shape, generator=generator, device=p.device, dtype=p.dtype)
    return z.mul_(2).sub_(1)


def hutchinson_diag(model: nn.Module, params: dict[str, Tensor], batches: Batches, *,
                    probes: int = 10, temperature: float = 200.0, seed: int = 0,
                    quiet: bool = True) -> dict[str, Tensor]:
    """Hutchinson estimate of diag(H) of the mean loss: ``Σ_b (n_b/N)(1/K) Σ_k z ⊙ H_b z``.

    Like the revision's code, ``probes`` (K) fresh Rademacher probes are drawn for every
    batch (so the batch size sets the total number of probes). Probe order (reproducible
    from ``seed``, a ``torch.Generator`` on the parameters' device): for each batch, for each
    probe, one ``randint`` per parameter in ``params`` order. E[z ⊙ Hz] = diag(H) exactly,
    with variance Σ_{j≠i} H_ij² per probe.
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be an integer >= 1, got {probes!r}")
    names = list(params)
    plist = [params[n] for n in names]
    gen = torch.Generator(device=plist[0].device)
    gen.manual_seed(int(seed))
    acc = [torch.zeros_like(p) for p in plist]
    total = 0
    with requires_grad(plist), second_order("the Hutchinson Hessian diagonal"), \
            tqdm(total=_num_samples(batches), disable=quiet, desc=f"hutchinson ({probes} probes)", unit="sample") as bar:
        for x, y in batches:
            grads = torch.autograd.grad(cross_entropy_sum(model(x), y, temperature), plist, create_graph=True)
            for k in range(probes):
                zs = [rademacher_like(p, gen) for p in plist]
                dot = sum((g * z).sum() for g, z in zip(grads, zs))
                hz = torch.autograd.grad(dot, plist, retain_graph=k < probes - 1, allow_unused=True)
                torch._foreach_addcmul_(acc, zs, zeros_for_none(hz, plist))
            total += int(x.shape[0])
            bar.update(int(x.shape[0]))
    if total == 0:
        raise ValueError("scoring data is empty")
    torch._foreach_div_(acc, float(total) * probes)
    return dict(zip(names, acc))
