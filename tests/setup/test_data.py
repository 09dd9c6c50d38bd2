"""Data: splits, subsets, the on-device loader (order, augmentation, normalisation), datasets, errors."""
import gzip
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from cifar_fixture import bypass_cifar_md5, read_fake_cifar, write_fake_cifar
from fts_core.setup import datasets as fdata
from fts_core.setup import DATASETS, DataBundle, Split, TensorLoader, load_data, register_dataset
from fts_core.setup.loader import crop_flip


def rows(x: torch.Tensor) -> list[bytes]:
    """One hashable key per image."""
    return [img.numpy().tobytes() for img in x.cpu()]


def index_split(n: int, channels: int = 1) -> Split:
    """Images whose first two pixels encode their index; random pixels elsewhere."""
    g = torch.Generator().manual_seed(123)
    x = torch.randint(0, 256, (n, channels, 32, 32), generator=g, dtype=torch.uint8)
    i = torch.arange(n)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = (i // 256).to(torch.uint8), (i % 256).to(torch.uint8)
    return Split(x, i % 5)


def raw_pixels(loader: TensorLoader) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The loader's batches mapped back to raw pixel values (exact integers)."""
    mean, std = loader.mean, loader.std
    return [((xb * std + mean) * 255).round().to(torch.uint8) for xb, _ in loader], [yb for _, yb in loader]


# --------------------------------------------------------------------------- splits
def test_synthetic_bundle_shapes_and_types():
    b = load_data("synthetic", seed=0)
    assert isinstance(b, DataBundle) and b.num_classes == 10 and b.in_channels == 3 and b.image_size == 32
    assert (len(b.train), len(b.val), len(b.test)) == (400, 100, 200)
    for s in (b.train, b.val, b.test):
        assert s.x.dtype == torch.uint8 and s.x.shape[1:] == (3, 32, 32) and s.y.dtype == torch.int64
    assert len(b.mean) == len(b.std) == 3 and all(0 < v < 1 for v in b.mean + b.std)


def test_split_is_stratified_disjoint_and_seed_deterministic():
    a, b, c = load_data("synthetic", seed=3), load_data("synthetic", seed=3), load_data("synthetic", seed=4)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert set(rows(a.val.x)) != set(rows(c.val.x))  # another seed, another split
    train, val = set(rows(a.train.x)), set(rows(a.val.x))
    assert not train & val and len(train | val) == 500  # disjoint, together the whole pool
    assert Counter(a.val.y.tolist()) == {k: 10 for k in range(10)}  # 20 % of 50 per class
    assert Counter(a.train.y.tolist()) == {k: 40 for k in range(10)}
    assert torch.equal(a.test.x, c.test.x)  # the test set never depends on the seed


def test_subset_is_stratified_caps_test_and_rejects_bad_values():
    b = load_data("synthetic", subset=100, seed=1)
    assert len(b.train) + len(b.val) == 100 and len(b.test) == 40  # 100/500 of the 200 test images
    assert Counter(b.train.y.tolist() + b.val.y.tolist()) == {k: 10 for k in range(10)}
    assert Counter(b.test.y.tolist()) == {k: 4 for k in range(10)}
    assert len(load_data("synthetic", subset=0.5).test) == 100
    assert len(load_data("synthetic", subset=500).test) == 200  # everything: test untouched
    assert torch.equal(load_data("synthetic", subset=0.2, seed=1).val.x, b.val.x)  # fraction == count
    for bad in (0, -3, 501, 0.0, 1.5, "10", True):
        with pytest.raises(ValueError, match="subset"):
            load_data("synthetic", subset=bad)
    with pytest.raises(ValueError, match="stratified"):
        load_data("synthetic", subset=5)  # fewer images than classes


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar1000'.*cifar10.*digits.*fashion_mnist"):
        load_data("cifar1000")
    for bad in (0, 1, 1.2, -0.1):
        with pytest.raises(ValueError, match=f"val_fraction.*{bad!r}"):
            load_data("synthetic", val_fraction=bad)
    with pytest.raises(ValueError, match="seed"):
        load_data("synthetic", seed=-1)
    b = load_data("synthetic", subset=50)
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match=f"batch_size.*{bad!r}"):
            b.loader("train", bad)
    with pytest.raises(ValueError, match="'valid'"):
        b.loader("valid", 8)


