"""Small fake CIFAR-10 / CIFAR-100 files in the real python (pickle) layout, for tests.

The files go where torchvision looks for them (``<root>/cifar-10-batches-py/`` or
``<root>/cifar-100-python/``) and are pickled like the originals (dicts with ``data``
uint8 (N, 3072) in CHW order, ``labels`` / ``fine_labels`` + ``coarse_labels``).
Their md5 sums differ from the real ones, so tests bypass torchvision's integrity check
with :func:`bypass_cifar_md5` (only the check; the real loader reads the files).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _batch(rng: np.random.Generator, n: int, num_classes: int) -> tuple[np.ndarray, list[int]]:
    """``n`` random images (N, 3072) uint8 with balanced labels in random order."""
    labels = rng.permutation(np.arange(n) % num_classes).tolist()
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8), labels


def write_fake_cifar(root: str | os.PathLike, name: str = "cifar10", per_batch: int = 40, test_size: int = 40,
                     seed: int = 0) -> Path:
    """Write fake ``name`` files under ``root``; return the dataset folder.

    CIFAR-10: five training batches of ``per_batch`` images plus ``test_batch``;
    CIFAR-100: ``train`` with ``5 * per_batch`` images plus ``test``. Labels are balanced.
    """
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder = Path(root) / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, 6):
            data, labels = _batch(rng, per_batch, 10)
            _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": labels,
                                                "data": data, "filenames": [f"img{j}.png" for j in range(per_batch)]})
        data, labels = _batch(rng, test_size, 10)
        _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels, "data": data,
                                      "filenames": [f"img{j}.png" for j in range(test_size)]})
        _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                        "num_cases_per_batch": per_batch, "num_vis": 3072})
    elif name == "cifar100":
        folder = Path(root) / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for part, n in (("train", 5 * per_batch), ("test", test_size)):
            data, labels = _batch(rng, n, 100)
            _dump(folder / part, {"batch_label": part, "fine_labels": labels,
                                  "coarse_labels": [lab // 5 for lab in labels], "data": data,
                                  "filenames": [f"img{j}.png" for j in range(n)]})
        _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    else:
        raise ValueError(f"unknown fake dataset {name!r}; choose 'cifar10' or 'cifar100'")
    return folder


def read_fake_cifar(folder: Path, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of the given files, concatenated, independently of torchvision."""
    xs, ys = [], []
    for f in files:
        with open(folder / f, "rb") as fh:
            d = pickle.load(fh, encoding="latin1")
        xs.append(d["data"].reshape(-1, 3, 32, 32))
        ys.extend(d.get("labels", d.get("fine_labels")))
    return np.concatenate(xs), np.asarray(ys)


def bypass_cifar_md5(monkeypatch) -> None:
    """Make torchvision's CIFAR integrity check accept any existing file (pytest ``monkeypatch``)."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
