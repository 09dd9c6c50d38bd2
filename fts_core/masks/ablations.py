"""Sanity ablations of Frankle et al. (ICLR 2021, "Pruning neural networks at initialization:
why are we missing the mark?"), each one call.

- ``shuffle_masks``: permute each layer's mask (keeps the per-layer kept fractions, destroys
  which weights are kept). If accuracy survives, only the layer-wise densities mattered.
- ``reinit_kept``: re-draw the kept weights from each layer's default initialisation
  (pruned weights stay zero; biases and other dense parameters are untouched).
- ``invert_scores``: negate scores, so ``make_masks`` keeps the lowest-scored weights.
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import Tensor, nn

from fts_core.masks.prunable import owner
from fts_core.setup.seeding import make_generator, seed_torch

__all__ = ["shuffle_masks", "reinit_kept", "invert_scores"]


def shuffle_masks(masks: Mapping[str, Tensor], seed: int = 0) -> dict[str, Tensor]:
    """Each layer's mask randomly permuted within the layer (same kept count per layer).

    Deterministic from ``seed`` (one CPU generator walked in dict order); the result is on the
    masks' devices, shaped like them."""
    if not isinstance(masks, Mapping) or len(masks) == 0:
        raise ValueError("masks must be a non-empty dict name -> BoolTensor")
    gen = make_generator(int(seed))
    out = {}
    for name, m in masks.items():
        if not isinstance(m, Tensor) or m.dtype != torch.bool:
            raise ValueError(f"mask {name!r} must be a bool tensor, got {getattr(m, 'dtype', type(m).__name__)}")
        perm = torch.randperm(m.numel(), generator=gen).to(m.device)
        out[name] = m.reshape(-1)[perm].view(m.shape)
    return out


@torch.no_grad()
def reinit_kept(model: nn.Module, masks: Mapping[str, Tensor], seed: int = 0) -> nn.Module:
    """Re-initialise the kept weights of ``model`` in place with each layer's default init.

    For every masked parameter, a CPU copy of its module is ``reset_parameters()``-ed under
    ``seed_torch(seed + i)`` (``i`` = position in ``masks``; the global RNG is
    restored), and the fresh values are copied into the kept entries; pruned entries are set
    to 0. Modules without ``reset_parameters`` raise ValueError. Returns ``model``."""
    if not isinstance(masks, Mapping) or len(masks) == 0:
        raise ValueError("masks must be a non-empty dict name -> BoolTensor")
    params = dict(model.named_parameters())
    for i, (name, m) in enumerate(masks.items()):
        if name not in params:
            raise ValueError(f"mask {name!r} names no parameter of {type(model).__name__}")
        p = params[name]
        if m.shape != p.shape or m.dtype != torch.bool:
            raise ValueError(f"mask {name!r}: need a bool tensor of shape {tuple(p.shape)}, "
                             f"got {m.dtype} {tuple(m.shape)}")
        module, leaf = owner(model, name)
        if not hasattr(module, "reset_parameters"):
            raise ValueError(f"cannot re-initialise {name!r}: {type(module).__name__} has no reset_parameters()")
        fresh_module = copy.deepcopy(module).to("cpu")
        with torch.random.fork_rng(devices=[]):
            seed_torch(int(seed) + i)
            fresh_module.reset_parameters()
        fresh = getattr(fresh_module, leaf).detach().to(device=p.device, dtype=p.dtype)
        p.copy_(torch.where(m.to(p.device), fresh, torch.zeros((), dtype=p.dtype, device=p.device)))
    return model


def invert_scores(scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{name: -score}``: with ``make_masks`` this keeps the lowest-scored weights."""
    if not isinstance(scores, Mapping) or len(scores) == 0:
        raise ValueError("scores must be a non-empty dict name -> tensor")
    return {n: -s for n, s in scores.items()}