def test_register_a_dataset():
    @register_dataset("test_constant")
    def constant(root, download, value: int = 7):
        split = Split(torch.full((20, 1, 32, 32), value, dtype=torch.uint8), torch.arange(20) % 2)
        return fdata.RawData(split, split, 2, (0.5,), (0.25,))

    try:
        b = load_data("test_constant", value=9)
        assert b.in_channels == 1 and len(b.train) == 16 and int(b.train.x.max()) == 9
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("test_constant")(constant)
    finally:
        DATASETS.pop("test_constant", None)


# --------------------------------------------------------------------------- loader
def test_loader_order_is_a_permutation_fixed_by_seed_and_epoch():
    split = index_split(50)
    make = lambda seed=0, epoch=0: TensorLoader(split, 16, (0.0,), (1.0,), shuffle=True, seed=seed, epoch=epoch)  # noqa: E731
    a, b = make(), make()
    assert len(a) == 4 and a.num_samples == 50
    xa, ya = raw_pixels(a)
    xb, _ = raw_pixels(b)
    assert all(torch.equal(p, q) for p, q in zip(xa, xb))  # same (seed, epoch): same batches
    order = torch.cat([x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long() for x in xa])
    assert sorted(order.tolist()) == list(range(50)) and order.tolist() != list(range(50))
    assert torch.equal(torch.cat(ya), split.y[order])  # labels travel with their images
    again, _ = raw_pixels(a)
    assert all(torch.equal(p, q) for p, q in zip(xa, again))  # re-iterating repeats the epoch
    a.set_epoch(1)
    x1, _ = raw_pixels(a)
    assert not torch.equal(torch.cat(x1), torch.cat(xa))  # a new epoch, a new order
    assert all(torch.equal(p, q) for p, q in zip(x1, raw_pixels(make(epoch=1))[0]))  # resumable
    assert not torch.equal(torch.cat(raw_pixels(make(seed=1))[0]), torch.cat(xa))
    dropped = TensorLoader(split, 16, (0.0,), (1.0,), drop_last=True)
    assert len(dropped) == 3 and sum(len(y) for _, y in dropped) == 48
    with pytest.raises(ValueError, match="epoch"):
        a.set_epoch(-1)


