"""Scores -> keep-masks: how many weights are kept, which ones, and the authors' rule.

:func:`make_masks` (``rounding="nearest"``) keeps exactly ``k = round((1 - s) * n)`` of the ``n``
prunable weights in the scope (all of them for ``scope="global"``, one tensor for ``scope="layer"``;
:func:`num_kept`: ``(1 - s) * n`` in float64, Python's round-half-to-even). It ranks by a *stable*
descending sort of the flattened scores concatenated in dict order, so among equal scores the earlier
layer, then the lower flat index, is kept: masks are a pure function of the scores on every device.
Non-finite scores are refused. ``rounding="authors"`` is the mask function of the authors' code: keep
``max(floor((1 - s) * n), 1)`` by ``torch.topk`` over the concatenated scores in their dtype, NaN
above every number, ties in a device-dependent order; only it accepts NaN (``book/guide.md``). Every
global top-k of the package is :func:`top_k_mask` or :func:`make_masks`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

__all__ = ["ROUNDINGS", "SCOPES", "check_sparsity", "num_kept", "make_masks", "top_k_mask", "authors_top_k_mask", "split_like"]

ROUNDINGS = ("nearest", "authors")
SCOPES = ("global", "layer")


def check_sparsity(sparsity: Any, name: str = "sparsity", *, below_one: bool = False) -> float:
    """``sparsity`` (the pruned fraction) as a float in [0, 1], or [0, 1) with ``below_one``
    (a network that must keep a weight: a run, a spectrum); ``ValueError`` naming ``name``."""
    high = ")" if below_one else "]"
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={sparsity!r}: must be a number in [0, 1{high}") from None
    if isinstance(sparsity, bool) or not (0.0 <= s <= 1.0) or (below_one and s == 1.0):  # also rejects NaN
        raise ValueError(f"{name}={sparsity!r}: must be in [0, 1{high}")
    return s


def num_kept(n: int, sparsity: float, rounding: str = "nearest") -> int:
    """Number of weights kept out of ``n`` at ``sparsity`` (see the module docstring)."""
    s = check_sparsity(sparsity)
    if rounding == "nearest":
        k = round((1.0 - s) * n)  # float64, round half to even
    elif rounding == "authors":
        k = max(math.floor((1.0 - s) * n), 1)
    else:
        raise ValueError(f"unknown rounding {rounding!r}; allowed: {ROUNDINGS}")
    return int(min(max(k, 0), n))


def _check_scores(scores: Mapping[str, Tensor], finite: bool = True) -> None:
    if not isinstance(scores, Mapping) or len(scores) == 0:
        raise ValueError("scores must be a non-empty dict name -> tensor, got "
                         f"{type(scores).__name__} of length {len(scores) if hasattr(scores, '__len__') else '?'}")
    for name, s in scores.items():
        if not isinstance(s, Tensor):
            raise ValueError(f"score of layer {name!r} is a {type(s).__name__}, not a tensor")
        if s.numel() == 0:
            raise ValueError(f"score of layer {name!r} is empty (shape {tuple(s.shape)})")
        if s.is_complex() or s.dtype == torch.bool:
            raise ValueError(f"score of layer {name!r} has dtype {s.dtype}; need a real dtype")
        ok = torch.isfinite(s)
        if finite and not bool(ok.all()):
            bad = (~ok).sum().item()
            kinds = sorted({"nan" if bool(torch.isnan(s).any()) else "", "inf" if bool(torch.isinf(s).any()) else ""} - {""})
            raise ValueError(f"score of layer {name!r} has {bad} non-finite value(s) ({'/'.join(kinds)}); only "
                             "rounding='authors' ranks them (NaN first, as the authors' torch.topk did)")


def top_k_mask(flat: Tensor, k: int) -> Tensor:
    """Bool mask of the k largest entries of a 1-D tensor; ties -> lower index kept."""
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k >= flat.numel():
        mask.fill_(True)
    elif k > 0:
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:k]] = True
    return mask


def make_masks(
    scores: Mapping[str, Tensor],
    sparsity: float,
    scope: str = "global",
    *,
    rounding: str = "nearest",
) -> dict[str, Tensor]:
    """Keep-masks from scores (higher = keep).

    scores: ``{name: tensor}``, any real dtype/shape; sparsity in [0, 1] (pruned fraction).
    scope: ``"global"`` ranks all weights together and keeps ``round((1-s)·n_total)``;
    ``"layer"`` keeps ``round((1-s)·n_l)`` in every tensor. rounding: ``"nearest"`` (exact
    count, stable ties) or ``"authors"`` (the authors' ``torch.topk`` rule, NaN kept first; see
    the module docstring). Returns ``{name: BoolTensor}`` shaped and placed like the scores.
    Non-finite scores raise ValueError naming the layer, except under ``rounding="authors"``.
    """
    s = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; allowed: {SCOPES}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; allowed: {ROUNDINGS}")
    _check_scores(scores, finite=rounding != "authors")
    select = top_k_mask if rounding == "nearest" else authors_top_k_mask
    if scope == "layer":
        return {n: select(_flat(t, rounding), num_kept(t.numel(), s, rounding)).view(t.shape)
                for n, t in scores.items()}
    device = next(iter(scores.values())).device
    flat = torch.cat([_flat(t, rounding).to(device) for t in scores.values()])
    keep = select(flat, num_kept(flat.numel(), s, rounding))
    return split_like(keep, scores)


def _flat(t: Tensor, rounding: str) -> Tensor:
    """Scores as a 1-D tensor: float64 for our rule, the scores' own dtype for the authors'."""
    flat = t.detach().reshape(-1)
    return flat.double() if rounding == "nearest" else flat


def authors_top_k_mask(flat: Tensor, k: int) -> Tensor:
    """The authors' selection: ``torch.topk(flat, k, sorted=False)`` (NaN counts as largest)."""
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[torch.topk(flat, k, largest=True, sorted=False).indices] = True
    return mask


def split_like(flat: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Cut a 1-D tensor (the concatenation of ``like``'s flattened tensors, in dict order) back
    into tensors shaped and placed like ``like``'s."""
    out, start = {}, 0
    for n, t in like.items():
        out[n] = flat[start:start + t.numel()].view(t.shape).to(t.device)
        start += t.numel()
    return out

