"""The scoring sample: batches materialised once, an optional seeded subset, moved to the model.

``score()`` reads its data through these functions, so every pass of a criterion sees the same
(e.g. augmented) samples, and only the chosen samples ever reach the model's device.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["collect", "select", "to_device", "label_range"]


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


def label_range(batches: list[tuple[Tensor, Tensor]]) -> tuple[int, int]:
    """(min, max) label over all batches, where the labels are: one concatenation, one
    ``aminmax``, one host sync (no per-batch ``.item()``)."""
    where = batches[0][1].device
    y = torch.cat([b[1].to(device=where, dtype=torch.long) for b in batches])
    lo, hi = torch.aminmax(y)
    ymin, ymax = torch.stack([lo, hi]).tolist()
    return int(ymin), int(ymax)


def select(batches: list[tuple[Tensor, Tensor]], num_samples: int | None, per_class: int | None,
            seed: int, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    """Reproducible subset: ``per_class`` samples of every class or ``num_samples`` in all.

    Indices come from ``torch.randperm`` on a CPU generator seeded by ``seed`` (over the whole
    data, or within each class), sorted back into data order; the chosen rows are gathered batch
    by batch (the inputs are never concatenated as a whole, so no second full copy of the data
    exists) and re-batched at ``batch_size``.
    """
    if num_samples is None and per_class is None:
        return batches
    if num_samples is not None and per_class is not None:
        raise ValueError("give num_samples or per_class, not both")
    sizes = [int(b[0].shape[0]) for b in batches]
    n = sum(sizes)
    gen = torch.Generator().manual_seed(int(seed))
    if per_class is not None:
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise ValueError(f"per_class must be an integer >= 1, got {per_class!r}")
        y_cpu = torch.cat([b[1].reshape(-1).cpu() for b in batches])  # labels only (small)
        picks = []
        for c in torch.unique(y_cpu).tolist():
            idx = torch.nonzero(y_cpu == c).flatten()
            if idx.numel() < per_class:
                raise ValueError(f"per_class={per_class} but class {c} has only {idx.numel()} samples")
            picks.append(idx[torch.randperm(idx.numel(), generator=gen)[:per_class]])
        chosen = torch.cat(picks)
    else:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= n:
            raise ValueError(f"num_samples must be an integer in [1, {n}] (the data size), got {num_samples!r}")
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