def reference_crops(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """All (2*pad+1)^2 crops x 2 flips of each image: (B, 81, 2, C, H, W), by slicing."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    crops = torch.stack([padded[..., i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)], 1)
    return torch.stack([crops, crops.flip(-1)], 2)


def test_crop_flip_matches_slicing():
    x = torch.randint(0, 256, (6, 2, 10, 12), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [4, 4], [8, 8], [1, 7], [8, 0], [3, 5]])
    flips = torch.tensor([False, False, True, True, False, True])
    ref = reference_crops(x)
    out = crop_flip(x, offsets, flips, pad=4)
    for b in range(6):
        assert torch.equal(out[b], ref[b, offsets[b, 0] * 9 + offsets[b, 1], int(flips[b])])
    assert torch.equal(crop_flip(x, torch.full((6, 2), 4), torch.zeros(6, dtype=torch.bool), 4), x)


def find_augmentation(out: torch.Tensor, src: torch.Tensor) -> list[tuple[int, int]]:
    """For each augmented image, its (crop index 0..80, flip 0/1) among all candidates of src."""
    cands = reference_crops(src)
    found = []
    for b in range(len(src)):
        hits = (cands[b] == out[b]).flatten(2).all(-1).nonzero().tolist()
        assert len(hits) == 1, "output is not a padded crop (+ flip) of its source image"
        found.append(tuple(hits[0]))
    return found


@pytest.mark.parametrize("hflip", [True, False])
def test_augmentation_really_crops_and_flips(hflip):
    split = index_split(200, channels=3)
    loader = TensorLoader(split, 64, (0.0,) * 3, (1.0,) * 3, augment=True, hflip=hflip, seed=5)
    out = torch.cat(raw_pixels(loader)[0])
    found = find_augmentation(out, split.x)
    crops = Counter(c for c, _ in found)
    assert len(crops) > 40 and crops[40] < 20  # many different offsets; identity (4, 4) is 1/81
    flip_rate = sum(f for _, f in found) / len(found)
    assert 0.35 < flip_rate < 0.65 if hflip else flip_rate == 0
    loader.set_epoch(1)
    assert find_augmentation(torch.cat(raw_pixels(loader)[0]), split.x) != found  # new draws per epoch


def test_eval_loaders_are_unaugmented_in_order_and_normalised():
    b = load_data("synthetic", subset=100, seed=0)
    mean, std = torch.tensor(b.mean).view(1, 3, 1, 1), torch.tensor(b.std).view(1, 3, 1, 1)
    for split in ("val", "test"):
        loader = b.loader(split, 32)
        xs, ys = zip(*loader)
        expected = (getattr(b, split).x.float() / 255 - mean) / std
        assert torch.allclose(torch.cat(xs), expected, atol=1e-6)
        assert torch.equal(torch.cat(ys), getattr(b, split).y)
        assert xs[0].dtype == torch.float32 and xs[0].device == b.train.x.device
    train = b.loader("train", 32, seed=0)
    assert train.shuffle and train.augment and not b.loader("test", 8).augment
    # normalised training batches: zero padding maps to -mean/std in a few border pixels
    xb = torch.cat([x for x, _ in train])
    assert abs(xb.mean().item()) < 0.5 and 0.6 < xb.std().item() < 1.5


# --------------------------------------------------------------------------- datasets
@pytest.fixture
def no_download(monkeypatch):
    monkeypatch.delenv("FTS_DOWNLOAD", raising=False)


def test_cifar10_fake_files_through_torchvision(tmp_path, monkeypatch, no_download):
    folder = write_fake_cifar(tmp_path, "cifar10", per_batch=40, test_size=30)
    bypass_cifar_md5(monkeypatch)
    b = load_data("cifar10", root=tmp_path, seed=42)
    x, y = read_fake_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)])
    xt, yt = read_fake_cifar(folder, ["test_batch"])
    assert (b.num_classes, b.in_channels, len(b.train), len(b.val)) == (10, 3, 160, 40)
    assert (b.mean, b.std) == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert torch.equal(b.test.x, torch.from_numpy(xt)) and torch.equal(b.test.y, torch.from_numpy(yt))
    # the same split as the authors' call: train_test_split(range(N), labels, stratify, 0.2, random_state=42)
    tr, va = train_test_split(range(len(y)), test_size=0.2, stratify=y, random_state=42)
    assert torch.equal(b.train.x, torch.from_numpy(x[tr])) and torch.equal(b.val.y, torch.from_numpy(y[va]))


def test_cifar100_fake_files_use_fine_labels_and_own_stats(tmp_path, monkeypatch, no_download):
    folder = write_fake_cifar(tmp_path, "cifar100", per_batch=100, test_size=100)
    bypass_cifar_md5(monkeypatch)
    b = load_data("cifar100", root=tmp_path, seed=0)
    _, y = read_fake_cifar(folder, ["train"])
    assert b.num_classes == 100 and (len(b.train), len(b.val), len(b.test)) == (400, 100, 100)
    assert Counter(b.val.y.tolist()) == Counter(range(100))  # stratified: one per class
    assert sorted(b.train.y.tolist() + b.val.y.tolist()) == sorted(y.tolist())
    assert b.mean == (0.5071, 0.4865, 0.4409) and b.std == (0.2673, 0.2564, 0.2762)


def test_cifar_missing_or_corrupt_files_explain_what_to_do(tmp_path, no_download):
    with pytest.raises(FileNotFoundError) as err:
        load_data("cifar10", root=tmp_path / "empty")
    msg = str(err.value)
    for hint in ("cifar-10-batches-py", "download=True", "FTS_DOWNLOAD", "FTS_DATA", "cifar-10-python.tar.gz"):
        assert hint in msg
    write_fake_cifar(tmp_path, "cifar100", per_batch=100)  # files present, md5 wrong: not loaded silently
    with pytest.raises(FileNotFoundError, match="md5"):
        load_data("cifar100", root=tmp_path)


def test_env_fts_download_triggers_torchvision_download(tmp_path, monkeypatch):
    import torchvision

    calls = []

    def fake_download(self):  # stands in for the network: writes the files where torchvision expects them
        calls.append(type(self).__name__)
        write_fake_cifar(self.root, "cifar10", per_batch=20, test_size=10)

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", fake_download)
    bypass_cifar_md5(monkeypatch)
    monkeypatch.setenv("FTS_DOWNLOAD", "1")
    assert len(load_data("cifar10", root=tmp_path).test) == 10 and calls
    calls.clear()
    monkeypatch.setenv("FTS_DOWNLOAD", "0")
    load_data("cifar10", root=tmp_path)
    assert not calls  # files present and no request: no download


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    blob = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if compress else blob)


def test_fashion_mnist_from_torchvision_layout_and_missing_files(tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (100, 28, 28))
    labels = np.arange(100) % 10
    write_idx(raw / "train-images-idx3-ubyte.gz", images, True)
    write_idx(raw / "train-labels-idx1-ubyte", labels, False)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:20], False)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels[:20], True)
    b = load_data("fashion_mnist", root=tmp_path)
    assert b.in_channels == 1 and (len(b.train), len(b.val), len(b.test)) == (80, 20, 20)
    assert torch.equal(b.test.x[:, 0, 2:30, 2:30], torch.from_numpy(images[:20]).to(torch.uint8))
    assert int(b.test.x[:, :, :2].max()) == 0 and int(b.test.x[:, :, :, 30:].max()) == 0  # zero border
    monkeypatch.setattr(fdata, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("FTS_DOWNLOAD", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion_mnist", root=tmp_path / "empty")


def test_fashion_mnist_download_without_network_explains_where_the_files_go(tmp_path, monkeypatch):
    import torchvision

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -3]>")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", offline)
    monkeypatch.setattr(fdata, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        load_data("fashion_mnist", root=tmp_path, download=True)
    msg = str(err.value)
    for hint in ("downloading into", "urlopen error", "apt-get install dataset-fashion-mnist",
                 str(tmp_path / "FashionMNIST" / "raw"), "train-images-idx3-ubyte", "FTS_DATA"):
        assert hint in msg, hint
    assert isinstance(err.value.__cause__, RuntimeError)


def test_device_names_resolve_in_one_place():
    from fts_core.setup import device as fdevice
    from fts_core.experiments import runner

    assert fdevice.resolve_device("cpu") == torch.device("cpu")
    assert fdevice.resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert fdevice.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert runner.resolve_device is fdevice.resolve_device and not hasattr(fdata, "_resolve_device")
    with pytest.raises(ValueError, match="'gpu' is not a device"):
        load_data("synthetic", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda:0': CUDA is not available"):
            load_data("synthetic", device="cuda:0")


@pytest.mark.skipif(not fdata.FASHION_MNIST_SYSTEM_DIR.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)")
def test_fashion_mnist_system_files(tmp_path):
    b = load_data("fashion_mnist", root=tmp_path, seed=42)
    assert (len(b.train), len(b.val), len(b.test)) == (48_000, 12_000, 10_000)
    assert b.test.x.shape == (10_000, 1, 32, 32) and b.hflip
    assert Counter(b.test.y.tolist()) == {k: 1000 for k in range(10)}
    assert int(b.train.x[:, :, :2].max()) == 0 and int(b.train.x.max()) == 255


@pytest.mark.skipif(not fdata.FASHION_MNIST_SYSTEM_DIR.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)")
def test_an_explicit_root_that_does_not_exist_is_an_error_not_the_system_copy(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="root='.*nowhere' does not exist"):
        load_data("fashion_mnist", root=tmp_path / "nowhere")
    monkeypatch.setenv("FTS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"\$FTS_DATA='.*nowhere' does not exist"):
        load_data("fashion_mnist")
    monkeypatch.delenv("FTS_DATA")
    assert len(load_data("fashion_mnist").test) == 10_000  # no root given: the system copy is found


def test_digits_fixed_test_set_and_resized_images():
    a, b = load_data("digits", seed=0), load_data("digits", seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (1149, 288, 360)
    assert a.train.x.shape[1:] == (1, 32, 32) and a.in_channels == 1 and not a.hflip
    assert torch.equal(a.test.x, b.test.x)  # seed-independent hold-out
    assert not torch.equal(a.val.y, b.val.y)  # the train/val split follows the seed
    assert int(a.train.x.max()) == 255 and int(a.train.x.min()) == 0
    assert Counter(a.test.y.tolist()) == Counter(b.test.y.tolist()) and len(set(a.test.y.tolist())) == 10
    assert not set(rows(a.test.x)) & set(rows(a.train.x) + rows(a.val.x)) - {bytes(1024)}
    from sklearn.datasets import load_digits

    # every test image is a digit scaled to 0..255 and bilinearly resized (half-pixel centres) to 32x32
    d = load_digits()
    ref = F.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None] * (255 / 16), size=32,
                        mode="bilinear", align_corners=False).round().to(torch.uint8)
    assert set(rows(a.test.x)) <= set(rows(ref))
    assert torch.allclose(ref.float().mean((1, 2, 3)), torch.tensor(d.images).float().mean((1, 2)) * 255 / 16, rtol=0.1)
