"""The scoring sample: batches materialised once, an optional seeded subset, moved to the model.

``score()`` reads its data through these functions, so every pass of a criterion sees the same
(e.g. augmented) samples, and only the chosen samples ever reach the model's device.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fts_core.setup.seeding import make_generator

__all__ = ["collect", "select", "to_device"]


def collect(data: Any, limit: int | None = None) -> list[tuple[Tensor, Tensor]]:
    """The ``(x, y)`` batches of ``data`` as tensors, where they are (not moved or cast yet)."""
    if data is None:
        return []
    out = []
    try:
        iterator = iter(data)
    except TypeError:
        raise ValueError(f"data must be an iterable of (inputs, targets) batches, got {type(data).__name__}") from None
    for i, batch in enumerate(iterator):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"batch {i} of data is not an (inputs, targets) pair: {type(batch).__name__}")
        x, y = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
        if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool or y.shape[0] != x.shape[0]:
            raise ValueError(f"batch {i}: targets must be integer class labels of shape ({x.shape[0]},), "
                             f"got dtype {y.dtype} shape {tuple(y.shape)}")
        if x.shape[0] > 0:
            out.append((x, y))
        if limit is not None and len(out) >= limit:
            break
    return out


def to_device(batches: list[tuple[Tensor, Tensor]], device: torch.device,
               dtype: torch.dtype) -> list[tuple[Tensor, Tensor]]:
    """Batches on ``device``: float inputs cast to the model's ``dtype``, labels int64 (no copy
    when already so)."""
    out = []
    for x, y in batches:
        x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device=device)
        out.append((x, y.to(device=device, dtype=torch.long)))
    return out


def select(batches: list[tuple[Tensor, Tensor]], num_samples: int | None, per_class: int | None,
            seed: int, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    """Reproducible subset: ``per_class`` samples of every class or ``num_samples`` in all.

    Indices come from ``torch.randperm`` on a CPU generator seeded by ``seed`` (over the whole
    data, or within each class), sorted back into data order; the chosen rows are gathered batch
    by batch (the inputs are never concatenated as a whole, so no second full copy of the data
    exists) and re-batched at ``batch_size``. The arguments were checked by
    :func:`fts_core.scoring.score.check_scoring`.
    """
    if num_samples is None and per_class is None:
        return batches
    sizes = [int(b[0].shape[0]) for b in batches]
    n = sum(sizes)
    gen = make_generator(int(seed))
    if per_class is not None:
        y_cpu = torch.cat([b[1].reshape(-1).cpu() for b in batches])  # labels only (small)
        picks = []
        for c in torch.unique(y_cpu).tolist():
            idx = torch.nonzero(y_cpu == c).flatten()
            picks.append(idx[torch.randperm(idx.numel(), generator=gen)[:per_class]])
        chosen = torch.cat(picks)
    else:
        chosen = torch.randperm(n, generator=gen)[:num_samples]
    chosen = torch.sort(chosen).values
    xs, ys, start = [], [], 0
    for (x, y), size in zip(batches, sizes):
        lo, hi = torch.searchsorted(chosen, torch.tensor([start, start + size])).tolist()
        if hi > lo:
            local = chosen[lo:hi] - start
            xs.append(x[local.to(x.device)])
            ys.append(y[local.to(y.device)])
        start += size
    x_sel, y_sel = torch.cat(xs), torch.cat(ys)
    del xs, ys
    return [(x_sel[i:i + batch_size], y_sel[i:i + batch_size]) for i in range(0, x_sel.shape[0], batch_size)]
