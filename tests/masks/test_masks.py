"""Masks: prunable sets, exact counts, rounding, ties, enforcement through SGD, collapse, ablations."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import fts_core
from small_models import every_kind_model  # tests/small_models.py
from fts_core.masks.ablations import invert_scores, reinit_kept, shuffle_masks
from fts_core.masks import (
    apply_masks,
    collapsed_layers,
    layer_density,
    make_masks,
    mask_summary,
    num_kept,
    prunable_parameters,
    remove_masks,
)


class TinyCNN(nn.Module):
    """conv(bias) -> BN -> ReLU -> conv -> BN -> ReLU -> pool -> hidden fc -> classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 8)
        self.linear = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.linear(torch.relu(self.fc(x.flatten(1))))


def tiny(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN()


def rand_scores(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) for n, p in prunable_parameters(model).items()}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


X = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
INPUT = (1, 3, 16, 16)


# ------------------------------------------------------------------ prunable parameters
def test_default_rule_is_conv_and_linear_weights_except_classifier():
    names = list(prunable_parameters(tiny()))
    assert names == ["conv1.weight", "conv2.weight", "fc.weight"]


def test_authors_rule_and_callable_rule():
    assert list(prunable_parameters(tiny(), "authors")) == ["conv1.weight", "conv2.weight", "fc.weight"]
    only_conv = prunable_parameters(tiny(), lambda n, p, m: isinstance(m, nn.Conv2d) and p.dim() == 4)
    assert list(only_conv) == ["conv1.weight", "conv2.weight"]


def test_model_without_prunable_parameters_is_rejected():
    with pytest.raises(ValueError, match="no prunable parameter"):
        prunable_parameters(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="'nope'"):
        prunable_parameters(tiny(), "nope")


def test_paper_counts_on_full_width_models():
    counts = {}
    for name in ("resnet18", "vgg19"):
        model = fts_core.build_model(name)
        for rule in ("default", "authors"):
            pp = prunable_parameters(model, rule)
            counts[name, rule] = (len(pp), sum(p.numel() for p in pp.values()))
    # paper-notes: authors' rule -> ResNet18 23 tensors / 11,160,128; VGG19 16 / 20,018,880
    assert counts["resnet18", "authors"] == (23, 11_160_128)
    assert counts["vgg19", "authors"] == (16, 20_018_880)
    assert counts["resnet18", "default"] == (20, 11_160_128 - 896)
    assert counts["vgg19", "default"] == (16, 20_018_880)


# ------------------------------------------------------------------ make_masks
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])
def test_exact_counts_global(sparsity):
    scores = rand_scores(tiny())
    n = sum(s.numel() for s in scores.values())
    masks = make_masks(scores, sparsity)
    assert sum(int(m.sum()) for m in masks.values()) == round((1 - sparsity) * n)
    assert all(m.dtype == torch.bool and m.shape == scores[k].shape for k, m in masks.items())


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.99, 1.0])
def test_exact_counts_per_layer(sparsity):
    scores = rand_scores(tiny())
    masks = make_masks(scores, sparsity, scope="layer")
    for k, m in masks.items():
        assert int(m.sum()) == round((1 - sparsity) * m.numel()), k


def test_global_keeps_the_top_scores():
    scores = rand_scores(tiny())
    masks = make_masks(scores, 0.8)
    kept = torch.cat([s[masks[k]] for k, s in scores.items()])
    pruned = torch.cat([s[~masks[k]] for k, s in scores.items()])
    assert kept.min() > pruned.max()


def test_rounding_is_half_to_even_and_authors_rule_available():
    assert num_kept(5, 0.5) == 2 and num_kept(7, 0.5) == 4  # 2.5 -> 2, 3.5 -> 4
    assert num_kept(10, 0.75) == 2  # 2.5 -> 2
    assert num_kept(10, 0.999) == 0 and num_kept(10, 0.999, "authors") == 1  # max(floor, 1)
    assert num_kept(10, 0.55, "authors") == 4  # floor(4.5)
    scores = {"a": torch.arange(5.0)}
    assert int(make_masks(scores, 0.5)["a"].sum()) == 2
    assert int(make_masks(scores, 1.0, rounding="authors")["a"].sum()) == 1


