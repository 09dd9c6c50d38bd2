"""fts_core.experiments.training: one epoch of SGD, evaluation, BatchNorm-only warm-up, schedule."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fts_core.setup.data import load_data
from fts_core.masks import apply_masks, make_masks, prunable_parameters
from fts_core.setup.models import build_model
from fts_core.experiments.training import evaluate, make_optimizer, make_scheduler, refresh_batchnorm, train_epoch


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic", seed=0, train_size=160, test_size=40)


def _resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet18", num_classes=10, in_channels=3, width=0.0625)


def test_train_epoch_metrics_match_a_forward_pass_when_nothing_moves(data):
    """With lr=0 and no BatchNorm the weights do not move, so the epoch's mean loss and
    accuracy must equal evaluate() over the very same batches."""
    torch.manual_seed(0)
    model = build_model("mlp", hidden=(32,), width=1.0)
    loader = data.loader("train", 48, augment=False, seed=3)  # 128 = 2*48 + 32: a ragged last batch
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    tr = train_epoch(model, loader, opt)
    ev = evaluate(model, loader)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert tr["images"] == ev["images"] == loader.num_samples == 128
    assert tr["loss"] == pytest.approx(ev["loss"], rel=1e-5)
    assert tr["accuracy"] == pytest.approx(ev["accuracy"], abs=1e-12)
    assert tr["seconds"] > 0 and tr["images_per_s"] > 0


def test_evaluate_matches_manual_cross_entropy_and_restores_mode(data):
    model = _resnet()
    model.train()
    loader = data.loader("val", 7)
    out = evaluate(model, loader)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        xs, ys = zip(*loader)
        logits = model(torch.cat(xs))
        y = torch.cat(ys)
    assert out["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert out["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_training_learns_the_synthetic_task(data):
    torch.manual_seed(0)
    model = build_model("mlp", hidden=(64,))
    opt = make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = data.loader("train", 32, seed=0)
    losses = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        losses.append(train_epoch(model, loader, opt)["loss"])
    assert losses[-1] < 0.5 * losses[0]
    assert evaluate(model, data.loader("val", 64))["accuracy"] > 0.5  # chance = 0.1


def test_no_host_sync_per_step(data, monkeypatch):
    """Metrics stay on the device: the number of host reads does not grow with the number of
    batches (one .tolist() per epoch), masks and BatchNorm included."""
    calls = {"n": 0}
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=original, **k):
            calls["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def reads(batch_size: int) -> tuple[int, int]:
        torch.manual_seed(0)
        model = build_model("small_cnn", width=0.25)  # conv + BatchNorm + linear
        opt = make_optimizer(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
        masks = {n: torch.rand_like(p) > 0.5 for n, p in prunable_parameters(model).items()}
        apply_masks(model, masks, opt)
        loader = data.loader("train", batch_size, seed=0)
        calls["n"] = 0
        train_epoch(model, loader, opt)
        n_train = calls["n"]
        calls["n"] = 0
        evaluate(model, data.loader("val", batch_size))
        return n_train, calls["n"]

    few, many = reads(64), reads(8)  # 2 vs 16 training batches
    assert few == many
    assert many[0] <= 2 and many[1] <= 2


def test_masked_training_keeps_pruned_weights_exactly_zero_after_dense_warmup(data):
    """The authors' defect: momentum from dense warm-up epochs must not move pruned weights."""
    torch.manual_seed(0)
    model = build_model("small_cnn", width=0.25)
    opt = make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = data.loader("train", 32, seed=0)
    train_epoch(model, loader, opt)  # dense warm-up: momentum buffers are non-zero everywhere
    masks = make_masks({n: p.detach().abs() for n, p in prunable_parameters(model).items()}, 0.9, scope="layer")
    apply_masks(model, masks, opt)
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        train_epoch(model, loader, opt)
    params = dict(model.named_parameters())
    for name, m in masks.items():
        assert torch.count_nonzero(params[name].detach()[~m]) == 0, name
        assert torch.count_nonzero(params[name].detach()[m]) > 0, name


def test_refresh_batchnorm_changes_only_running_statistics(data):
    model = _resnet()
    model.eval()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    seen = refresh_batchnorm(model, data.loader("train", 32, seed=0), num_batches=3)
    assert seen == 3
    assert not model.training  # mode restored
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())
    changed = [n for n, b in model.named_buffers() if not torch.equal(b, buffers[n])]
    assert changed and all(n.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
                           for n in changed)
    assert int(model.bn1.num_batches_tracked) == 3
    with pytest.raises(ValueError, match="num_batches"):
        refresh_batchnorm(model, data.loader("train", 32), num_batches=0)


def test_refresh_batchnorm_estimates_the_input_statistics():
    """First BN after many batches: running mean -> the mean of the first conv's output."""
    torch.manual_seed(0)
    model = build_model("small_cnn", width=0.25)
    x = torch.randn(64, 3, 16, 16) * 2 + 1
    batches = [(x[i:i + 32], torch.zeros(32, dtype=torch.long)) for i in (0, 32)] * 30
    refresh_batchnorm(model, batches)
    conv, bn = model.features[0], model.features[1]
    with torch.no_grad():
        target = conv(x).mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, target, atol=1e-2)


def test_scheduler_follows_milestones_from_epoch_zero():
    model = nn.Linear(2, 2)
    opt = make_optimizer(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    sched = make_scheduler(opt, milestones=(3, 5), gamma=0.2)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.01] * 3 + [0.002] * 2 + [0.0004] * 2)
    group = opt.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
    assert len(group["params"]) == 2  # weight decay on every parameter, biases included


def test_empty_loader_is_an_error():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no batches"):
        train_epoch(model, [], make_optimizer(model, lr=0.01, momentum=0.9, weight_decay=5e-4))
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, [])
