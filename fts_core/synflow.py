"""SynFlow (Tanaka et al. 2020): data-free, iterative pruning by synaptic flow.

One round: on a copy of the network with every parameter *and buffer* replaced by its
absolute value (BatchNorm in eval mode with |running statistics|, like Tanaka et al.'s
``linearize``) and the current mask applied, feed an all-ones input of one sample and take
``R = Σ outputs``; the score is ``|θ ⊙ ∂R/∂θ|``. Rounds r = 1..n keep the global top
``round(d^(r/n) · P)`` weights (exponential schedule, d = 1 − sparsity; ``schedule="linear"``
keeps ``round((1 − s·r/n)·P)``), never reviving a pruned weight. Counts and tie-break are
those of :func:`fts_core.masks.make_masks` (``masks.num_kept`` at the round's sparsity,
``masks._top_k_mask``).

Because SynFlow is a *procedure*, :func:`synflow_scores` needs the target sparsity. It
returns the scores of the final round (computed with the mask of round n−1) with every
weight pruned in rounds 1..n−1 set to ``-1`` (below every real score, which is ≥ 0), so
``make_masks(scores, sparsity)`` (global scope, same rounding) performs exactly the last
round and reproduces the iterative mask. Differences from Tanaka's code: ties at the
threshold are broken by index (stable sort) instead of pruning every tied weight, and the
computation is in float64 by default (``double=False`` for the model's dtype).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fts_core.masks import _top_k_mask, num_kept
from fts_core.persample import zeros_for_none

__all__ = ["synflow_scores", "SCHEDULES"]

SCHEDULES = ("exponential", "linear")


def synflow_scores(model: nn.Module, names: Sequence[str], input_shape: Sequence[int], *,
                   sparsity: float, rounds: int = 100, schedule: str = "exponential",
                   double: bool = True, quiet: bool = True) -> dict[str, Tensor]:
    """Final-round SynFlow scores for the parameters ``names`` (see the module docstring).

    input_shape: one sample's shape, e.g. ``(3, 32, 32)``. Returns float64 scores when
    ``double`` (else the model's dtype), shaped like the parameters; ``model`` is untouched.
    """
    s = float(sparsity)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"synflow needs sparsity in [0, 1], got {sparsity!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown synflow schedule {schedule!r}; allowed: {SCHEDULES}")
    net = copy.deepcopy(model)
    if double:
        net = net.double()
    net.eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    params = dict(net.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"synflow: unknown parameter names {missing}")
    for p in net.parameters():
        p.requires_grad_(False)
    plist = [params[n] for n in names]
    for p in plist:
        p.requires_grad_(True)
    originals = [p.detach().clone() for p in plist]
    masks = [torch.ones_like(p, dtype=torch.bool) for p in plist]
    first = plist[0]
    ones = torch.ones(1, *input_shape, dtype=first.dtype, device=first.device)
    total = sum(p.numel() for p in plist)
    from tqdm.auto import tqdm

    scores: list[Tensor] = []
    for r in tqdm(range(1, rounds + 1), disable=quiet, desc="synflow", unit="round"):
        with torch.no_grad():
            for p, o, m in zip(plist, originals, masks):
                p.copy_(o * m)
        grads = torch.autograd.grad(net(ones).sum(), plist, allow_unused=True)
        scores = [(p.detach() * g).abs() for p, g in zip(plist, zeros_for_none(grads, plist))]
        for sc, m in zip(scores, masks):
            sc.masked_fill_(~m, -1.0)
        if r == rounds:
            break
        density = (1.0 - s) ** (r / rounds) if schedule == "exponential" else 1.0 - s * r / rounds
        # the same rounding and tie-break as make_masks (masks.num_kept / masks._top_k_mask)
        keep = _top_k_mask(torch.cat([sc.reshape(-1) for sc in scores]), num_kept(total, 1.0 - density))
        start = 0
        for i, sc in enumerate(scores):
            masks[i] = keep[start:start + sc.numel()].view(sc.shape)
            start += sc.numel()
    return dict(zip(names, scores))