def test_ties_are_broken_by_position_deterministically():
    scores = {"a": torch.ones(2, 3), "b": torch.ones(4)}
    m = make_masks(scores, 0.5)  # keep 5 of 10, all tied -> the first 5 positions
    flat = torch.cat([m["a"].reshape(-1), m["b"]])
    assert flat.tolist() == [True] * 5 + [False] * 5
    # partial ties: higher scores first, ties by position
    s = {"w": torch.tensor([1.0, 3.0, 2.0, 2.0, 2.0, 0.0])}
    assert make_masks(s, 0.5)["w"].tolist() == [False, True, True, True, False, False]
    assert make_masks(s, 0.5, scope="layer")["w"].tolist() == [False, True, True, True, False, False]
    # same result every call, incl. -0.0 == 0.0 ties
    z = {"w": torch.tensor([0.0, -0.0, 0.0, -0.0])}
    assert make_masks(z, 0.5)["w"].tolist() == [True, True, False, False]


def test_sparsity_zero_and_one():
    scores = rand_scores(tiny())
    assert all(m.all() for m in make_masks(scores, 0.0).values())
    assert not any(m.any() for m in make_masks(scores, 1.0).values())
    assert not any(m.any() for m in make_masks(scores, 1, scope="layer").values())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_are_rejected_naming_the_layer(bad):
    scores = rand_scores(tiny())
    scores["conv2.weight"][0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"conv2\.weight"):
        make_masks(scores, 0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5x", None])
def test_bad_sparsity_is_rejected(bad):
    with pytest.raises(ValueError, match="sparsity"):
        make_masks(rand_scores(tiny()), bad)


def test_one_sparsity_check_names_the_value_and_its_range():
    from fts_core.experiments.config import RunConfig
    from fts_core.masks.select import check_sparsity
    assert check_sparsity(1) == 1.0 and check_sparsity(0.5, below_one=True) == 0.5
    with pytest.raises(ValueError, match=r"^target=1.0: must be in \[0, 1\)$"):
        check_sparsity(1.0, "target", below_one=True)
    with pytest.raises(ValueError, match=r"^config sparsity=1.0: must be in \[0, 1\)$"):  # a run keeps a weight
        RunConfig(sparsity=1.0)


def test_bad_scores_and_scope_are_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        make_masks({}, 0.5)
    with pytest.raises(ValueError, match="'e'"):
        make_masks({"e": torch.empty(0)}, 0.5)
    with pytest.raises(ValueError, match="'row'"):
        make_masks(rand_scores(tiny()), 0.5, scope="row")


# ------------------------------------------------------------------ apply_masks
def _train(model, opt, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 3, 16, 16, generator=g)
        y = torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _pruned_values(model, masks):
    params = dict(model.named_parameters())
    return torch.cat([params[k].detach()[~m] for k, m in masks.items()])


def test_pruned_weights_stay_exactly_zero_through_sgd_momentum_weight_decay():
    model = tiny()
    masks = make_masks(rand_scores(model), 0.8)
    apply_masks(model, masks)
    assert (_pruned_values(model, masks) == 0).all()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    kept_before = {k: p.detach().clone() for k, p in model.named_parameters() if k in masks}
    _train(model, opt, 200)
    vals = _pruned_values(model, masks)
    assert vals.numel() > 0 and torch.equal(vals, torch.zeros_like(vals))
    # kept weights did train
    params = dict(model.named_parameters())
    assert any(not torch.equal(params[k][masks[k]], kept_before[k][masks[k]]) for k in masks)
    assert model.fts_masks.keys() == masks.keys()


# every torch.optim family, with the options that carry state into pruned entries
OPTIMIZERS = {
    "sgd-momentum-wd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "sgd-nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "sgd-foreach-off": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=False),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-4),
    "adam-amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-2),
    "rmsprop-momentum": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.9, weight_decay=5e-4),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-2, weight_decay=1e-4),
    "nadam": lambda ps: torch.optim.NAdam(ps, lr=1e-2),
    "radam": lambda ps: torch.optim.RAdam(ps, lr=1e-2, weight_decay=1e-4),
    "adamax": lambda ps: torch.optim.Adamax(ps, lr=1e-2),
    "adadelta": lambda ps: torch.optim.Adadelta(ps, lr=1.0),
    "rprop": lambda ps: torch.optim.Rprop(ps, lr=1e-2),
    "asgd": lambda ps: torch.optim.ASGD(ps, lr=1e-2, weight_decay=1e-4),
}


