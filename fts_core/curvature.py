"""Hessian-vector products (double backprop) for GraSP and the Hutchinson Hessian diagonal.

All quantities refer to the mean scoring loss over N samples and the prunable parameters
θ_P only (the Hessian block H_PP; other parameters are held fixed)::

    L_T(θ) = (1/N) Σ_n ℓ(f(x_n; θ)/T, y_n)        (cross-entropy, logit temperature T)
    Hv     = ∇_θP (∇_θP L_T · v)

Batches are processed one at a time (``H = Σ_b H_b``, exact for a model whose samples do not
interact, i.e. BatchNorm in eval mode), so memory is one batch's double-backward graph.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fts_core.persample import _loss, batched_mean_grad

__all__ = ["hessian_vector_product", "grasp_hg", "hutchinson_diag", "rademacher_like"]

Batches = Sequence[tuple[Tensor, Tensor]]


def _enable_grad(plist):
    flags = [p.requires_grad for p in plist]
    for p in plist:
        p.requires_grad_(True)
    return flags


def hessian_vector_product(model: nn.Module, params: dict[str, Tensor], batches: Batches,
                           vector: dict[str, Tensor], *, temperature: float = 1.0) -> dict[str, Tensor]:
    """``H v`` of the mean loss (dict name -> tensor shaped like each parameter)."""
    names = list(params)
    plist = [params[n] for n in names]
    vlist = [vector[n].detach() for n in names]
    acc = [torch.zeros_like(p) for p in plist]
    total = 0
    flags = _enable_grad(plist)
    try:
        for x, y in batches:
            grads = torch.autograd.grad(_loss(model(x), y, temperature), plist, create_graph=True)
            dot = sum((g * v).sum() for g, v in zip(grads, vlist))
            hv = torch.autograd.grad(dot, plist, allow_unused=True)
            torch._foreach_add_(acc, [torch.zeros_like(p) if h is None else h for h, p in zip(hv, plist)])
            total += int(x.shape[0])
    finally:
        for p, f in zip(plist, flags):
            p.requires_grad_(f)
    if total == 0:
        raise ValueError("scoring data is empty")
    torch._foreach_div_(acc, float(total))
    return dict(zip(names, acc))


def grasp_hg(model: nn.Module, params: dict[str, Tensor], batches: Batches, *,
             temperature: float = 1.0) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(ĝ, H ĝ)`` at logit temperature T: two passes over the data (gradient, then HVP)."""
    g = batched_mean_grad(model, params, batches, temperature=temperature)
    return g, hessian_vector_product(model, params, batches, g, temperature=temperature)


def rademacher_like(p: Tensor, generator: torch.Generator) -> Tensor:
    """A ±1 tensor shaped like ``p`` (same dtype/device) drawn from ``generator``."""
    z = torch.randint(0, 2, p.shape, generator=generator, device=p.device, dtype=p.dtype)
    return z.mul_(2).sub_(1)


def hutchinson_diag(model: nn.Module, params: dict[str, Tensor], batches: Batches, *,
                    probes: int = 10, temperature: float = 200.0, seed: int = 0) -> dict[str, Tensor]:
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
    flags = _enable_grad(plist)
    try:
        for x, y in batches:
            grads = torch.autograd.grad(_loss(model(x), y, temperature), plist, create_graph=True)
            for k in range(probes):
                zs = [rademacher_like(p, gen) for p in plist]
                dot = sum((g * z).sum() for g, z in zip(grads, zs))
                hz = torch.autograd.grad(dot, plist, retain_graph=k < probes - 1, allow_unused=True)
                hz = [torch.zeros_like(p) if h is None else h for h, p in zip(hz, plist)]
                torch._foreach_addcmul_(acc, zs, hz)
            total += int(x.shape[0])
    finally:
        for p, f in zip(plist, flags):
            p.requires_grad_(f)
    if total == 0:
        raise ValueError("scoring data is empty")
    torch._foreach_div_(acc, float(total) * probes)
    return dict(zip(names, acc))
