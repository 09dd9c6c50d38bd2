"""Splits of uint8 images on the training device, and a batched on-device loader.

A :class:`Split` holds raw pixels ``x`` uint8 ``(N, C, H, W)`` and labels ``y`` int64 ``(N,)``,
stored once on the device. ``bundle.loader(split, batch_size)`` returns a :class:`TensorLoader`
that shuffles, augments (random crop with 4 zero pixels of padding, horizontal flip where valid)
and normalises whole batches with tensor ops on that device: no per-image Python work and no
host<->device copies of images during an epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from fts_core.setup.seeding import check_seed, make_generator

__all__ = ["Split", "DataBundle", "TensorLoader", "crop_flip"]


@dataclass(frozen=True)
class Split:
    """One split: ``x`` uint8 raw pixels ``(N, C, H, W)``, ``y`` int64 labels ``(N,)``, same device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, x={tuple(self.x.shape)} {self.x.dtype}, device={self.x.device})"


@dataclass(frozen=True)
class DataBundle:
    """A dataset ready for training: three splits on one device plus normalisation statistics.

    ``mean`` / ``std``: per channel, in units of pixel / 255. ``hflip``: whether training
    augmentation flips images (False for digits, whose mirror images are not digits).
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Split
    val: Split
    test: Split
    hflip: bool = True

    def loader(self, split: str, batch_size: int, *, shuffle: bool | None = None, augment: bool | None = None,
               seed: int = 0, epoch: int = 0, drop_last: bool = False) -> "TensorLoader":
        """A :class:`TensorLoader` over ``split`` ("train", "val" or "test").

        Defaults: shuffle and augment for "train", neither for "val" / "test".
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; choose 'train', 'val' or 'test'")
        is_train = split == "train"
        return TensorLoader(getattr(self, split), batch_size, self.mean, self.std,
                            shuffle=is_train if shuffle is None else shuffle,
                            augment=is_train if augment is None else augment,
                            hflip=self.hflip, seed=seed, epoch=epoch, drop_last=drop_last)


class TensorLoader:
    """Batches of ``(x float32 normalised (B, C, H, W), y int64 (B,))`` on the split's device.

    Order and augmentation are drawn from a CPU ``torch.Generator`` seeded from
    ``(seed, epoch)`` (so the batches are the same on any device and after a resume); the
    draws (a permutation of N, then per position a crop offset in [0, 2*pad] for y and x and
    a flip bit) are moved to the device once per epoch. Iterating twice without
    :meth:`set_epoch` yields identical batches. Augmentation: zero-pad ``pad`` raw pixels
    (value 0 before normalisation), crop back to (H, W) at the drawn offset, mirror
    horizontally when drawn (and ``hflip``). Normalisation: ``(x / 255 - mean) / std``.

    ``len(loader)`` is the number of batches; ``num_samples`` the number of images in the
    split (``N``; with ``drop_last`` an epoch yields ``len(loader) * batch_size`` of them).
    """

    def __init__(self, split: Split, batch_size: int, mean: tuple[float, ...], std: tuple[float, ...], *,
                 shuffle: bool = False, augment: bool = False, hflip: bool = True, pad: int = 4,
                 seed: int = 0, epoch: int = 0, drop_last: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be an integer > 0, got {batch_size!r}")
        batch_size = int(batch_size)
        if split.x.dtype != torch.uint8 or split.x.dim() != 4:
            raise ValueError(f"split.x must be uint8 (N, C, H, W), got {split.x.dtype} {tuple(split.x.shape)}")
        channels = split.x.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {mean!r} / {std!r}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad!r}")
        self.split, self.batch_size = split, batch_size
        self.shuffle, self.augment, self.hflip, self.pad = shuffle, augment, hflip, pad
        self.drop_last = drop_last
        self.seed = check_seed(seed)
        self.epoch = 0
        self.set_epoch(epoch)
        device = split.x.device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    @property
    def num_samples(self) -> int:
        return len(self.split)

    @property
    def device(self) -> torch.device:
        return self.split.x.device

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, device = self.num_samples, self.device
        gen = make_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=gen).to(device) if self.shuffle else None
        if self.augment:
            offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=gen).to(device)
            flips = (torch.rand(n, generator=gen) < (0.5 if self.hflip else 0.0)).to(device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = min(start + self.batch_size, n)
            if order is None:
                x, y = self.split.x[start:stop], self.split.y[start:stop]
            else:
                idx = order[start:stop]
                x, y = self.split.x[idx], self.split.y[idx]
            if self.augment:
                x = crop_flip(x, offsets[start:stop], flips[start:stop], self.pad)
            yield x.float().div_(255).sub_(self.mean).div_(self.std), y


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Batched random crop with zero padding, and horizontal flip, as one gather.

    Args:
        x: ``(B, C, H, W)`` images (any dtype).
        offsets: int ``(B, 2)`` top-left corner (row, column) of the crop in the padded image,
            each in ``[0, 2 * pad]``; ``(pad, pad)`` is the identity crop.
        flips: bool ``(B,)``, mirror the crop left-right where True.
    Returns:
        ``(B, C, H, W)``: ``out[b, :, i, j] = padded[b, :, oy + i, ox + j']`` with
        ``j' = W - 1 - j`` if flipped else ``j``.
    """
    b, c, h, w = x.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = F.pad(x, (pad, pad, pad, pad)).reshape(b, c, hp * wp)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + offsets[:, 1:]  # (B, W)
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.gather(2, index).reshape(b, c, h, w)
