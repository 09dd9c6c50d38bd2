"""Seeding: every seeded draw from one integer seed, in one of two ways.

- **model initialisation**: PyTorch's layer initialisers draw from torch's *global* RNG, so a
  model is built right after :func:`seed_torch` (``torch.manual_seed``: the CPU and every CUDA
  device), which is how :func:`fts_core.run` and the chapters draw a network's initial weights;
- **everything else** (data order and augmentation, scoring subsets, random scores): a private
  generator from :func:`make_generator`, seeded from ``(seed, *keys)``, so that no draw moves
  the global RNG or another stream.

``make_generator(seed)`` is ``torch.Generator().manual_seed(seed)``; the training loader draws
epoch ``e``'s order and augmentation from ``make_generator(seed, e)``.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_seed", "seed_torch", "stream_seed", "make_generator"]


def check_seed(seed: int) -> int:
    """``seed`` as an int >= 0 (``ValueError`` naming it otherwise)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def seed_torch(seed: int) -> torch.Generator:
    """Seed torch's global RNG (CPU and every CUDA device) with ``seed`` before drawing a model's
    initial weights; the same as ``torch.manual_seed(seed)``. Returns the global CPU generator.
    ``ValueError`` naming ``seed`` unless it is an integer >= 0."""
    return torch.manual_seed(check_seed(seed))


def stream_seed(seed: int, *keys: int) -> int:
    """The seed of the stream ``(seed, *keys)``: ``seed`` itself without keys, else a well-mixed
    63-bit seed from numpy's ``SeedSequence`` (nearby pairs give unrelated streams).
    ``ValueError`` naming the value unless ``seed`` and every key are integers >= 0."""
    seed = check_seed(seed)
    if not keys:
        return seed
    bad = [k for k in keys if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0]
    if bad:
        raise ValueError(f"seed keys must be integers >= 0, got {bad[0]!r}")
    state = np.random.SeedSequence([seed, *(int(k) for k in keys)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def make_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A private ``torch.Generator`` on ``device`` seeded with :func:`stream_seed` ``(seed, *keys)``,
    for draws that must not touch the global RNG (e.g. ``keys=(epoch,)`` for a data order).
    Same errors as :func:`stream_seed`."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, *keys))