def _assert_zero_after_every_step(model, opt, masks, steps, seed=1, forward=None):
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x = torch.randn(8, 3, 16, 16, generator=g)
        y = torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy((model if forward is None else forward)(x), y).backward()
        opt.step()
        vals = _pruned_values(model, masks)
        assert torch.equal(vals, torch.zeros_like(vals)), f"step {step}: {int((vals != 0).sum())} pruned weights revived"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_pruned_weights_stay_zero_with_an_optimizer_that_was_not_passed(name):
    """The user's own optimizer, with state from dense steps, not handed to apply_masks."""
    model = tiny()
    opt = OPTIMIZERS[name](model.parameters())
    _train(model, opt, 5)  # dense steps: momentum / moments non-zero everywhere
    model.eval()
    masks = make_masks(fts_core.score("fts", model, [(X, torch.tensor([0, 1, 2, 0]))]), 0.9)
    model.train()
    apply_masks(model, masks)  # no optimizer
    kept_before = torch.cat([p.detach()[masks[k]] for k, p in model.named_parameters() if k in masks]).clone()
    _assert_zero_after_every_step(model, opt, masks, 40)
    kept_after = torch.cat([p.detach()[masks[k]] for k, p in model.named_parameters() if k in masks])
    assert not torch.equal(kept_before, kept_after)  # the kept weights did train


@pytest.mark.parametrize("name", ["sgd-momentum-wd", "adam", "rmsprop-momentum"])
def test_an_optimizer_created_after_masking_or_passed_also_keeps_zeros(name):
    model = tiny()
    masks = make_masks(rand_scores(model), 0.8)
    apply_masks(model, masks)
    _assert_zero_after_every_step(model, OPTIMIZERS[name](model.parameters()), masks, 30)
    other = tiny(1)
    opt = OPTIMIZERS[name](other.parameters())
    _train(other, opt, 3)
    apply_masks(other, masks, optimizer=opt)  # passed: its state is masked too
    state = [v for p in other.parameters() for v in opt.state[p].values() if torch.is_tensor(v) and v.dim()]
    assert state and all((v[~masks["fc.weight"]] == 0).all() for p, v in zip(other.parameters(), state)
                         if v.shape == masks["fc.weight"].shape)
    _assert_zero_after_every_step(other, opt, masks, 30)


def test_passing_the_optimizer_masks_a_dense_warmup_momentum_buffer():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    _train(model, opt, 5)  # dense warm-up: non-zero momentum everywhere
    masks = make_masks(rand_scores(model), 0.9)
    bufs = {k: opt.state[p]["momentum_buffer"] for k, p in model.named_parameters() if k in masks}
    assert all((b[~masks[k]] != 0).any() for k, b in bufs.items())
    apply_masks(model, masks, optimizer=opt)
    assert all((b[~masks[k]] == 0).all() for k, b in bufs.items())
    _assert_zero_after_every_step(model, opt, masks, 50)


