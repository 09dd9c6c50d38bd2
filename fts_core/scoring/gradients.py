"""What every gradient pass of the scorers shares: the summed loss, gradient flags, and a mean
over the scoring batches."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["Batches", "cross_entropy_sum", "requires_grad", "zeros_for_none", "mean_over_batches",
           "batched_mean_grad"]

#: scoring data: ``[(x (B, ...), y (B,))]`` on the model's device
Batches = Sequence[tuple[Tensor, Tensor]]


def cross_entropy_sum(out: Tensor, y: Tensor, temperature: float = 1.0) -> Tensor:
    """Summed cross-entropy of logits/T (per-sample losses add up, so gradients are per-sample sums)."""
    if temperature != 1.0:
        out = out / temperature
    return F.cross_entropy(out, y, reduction="sum")


@contextlib.contextmanager
def requires_grad(params: Sequence[Tensor]) -> Iterator[None]:
    """Set ``requires_grad=True`` on ``params`` inside the block; restore each flag afterwards."""
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def zeros_for_none(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> list[Tensor]:
    """``grads`` with every ``None`` (a parameter the output does not depend on) as zeros like it."""
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def mean_over_batches(params: dict[str, Tensor], batches: Batches,
                      batch_sum: Callable[[Tensor, Tensor, list[Tensor]], Sequence[Tensor | None]], *,
                      quiet: bool = True, desc: str = "") -> dict[str, Tensor]:
    """(1/N) Σ over ``batches`` of ``batch_sum(x, y, plist)``: a per-batch *sum* over its samples
    of one tensor per parameter (None = zeros), with ``requires_grad`` on ``params`` only and a
    tqdm bar over the N samples (``desc``) unless ``quiet``. Accumulates on the device."""
    names = list(params)
    plist = [params[n] for n in names]
    acc = [torch.zeros_like(p) for p in plist]
    total = 0
    with requires_grad(plist), tqdm(total=sum(int(x.shape[0]) for x, _ in batches), disable=quiet,
                                    desc=desc, unit="sample") as bar:
        for x, y in batches:
            torch._foreach_add_(acc, zeros_for_none(batch_sum(x, y, plist), plist))
            total += int(x.shape[0])
            bar.update(int(x.shape[0]))
    if total == 0:
        raise ValueError("scoring data is empty")
    torch._foreach_div_(acc, float(total))
    return dict(zip(names, acc))


def batched_mean_grad(model: nn.Module, params: dict[str, Tensor], batches: Batches, *,
                      temperature: float = 1.0, quiet: bool = True, desc: str = "mean gradient") -> dict[str, Tensor]:
    """ĝ = (1/N) Σ_n ∇ℓ_n from ordinary batched backward passes (no per-sample statistics)."""
    def batch_sum(x: Tensor, y: Tensor, plist: list[Tensor]) -> Sequence[Tensor | None]:
        return torch.autograd.grad(cross_entropy_sum(model(x), y, temperature), plist, allow_unused=True)

    return mean_over_batches(params, batches, batch_sum, quiet=quiet, desc=desc)
