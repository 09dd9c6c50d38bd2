"""The datasets: a registry of readers that return the official training and test sets as
uint8 tensors (:class:`RawData`), before any split.

Datasets: ``cifar10``, ``cifar100`` (torchvision files), ``fashion_mnist`` (gzip IDX files,
28x28 zero-padded to 32x32), ``digits`` (scikit-learn 8x8, bilinear-resized to 32x32),
``synthetic`` (random class-conditional images for tests). Add one with
:func:`register_dataset`; :func:`fts_core.setup.data.load_data` splits and places it.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fts_core.setup.loader import Split
from fts_core.setup.seeding import make_generator

__all__ = ["DATASETS", "RawData", "register_dataset", "read_idx", "channel_stats", "DEFAULT_ROOT",
           "FASHION_MNIST_SYSTEM_DIR"]

DEFAULT_ROOT = "~/.cache/fts_core/data"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))  # of the 28x28 images (before padding)


@dataclass(frozen=True)
class RawData:
    """What a dataset function returns: CPU tensors before splitting.

    ``train`` is the pool that is split into train / val; ``mean`` / ``std`` are per-channel
    statistics of pixel / 255; ``hflip`` says whether horizontal flips are a valid augmentation.
    """

    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool = True


DatasetFn = Callable[..., RawData]
DATASETS: dict[str, DatasetFn] = {}


def register_dataset(name: str, *, overwrite: bool = False,
                     reads_files: bool = False) -> Callable[[DatasetFn], DatasetFn]:
    """Decorator adding ``fn(root: Path, download: bool | None, **options) -> RawData`` to DATASETS.

    ``fn`` returns CPU tensors with images already at their final size; :func:`load_data`
    does the subset, the train/val split and the move to the device. ``reads_files``: the
    dataset is read from ``root``, so an explicit ``root`` that does not exist is an error.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")

    def decorator(fn: DatasetFn) -> DatasetFn:
        if name in DATASETS and not overwrite:
            raise ValueError(f"dataset {name!r} is already registered; pass overwrite=True to replace it")
        fn.reads_files = reads_files  # type: ignore[attr-defined]
        DATASETS[name] = fn
        return fn

    return decorator


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``(N, C, H, W)`` in units of pixel / 255."""
    v = x.double().div(255).transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(round(m, 4) for m in v.mean(1).tolist()), tuple(round(s, 4) for s in v.std(1).tolist())


def _split(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | list) -> Split:
    return Split(torch.as_tensor(x, dtype=torch.uint8).contiguous(), torch.as_tensor(np.asarray(y), dtype=torch.long))


# --------------------------------------------------------------------------- CIFAR
def _load_cifar(name: str, root: Path, download: bool) -> tuple[Split, Split]:
    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    folder = root / cls.base_folder
    try:
        sets = [cls(str(root), train=train, download=download) for train in (True, False)]
    except RuntimeError as err:
        raise FileNotFoundError(
            f"{name}: the files under {folder} are missing or fail torchvision's md5 check ({err}). "
            f"Either download them (needs internet): load_data({name!r}, download=True), or set "
            f"FTS_DOWNLOAD=1; or extract {cls.filename} (from {cls.url}) into {root} so that "
            f"{folder / cls.train_list[0][0]} exists; pass root=... or set FTS_DATA to use another folder."
        ) from err
    except OSError as err:  # network errors while downloading (URLError is an OSError)
        raise FileNotFoundError(f"{name}: downloading into {root} failed ({err}); place the extracted "
                                f"{cls.filename} from {cls.url} there instead") from err
    # torchvision keeps HWC uint8 numpy arrays: make them (N, C, H, W)
    return tuple(_split(s.data.transpose(0, 3, 1, 2), s.targets) for s in sets)


@register_dataset("cifar10", reads_files=True)
def cifar10(root: Path, download: bool) -> RawData:
    """CIFAR-10 via torchvision: 50k training / 10k test images, 3x32x32, 10 classes."""
    train, test = _load_cifar("cifar10", root, download)
    return RawData(train, test, 10, *CIFAR10_STATS)


@register_dataset("cifar100", reads_files=True)
def cifar100(root: Path, download: bool) -> RawData:
    """CIFAR-100 via torchvision: 50k training / 10k test images, 3x32x32, 100 (fine) classes.

    Normalised with CIFAR-100's own statistics; note that v1 of the authors' code used the
    CIFAR-10 statistics for CIFAR-100 as well.
    """
    train, test = _load_cifar("cifar100", root, download)
    return RawData(train, test, 100, *CIFAR100_STATS)


# --------------------------------------------------------------------------- Fashion-MNIST
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into a numpy array of its shape."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte")


def _find_fashion_mnist(root: Path) -> list[Path] | None:
    """The four IDX files (plain or .gz) in torchvision's layout under root, or Debian's folder."""
    for folder in (root / "FashionMNIST" / "raw", FASHION_MNIST_SYSTEM_DIR):
        found = []
        for base in _FASHION_FILES:
            candidates = [folder / base, folder / f"{base}.gz"]
            found.append(next((p for p in candidates if p.is_file()), None))
        if all(found):
            return found
    return None


@register_dataset("fashion_mnist", reads_files=True)
def fashion_mnist(root: Path, download: bool) -> RawData:
    """Fashion-MNIST: 60k training / 10k test images, 28x28 zero-padded to 1x32x32, 10 classes."""
    files = _find_fashion_mnist(root)
    where = (f"Install them with `apt-get install dataset-fashion-mnist` (into {FASHION_MNIST_SYSTEM_DIR}), or "
             f"put the four files {', '.join(_FASHION_FILES)} (plain or .gz) in {root / 'FashionMNIST' / 'raw'}; "
             "pass root=... or set FTS_DATA to use another folder")
    if files is None and download:
        try:
            torchvision.datasets.FashionMNIST(str(root), download=True)
        except (RuntimeError, OSError) as err:  # torchvision: RuntimeError after every mirror failed; URLError
            raise FileNotFoundError(f"fashion_mnist: downloading into {root} failed ({err}). {where}.") from err
        files = _find_fashion_mnist(root)
    if files is None:
        raise FileNotFoundError(
            f"fashion_mnist: IDX files not found in {FASHION_MNIST_SYSTEM_DIR} or {root / 'FashionMNIST' / 'raw'}. "
            f"{where}, or pass download=True (needs internet).")
    xtr, ytr, xte, yte = (read_idx(p) for p in files)
    pad = lambda x: np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None]  # noqa: E731  (N, 28, 28) -> (N, 1, 32, 32)
    return RawData(_split(pad(xtr), ytr), _split(pad(xte), yte), 10, *FASHION_MNIST_STATS)


# --------------------------------------------------------------------------- digits
DIGITS_TEST_FRACTION, DIGITS_TEST_SEED = 0.2, 0


@register_dataset("digits")
def digits(root: Path, download: bool) -> RawData:
    """scikit-learn's 1,797 handwritten digits (8x8, values 0..16), as 1x32x32 uint8, 10 classes.

    Values are scaled to 0..255 and bilinearly resized to 32x32 once. There is no official
    test split: a fixed stratified 20 % (360 images, seed 0, independent of ``load_data``'s
    seed) is the test set; the other 1,437 are the training pool. mean/std are those of the
    training pool. ``hflip`` is False (mirrored digits are not digits).
    """
    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] * (255 / 16)  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255)
    pool_idx, test_idx = train_test_split(np.arange(len(d.target)), test_size=DIGITS_TEST_FRACTION,
                                          stratify=d.target, random_state=DIGITS_TEST_SEED)
    pool_idx, test_idx = np.sort(pool_idx), np.sort(test_idx)
    pool, test = _split(x[pool_idx], d.target[pool_idx]), _split(x[test_idx], d.target[test_idx])
    return RawData(pool, test, 10, *channel_stats(pool.x), hflip=False)


# --------------------------------------------------------------------------- synthetic
@register_dataset("synthetic")
def synthetic(root: Path, download: bool, num_classes: int = 10, in_channels: int = 3, train_size: int = 500,
              test_size: int = 200, noise: float = 40.0, data_seed: int = 0) -> RawData:
    """Random class-conditional images for tests: a smooth random prototype per class plus noise.

    Each class has a 4x4 random pattern (pixel values 32..223) bilinearly upsampled to
    32x32; an image is its class prototype plus Gaussian noise of std ``noise`` (pixel
    units), rounded and clipped to uint8. Labels are balanced. Fully determined by
    ``data_seed`` (not by ``load_data``'s split seed).
    """
    for key, value, low in (("num_classes", num_classes, 2), ("in_channels", in_channels, 1),
                            ("train_size", train_size, num_classes), ("test_size", test_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"synthetic: {key} must be an integer >= {low}, got {value!r}")
    gen = make_generator(data_seed)
    protos = 32 + 191 * torch.rand(num_classes, in_channels, 4, 4, generator=gen)
    protos = F.interpolate(protos, size=(32, 32), mode="bilinear", align_corners=False)

    def make(n: int) -> Split:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=gen)]
        x = protos[y] + noise * torch.randn(n, in_channels, 32, 32, generator=gen)
        return Split(x.round().clamp(0, 255).to(torch.uint8), y)

    train = make(train_size)
    return RawData(train, make(test_size), num_classes, *channel_stats(train.x))