def test_masks_follow_a_model_moved_after_masking():
    model = tiny()
    masks = make_masks(rand_scores(model), 0.8)
    apply_masks(model, masks)
    model.to(torch.float64)  # in place: the same parameters with new storage, as a device move does
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        opt.zero_grad()
        model(torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64)).sum().backward()
        opt.step()
        assert (_pruned_values(model, masks) == 0).all()
    if torch.cuda.is_available():
        model.cuda()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(5):
            opt.zero_grad()
            model(torch.randn(4, 3, 16, 16, device="cuda", dtype=torch.float64)).sum().backward()
            opt.step()
            assert (_pruned_values(model, masks).cpu() == 0).all()


@pytest.mark.slow
def test_masks_hold_when_training_a_compiled_model(monkeypatch, tmp_path):
    # a fresh inductor cache: torch's cache key leaves out ATEN_CPU_CAPABILITY, so code compiled
    # under AVX2 kernels and reused under tests/alt_kernels.env fails to compile (torch 2.14)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model = tiny()
    masks = make_masks(rand_scores(model), 0.8)
    apply_masks(model, masks)
    compiled = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    _assert_zero_after_every_step(model, opt, masks, 5, forward=compiled)


def test_remove_masks_frees_the_weights_again():
    model = tiny()
    masks = make_masks(rand_scores(model), 0.8)
    apply_masks(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _assert_zero_after_every_step(model, opt, masks, 2)
    assert fts_core.masks.is_masked(model)
    remove_masks(model)
    assert not fts_core.masks.is_masked(model)
    _train(model, opt, 2)
    assert (_pruned_values(model, masks) != 0).any()


def test_nan_gradient_cannot_leak_into_pruned_entries():
    model = tiny()
    masks = make_masks(rand_scores(model), 0.5)
    apply_masks(model, masks)
    w = model.fc.weight
    (w * torch.full_like(w, float("inf"))).sum().backward()  # grad = inf everywhere
    assert (w.grad[~masks["fc.weight"]] == 0).all()


def test_reapply_and_remove_masks():
    model = tiny()
    m1 = make_masks(rand_scores(model, 1), 0.5)
    m2 = make_masks(rand_scores(model, 2), 0.5)
    apply_masks(model, m1)
    apply_masks(model, m2)  # replaces the hooks of m1
    assert len(model._fts_mask_handles) == len(m2)
    model(X).sum().backward()
    g = model.fc.weight.grad
    assert (g[~m2["fc.weight"]] == 0).all()
    old = remove_masks(model)
    assert old is not None and not hasattr(model, "fts_masks")
    model.zero_grad()
    model(X).sum().backward()
    assert (model.fc.weight.grad[~m2["fc.weight"]] != 0).any()  # hooks are gone


def test_apply_masks_bad_input():
    model = tiny()
    with pytest.raises(ValueError, match="'nope.weight'"):
        apply_masks(model, {"nope.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        apply_masks(model, {"fc.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool"):
        apply_masks(model, {"fc.weight": torch.ones_like(model.fc.weight)})


# ------------------------------------------------------------------ reports
def test_layer_density_and_summary():
    model = tiny()
    masks = make_masks(rand_scores(model), 0.5, scope="layer")
    dens = layer_density(masks)
    assert list(dens) == list(masks)
    for k, m in masks.items():
        assert dens[k] == pytest.approx(round(0.5 * m.numel()) / m.numel())
    apply_masks(model, masks)
    assert layer_density(model) == dens
    remove_masks(model)
    assert layer_density(model) == dens  # from the zeros of the weights
    s = mask_summary(masks)
    assert s["kept"] == sum(int(m.sum()) for m in masks.values())
    assert s["total"] == sum(m.numel() for m in masks.values())
    assert s["density"] == pytest.approx(s["kept"] / s["total"])


def test_collapse_empty_layer_is_detected():
    model = tiny()
    masks = make_masks(rand_scores(model), 0.5)
    assert list(collapsed_layers(masks)) == [] and collapsed_layers(masks).path_exists is None
    masks["conv2.weight"] = torch.zeros_like(masks["conv2.weight"])
    rep = collapsed_layers(masks, model, input_shape=INPUT)
    assert rep == ["conv2.weight"] and rep.empty_layers == ["conv2.weight"]
    assert rep.path_exists is False and rep.collapsed
    assert set(rep.effective_density.values()) == {0.0}
    assert rep.to_dict()["collapsed"] is True


def test_collapse_without_empty_layer_no_path_hand_made():
    """conv1 keeps only output channel 0; conv2 keeps only weights reading input channel 1:
    no layer is empty, yet no input->output path remains."""
    model = tiny()
    masks = {k: torch.zeros_like(p, dtype=torch.bool) for k, p in prunable_parameters(model).items()}
    masks["conv1.weight"][0] = True
    masks["conv2.weight"][:, 1] = True
    masks["fc.weight"][:] = True
    rep = collapsed_layers(masks, model, input_shape=INPUT)
    assert list(rep) == [] and rep.path_exists is False and rep.collapsed
    # connect them: conv2 also reads channel 0 (output channel 3 only)
    masks["conv2.weight"][3, 0] = True
    rep = collapsed_layers(masks, model, input_shape=INPUT)
    assert rep.path_exists is True and not rep.collapsed
    eff = rep.effective_density
    # on-path weights: conv1 channel 0 (27 of 108); conv2 [3, 0] (9 of 216);
    # fc: the 16 columns fed by conv2's channel 3, all 8 rows (128 of 768)
    assert eff["conv1.weight"] == pytest.approx(27 / 108)
    assert eff["conv2.weight"] == pytest.approx(9 / 216)
    assert eff["fc.weight"] == pytest.approx(128 / 768)


def test_collapse_masked_bn_scale_cuts_the_path():
    model = tiny()
    masks = {k: torch.ones_like(p, dtype=torch.bool) for k, p in prunable_parameters(model).items()}
    masks["bn2.weight"] = torch.zeros(6, dtype=torch.bool)
    rep = collapsed_layers(masks, model, input_shape=INPUT)
    assert rep == ["bn2.weight"] and rep.path_exists is False
    masks["bn2.weight"][2] = True
    rep = collapsed_layers(masks, model, input_shape=INPUT)
    assert rep.path_exists is True and rep.effective_density["bn2.weight"] == pytest.approx(1 / 6)


def test_collapse_check_leaves_the_model_unchanged_and_uses_applied_masks():
    model = tiny()
    masks = make_masks(rand_scores(model), 0.9)
    apply_masks(model, masks)
    before = copy.deepcopy(model.state_dict())
    rep = collapsed_layers(model, input_shape=INPUT)
    assert rep.path_exists is True
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(model._fts_mask_handles) == len(masks)


def test_collapse_on_real_models():
    # VGG19: keeping only the first half of the weights (all tied) empties the last layers
    model = fts_core.build_model("vgg19", width=0.125)
    pp = prunable_parameters(model)
    masks = make_masks({k: torch.ones_like(p) for k, p in pp.items()}, 0.5)
    rep = collapsed_layers(masks, model)
    assert rep.path_exists is False and len(rep) > 0
    rep = collapsed_layers(make_masks(rand_scores(model), 0.9), model)
    assert rep.path_exists is True and list(rep) == []
    # ResNet18: an empty layer inside an identity block is bridged by the identity shortcut ...
    model = fts_core.build_model("resnet18", width=0.125)
    masks = make_masks(rand_scores(model), 0.5)
    masks["layer4.1.conv1.weight"][:] = False
    rep = collapsed_layers(masks, model)
    assert rep == ["layer4.1.conv1.weight"] and rep.path_exists is True and rep.collapsed
    assert rep.effective_density["layer4.1.conv2.weight"] == 0.0  # kept but on no path
    # ... but emptying a downsampling block's conv branch and its 1x1 shortcut cuts every path
    masks["layer3.0.conv2.weight"][:] = False
    masks["layer3.0.shortcut.0.weight"][:] = False
    assert collapsed_layers(masks, model).path_exists is False


# ------------------------------------------------------------------ ablations
def test_shuffle_masks_keeps_layer_counts_and_changes_positions():
    masks = make_masks(rand_scores(tiny()), 0.7)
    sh = shuffle_masks(masks, seed=3)
    assert layer_density(sh) == layer_density(masks)
    assert any(not torch.equal(sh[k], masks[k]) for k in masks)
    assert all(torch.equal(a, b) for a, b in zip(sh.values(), shuffle_masks(masks, seed=3).values()))
    assert any(not torch.equal(a, b) for a, b in zip(sh.values(), shuffle_masks(masks, seed=4).values()))


def test_reinit_kept_redraws_kept_weights_from_the_default_init():
    model = tiny()
    masks = make_masks(rand_scores(model), 0.5)
    apply_masks(model, masks)
    old = {k: p.detach().clone() for k, p in model.named_parameters()}
    rng_state = torch.get_rng_state()
    reinit_kept(model, masks, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_state)  # global RNG untouched
    params = dict(model.named_parameters())
    for k, m in masks.items():
        w = params[k].detach()
        assert (w[~m] == 0).all()
        assert not torch.equal(w[m], old[k][m])
        # default init of Conv/Linear: U(-b, b), b = 1/sqrt(fan_in)
        fan_in = w[0].numel()
        assert w.abs().max() <= 1 / math.sqrt(fan_in) + 1e-7
    for k in ("conv1.bias", "bn1.weight", "linear.weight"):
        assert torch.equal(params[k], old[k])
    again = tiny()
    apply_masks(again, masks)
    reinit_kept(again, masks, seed=7)
    assert all(torch.equal(params[k], dict(again.named_parameters())[k]) for k in masks)


def test_invert_scores_keeps_the_lowest():
    scores = rand_scores(tiny())
    inv = make_masks(invert_scores(scores), 0.8)
    assert torch.cat([s[inv[k]] for k, s in scores.items()]).max() < torch.cat(
        [s[~inv[k]] for k, s in scores.items()]).min()


def test_deepcopy_does_not_carry_hooks_and_copy_operations_leave_the_original_enforced():
    model = tiny()
    masks = make_masks(rand_scores(model), 0.6)
    apply_masks(model, masks)
    twin = copy.deepcopy(model)
    assert twin.fts_masks.keys() == masks.keys()  # the masks travel, the hooks do not (documented)
    remove_masks(twin)
    apply_masks(twin, masks)
    collapsed_layers(model, input_shape=INPUT)  # works on a copy internally
    model(X).sum().backward()
    assert (model.fc.weight.grad[~masks["fc.weight"]] == 0).all()
    twin(X).sum().backward()
    assert (twin.fc.weight.grad[~masks["fc.weight"]] == 0).all()


def test_all_weights_rule_selects_every_weight_matrix_and_masks_hold_in_training():
    torch.manual_seed(0)
    model = every_kind_model()
    params = prunable_parameters(model, "all_weights")
    assert set(params) == {
        "emb.weight", "bag.weight", "conv.weight", "deconv.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
        "gru_cell.weight_ih", "gru_cell.weight_hh", "attn.in_proj_weight", "attn.out_proj.weight", "bil.weight",
        "linear.weight"}
    assert set(prunable_parameters(model)) == {"conv.weight", "attn.out_proj.weight"}  # the default rule
    ids, y = torch.randint(0, 13, (6, 5)), torch.randint(0, 3, (6,))
    scores = fts_core.score("fts", model, [(ids, y)], prunable="all_weights")
    masks = fts_core.make_masks(scores, 0.8)
    fts_core.apply_masks(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(ids), y).backward()
        opt.step()
    for name, keep in masks.items():
        assert not params[name][~keep].any(), name
