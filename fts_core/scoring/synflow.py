"""SynFlow (Tanaka et al. 2020): data-free, iterative pruning by synaptic flow.

One round scores ``|θ ⊙ ∂R/∂θ|``, ``R = Σ outputs`` of a copy of the network whose parameters and
buffers are replaced by their absolute values (BatchNorm in eval mode), the current mask applied, on
an all-ones input of one sample. Round r = 1..n keeps the global top ``round(d^(r/n) · P)`` weights
(d = 1 − sparsity; ``schedule="linear"``: ``round((1 − s·r/n) · P)``; :func:`kept_per_round`), never
reviving a pruned one, with the counts and tie-break of :func:`fts_core.masks.make_masks`.
:func:`synflow_scores` needs the target ``sparsity`` and returns the final round's scores with every
weight pruned in rounds 1..n−1 set to ``-1`` (real scores are ≥ 0), so ``make_masks(scores, sparsity)``
(global scope) performs the last round and reproduces the iterative mask. ``convention="authors"``:
the 2026 revision's schedule, round r keeping ``max(floor((1 − s^(r/n)) · P), 1)``, scores unmarked,
for ``rounding="authors"``. Both conventions and how they differ from Tanaka's code: ``book/guide.md``.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tqdm.auto import tqdm

from fts_core.masks.select import authors_top_k_mask, check_sparsity, num_kept, split_like, top_k_mask
from fts_core.scoring.gradients import zeros_for_none

__all__ = ["synflow_scores", "SCHEDULES", "CONVENTIONS", "kept_per_round"]

SCHEDULES = ("exponential", "linear")
CONVENTIONS = ("ours", "authors")


def kept_per_round(total: int, sparsity: float, rounds: int, schedule: str = "exponential",
                   convention: str = "ours") -> list[int]:
    """Weights kept after each of rounds 1..n out of ``total`` (see the module docstring)."""
    out = []
    for r in range(1, rounds + 1):
        if convention == "authors":
            pruned = sparsity ** (r / rounds) if schedule == "exponential" else 1.0 - (1.0 - sparsity) * r / rounds
            out.append(num_kept(total, pruned, "authors"))
        else:
            density = (1.0 - sparsity) ** (r / rounds) if schedule == "exponential" else 1.0 - sparsity * r / rounds
            out.append(num_kept(total, 1.0 - density))
    return out


def synflow_scores(model: nn.Module, names: Sequence[str], input_shape: Sequence[int], *,
                   sparsity: float, rounds: int = 100, schedule: str = "exponential",
                   double: bool = True, convention: str = "ours", quiet: bool = True,
                   history: list | None = None) -> dict[str, Tensor]:
    """Final-round SynFlow scores for the parameters ``names`` (see the module docstring).

    input_shape: one sample's shape, e.g. ``(3, 32, 32)``. Returns float64 scores when
    ``double`` (else the model's dtype; ``convention="authors"`` always uses the model's dtype),
    shaped like the parameters; ``model`` is untouched. ``history``, a list, receives one
    ``{"round", "nonzero_scores", "kept"}`` per round (``kept``: the weights still non-zero
    after that round's mask; the last round's is left to ``make_masks``).
    """
    s = check_sparsity(sparsity)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown synflow schedule {schedule!r}; allowed: {SCHEDULES}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown synflow convention {convention!r}; allowed: {CONVENTIONS}")
    authors = convention == "authors"
    net = copy.deepcopy(model)
    if double and not authors:
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

    scores: list[Tensor] = []
    counts = kept_per_round(total, s, rounds, schedule, convention)
    for r in tqdm(range(1, rounds + 1), disable=quiet, desc="synflow", unit="round"):
        with torch.no_grad():
            for p, o, m in zip(plist, originals, masks):
                p.copy_(o * m)
        grads = torch.autograd.grad(net(ones).sum(), plist, allow_unused=True)
        scores = [(p.detach() * g).abs() for p, g in zip(plist, zeros_for_none(grads, plist))]
        if not authors:
            for sc, m in zip(scores, masks):
                sc.masked_fill_(~m, -1.0)  # never revived: below every real score
        if history is not None:
            history.append({"round": r, "nonzero_scores": int(sum(int((sc > 0).sum()) for sc in scores)),
                            "kept": counts[r - 1] if r < rounds else None})
        if r == rounds:
            break
        flat = torch.cat([sc.reshape(-1) for sc in scores])
        # ours: the rounding and tie-break of make_masks; the authors': their torch.topk
        keep = (authors_top_k_mask if authors else top_k_mask)(flat, counts[r - 1])
        chosen = split_like(keep, dict(zip(names, scores)))
        # the authors multiply the weights by each round's mask; ours never revives a weight
        masks = [m & chosen[n] if authors else chosen[n] for n, m in zip(names, masks)]
        if history is not None:
            history[-1]["kept"] = int(sum(int(m.sum()) for m in masks))
    return dict(zip(names, scores))
