"""Datasets as uint8 tensors on the training device, and a batched on-device loader.

``load_data(name, ...)`` returns a :class:`DataBundle` with ``train`` / ``val`` / ``test``
splits. Each split holds raw pixels ``x`` uint8 ``(N, C, 32, 32)`` and labels ``y`` int64
``(N,)``, stored once on ``device``. ``bundle.loader(split, batch_size)`` returns a
:class:`TensorLoader` that shuffles, augments (random crop 32 with 4 zero pixels of padding,
horizontal flip) and normalises whole batches with tensor ops on that device: no
per-image Python work and no host<->device copies of images during an epoch.

Protocol (the paper's): the official training set is split stratified 80/20 into
train / validation with ``seed`` (the authors used 42; ``RunConfig.split_seed``), through
``sklearn.model_selection.train_test_split`` called as the authors did, so seed 42 gives
their split; the official test set is kept for testing.

Datasets: ``cifar10``, ``cifar100`` (torchvision files), ``fashion_mnist`` (gzip IDX files,
28x28 zero-padded to 32x32), ``digits`` (scikit-learn 8x8, bilinear-resized to 32x32),
``synthetic`` (random class-conditional images for tests). Add one with
:func:`register_dataset`.
"""
from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from fts_core.device import resolve_device

DEFAULT_ROOT = "~/.cache/fts_core/data"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))  # of the 28x28 images (before padding)


# --------------------------------------------------------------------------- containers
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


# --------------------------------------------------------------------------- loader
def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for the pair (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> np.uint64(1))


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
        self.seed = _check_seed(seed)
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
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
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


# --------------------------------------------------------------------------- registry
DatasetFn = Callable[..., RawData]
DATASETS: dict[str, DatasetFn] = {}


def register_dataset(name: str, *, overwrite: bool = False) -> Callable[[DatasetFn], DatasetFn]:
    """Decorator adding ``fn(root: Path, download: bool | None, **options) -> RawData`` to DATASETS.

    ``fn`` returns CPU tensors with images already at their final size; :func:`load_data`
    does the subset, the train/val split and the move to the device.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")

    def decorator(fn: DatasetFn) -> DatasetFn:
        if name in DATASETS and not overwrite:
            raise ValueError(f"dataset {name!r} is already registered; pass overwrite=True to replace it")
        DATASETS[name] = fn
        return fn

    return decorator


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
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    seed = _check_seed(seed)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if download is None:
        download = os.environ.get("FTS_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")
    root_path = Path(root if root is not None else os.environ.get("FTS_DATA", DEFAULT_ROOT)).expanduser()
    device = resolve_device(device)

    raw = DATASETS[name](root_path, download, **options)
    pool, test = raw.train, raw.test
    if subset is not None:
        n_keep = _subset_size(subset, len(pool))
        pool = _take(pool, _stratified(pool.y, n_keep, seed))
        if n_keep < len(raw.train):
            n_test = max(1, round(len(test) * n_keep / len(raw.train)))
            test = _take(test, _stratified(test.y, n_test, seed))
    from sklearn.model_selection import train_test_split

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


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


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
    from sklearn.model_selection import train_test_split

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


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``(N, C, H, W)`` in units of pixel / 255."""
    v = x.double().div(255).transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(round(m, 4) for m in v.mean(1).tolist()), tuple(round(s, 4) for s in v.std(1).tolist())


def _split(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | list) -> Split:
    return Split(torch.as_tensor(x, dtype=torch.uint8).contiguous(), torch.as_tensor(np.asarray(y), dtype=torch.long))


# --------------------------------------------------------------------------- CIFAR
def _load_cifar(name: str, root: Path, download: bool) -> tuple[Split, Split]:
    import torchvision

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


@register_dataset("cifar10")
def cifar10(root: Path, download: bool) -> RawData:
    """CIFAR-10 via torchvision: 50k training / 10k test images, 3x32x32, 10 classes."""
    train, test = _load_cifar("cifar10", root, download)
    return RawData(train, test, 10, *CIFAR10_STATS)


@register_dataset("cifar100")
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


@register_dataset("fashion_mnist")
def fashion_mnist(root: Path, download: bool) -> RawData:
    """Fashion-MNIST: 60k training / 10k test images, 28x28 zero-padded to 1x32x32, 10 classes."""
    files = _find_fashion_mnist(root)
    where = (f"Install them with `apt-get install dataset-fashion-mnist` (into {FASHION_MNIST_SYSTEM_DIR}), or "
             f"put the four files {', '.join(_FASHION_FILES)} (plain or .gz) in {root / 'FashionMNIST' / 'raw'}; "
             "pass root=... or set FTS_DATA to use another folder")
    if files is None and download:
        import torchvision

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
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] * (255 / 16)  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255)
    pool_idx, test_idx = train_test_split(np.arange(len(d.target)), test_size=DIGITS_TEST_FRACTION,
                                          stratify=d.target, random_state=DIGITS_TEST_SEED)
    pool_idx, test_idx = np.sort(pool_idx), np.sort(test_idx)
    pool, test = _split(x[pool_idx], d.target[pool_idx]), _split(x[test_idx], d.target[test_idx])
    return RawData(pool, test, 10, *_channel_stats(pool.x), hflip=False)


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
    gen = torch.Generator().manual_seed(_check_seed(data_seed))
    protos = 32 + 191 * torch.rand(num_classes, in_channels, 4, 4, generator=gen)
    protos = F.interpolate(protos, size=(32, 32), mode="bilinear", align_corners=False)

    def make(n: int) -> Split:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=gen)]
        x = protos[y] + noise * torch.randn(n, in_channels, 32, 32, generator=gen)
        return Split(x.round().clamp(0, 255).to(torch.uint8), y)

    train = make(train_size)
    return RawData(train, make(test_size), num_classes, *_channel_stats(train.x))
