"""``load_data(name, ...)``: a dataset as train / val / test splits on the training device.

Protocol (the paper's): the official training set is split stratified 80/20 into
train / validation with ``seed`` (the authors used 42; ``RunConfig.split_seed``), through
``sklearn.model_selection.train_test_split`` called as the authors did, so seed 42 gives
their split; the official test set is kept for testing.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from fts_core.hints import unknown_names
from fts_core.setup.datasets import DATASETS, DEFAULT_ROOT, RawData
from fts_core.setup.device import resolve_device
from fts_core.setup.loader import DataBundle, Split
from fts_core.setup.seeding import check_seed

__all__ = ["load_data", "check_available"]


def load_data(name: str, root: str | os.PathLike | None = None, subset: int | float | None = None, seed: int = 0,
              device: str | torch.device = "cpu", val_fraction: float = 0.2, download: bool | None = None,
              **options) -> DataBundle:
    """Load dataset ``name`` as train / val / test splits of uint8 images on ``device``.

    Args:
        name: a key of DATASETS.
        root: data folder; default ``$FTS_DATA`` or ``~/.cache/fts_core/data``.
        subset: quick runs: an int (number of official-training-set images, taken stratified
            before the train/val split) or a fraction in (0, 1]. The test set is then cut,
            stratified with the same ``seed``, to the same fraction; without ``subset`` it
            stays whole. Stratification needs at least one image per class on each side.
        seed: seed of the subset and of the stratified train/val split (the paper: 42).
        device: where the tensors live ("cpu", "cuda", "auto" = CUDA when available).
        val_fraction: fraction of the (subset of the) training set held out for validation, in (0, 1).
        download: None = use local files, download only if ``$FTS_DOWNLOAD=1``; True = download
            when missing; False = never download.
        **options: dataset-specific options (e.g. ``synthetic``: ``num_classes``, ``train_size``).
    """
    seed = check_seed(seed)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    device = resolve_device(device)
    raw = _read(name, root, download, options)
    pool, test = raw.train, raw.test
    if subset is not None:
        n_keep = _subset_size(subset, len(pool))
        pool = _take(pool, _stratified(pool.y, n_keep, seed))
        if n_keep < len(raw.train):
            n_test = max(1, round(len(test) * n_keep / len(raw.train)))
            test = _take(test, _stratified(test.y, n_test, seed))
    try:
        train_idx, val_idx = train_test_split(np.arange(len(pool)), test_size=val_fraction,
                                              stratify=pool.y.numpy(), random_state=seed)
    except ValueError as err:
        raise ValueError(f"cannot split {len(pool)} images of {raw.num_classes} classes stratified with "
                         f"val_fraction={val_fraction!r} (subset={subset!r}): {err}") from err
    splits = [_take(s, idx) for s, idx in ((pool, train_idx), (pool, val_idx), (test, None))]
    train, val, test = (Split(s.x.to(device), s.y.to(device)) for s in splits)
    return DataBundle(name=name, num_classes=raw.num_classes, in_channels=int(train.x.shape[1]),
                      image_size=int(train.x.shape[-1]), mean=tuple(raw.mean), std=tuple(raw.std),
                      train=train, val=val, test=test, hflip=raw.hflip)


def check_available(name: str, root: str | os.PathLike | None = None, download: bool | None = None,
                    **options) -> None:
    """Raise what :func:`load_data` would raise for missing files or a bad name (reads the files once)."""
    _read(name, root, download, options)


def _read(name: str, root: str | os.PathLike | None, download: bool | None, options: dict) -> RawData:
    """The dataset function's raw data, with ``root`` and ``download`` resolved (see :func:`load_data`)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {unknown_names([name], DATASETS)}; known datasets: "
                         f"{', '.join(sorted(DATASETS))}")
    if download is None:
        download = os.environ.get("FTS_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")
    explicit = root if root is not None else os.environ.get("FTS_DATA")
    root_path = Path(explicit if explicit is not None else DEFAULT_ROOT).expanduser()
    fn = DATASETS[name]
    raw = fn(root_path, download, **options)  # a missing file raises with the dataset's own hints
    if explicit is not None and getattr(fn, "reads_files", False) and not root_path.is_dir():
        # found elsewhere (e.g. Debian's copy of Fashion-MNIST), but not where the user pointed
        given = "root" if root is not None else "$FTS_DATA"
        raise FileNotFoundError(f"{name}: the data folder {given}={str(explicit)!r} does not exist; pass an existing "
                                f"folder, or leave root unset to use the default {DEFAULT_ROOT}")
    return raw


def _subset_size(subset: int | float, n: int) -> int:
    """Number of images that ``subset`` (count or fraction) selects from ``n``."""
    if isinstance(subset, bool) or not isinstance(subset, (int, float, np.integer, np.floating)):
        raise ValueError(f"subset must be an int count or a float fraction, got {subset!r}")
    if isinstance(subset, (float, np.floating)):
        if not 0 < subset <= 1:
            raise ValueError(f"subset fraction must be in (0, 1], got {subset!r}")
        return max(1, round(subset * n))
    if not 0 < subset <= n:
        raise ValueError(f"subset must be between 1 and the training-set size {n}, got {subset!r}")
    return int(subset)


def _stratified(y: torch.Tensor, n_keep: int, seed: int) -> np.ndarray | None:
    """Indices of ``n_keep`` labels of ``y`` drawn stratified with ``seed`` (None = keep all)."""
    if n_keep >= len(y):
        return None
    try:
        keep, _ = train_test_split(np.arange(len(y)), train_size=n_keep, stratify=y.numpy(), random_state=seed)
    except ValueError as err:
        raise ValueError(f"cannot draw a stratified subset of {n_keep} of {len(y)} images: {err}") from err
    return np.sort(keep)


def _take(split: Split, idx: np.ndarray | None) -> Split:
    if idx is None:
        return split
    idx_t = torch.as_tensor(idx, dtype=torch.long)
    return Split(split.x[idx_t], split.y[idx_t])
