"""Every criterion against a plain batch-size-1 reference (float64 and float32), SynFlow's
iterative mask, Hutchinson's convergence, and bad input."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import fts_core
from fts_core.scoring import CRITERIA, check_scoring, curvature, score
from fts_core.scoring.samples import select as _select
from fts_core.masks import make_masks, prunable_parameters
from small_models import bn_model, image_batches  # tests/small_models.py

torch.set_num_threads(1)
F = nn.functional
T_GRASP, T_HUTCH, PROBES = 1.0, 200.0, 3


def _model(name, dtype=torch.float64):
    return bn_model(name, dtype)


def _data(name, n=8, dtype=torch.float64):
    return image_batches(name, n, 5, dtype)


# --------------------------------------------------------------------------- plain reference
def _sample_grads(model, params, x, y, temperature=1.0, create_graph=False):
    loss = F.cross_entropy(model(x) / temperature, y)
    return torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)


def _reference_scores(model, params, batches, seed=0):
    """Every criterion from textbook formulas, one sample at a time (no code shared with fts_core)."""
    names = list(params)
    samples = [(x[i:i + 1], y[i:i + 1]) for x, y in batches for i in range(x.shape[0])]
    n = len(samples)

    def mean_grad(t):
        acc = [torch.zeros_like(p) for p in params.values()]
        for x, y in samples:
            for a, g in zip(acc, _sample_grads(model, params, x, y, t)):
                a += g / n
        return acc

    g1 = mean_grad(1.0)
    fisher = [torch.zeros_like(p) for p in params.values()]
    for x, y in samples:
        for f, g in zip(fisher, _sample_grads(model, params, x, y)):
            f += g * g / n
    # GraSP (Wang et al. and the authors' code): g and H g over ALL parameters (biases, BatchNorm,
    # classifier included), then the prunable entries of H g. H g of the mean loss = mean of H_i g.
    everything = dict(model.named_parameters())
    g_all = [torch.zeros_like(p) for p in everything.values()]
    for x, y in samples:
        for a, g in zip(g_all, _sample_grads(model, everything, x, y, T_GRASP)):
            a += g / n
    hg_all = [torch.zeros_like(p) for p in everything.values()]
    for x, y in samples:
        gs = _sample_grads(model, everything, x, y, T_GRASP, create_graph=True)
        hv = torch.autograd.grad(sum((a * b).sum() for a, b in zip(gs, g_all)), list(everything.values()))
        for a, h in zip(hg_all, hv):
            a += h / n
    hg = [dict(zip(everything, hg_all))[k] for k in names]
    # Hutchinson with the documented probe order: per batch, per probe, one randint per parameter
    gen = torch.Generator().manual_seed(seed)
    hut = [torch.zeros_like(p) for p in params.values()]
    for x, y in batches:
        probes = [[torch.randint(0, 2, p.shape, generator=gen, dtype=p.dtype) * 2 - 1 for p in params.values()]
                  for _ in range(PROBES)]
        for i in range(x.shape[0]):
            gs = _sample_grads(model, params, x[i:i + 1], y[i:i + 1], T_HUTCH, create_graph=True)
            for z in probes:
                hz = torch.autograd.grad(sum((a * b).sum() for a, b in zip(gs, z)), list(params.values()),
                                         retain_graph=True)
                for a, zz, h in zip(hut, z, hz):
                    a += zz * h / (n * PROBES)
    gH = mean_grad(T_HUTCH)
    th = [p.detach() for p in params.values()]
    ref = {
        "magnitude": [t.abs() for t in th],
        "grad_norm": [g.abs() for g in g1],
        "snip": [(t * g).abs() for t, g in zip(th, g1)],
        "grasp": [-t * h for t, h in zip(th, hg)],
        "fisher_diag": fisher,
        "fisher_pruning": [0.5 * t ** 2 * f for t, f in zip(th, fisher)],
        "fts": [(t * g + 0.5 * t ** 2 * f).abs() for t, g, f in zip(th, g1, fisher)],
        "fbss": [0.5 * (f + 1e-30) * (t - g / (f + 1e-30)) ** 2 for t, g, f in zip(th, g1, fisher)],
        "hutchinson_diag": hut,
        "hutchinson_pruning": [0.5 * t ** 2 * h for t, h in zip(th, hut)],
        "hts": [(t * g + 0.5 * t ** 2 * h).abs() for t, g, h in zip(th, gH, hut)],
    }
    model.zero_grad(set_to_none=True)
    return {k: dict(zip(names, v)) for k, v in ref.items()}


def _rel(a, b):
    """Relative error of the whole score vector (concatenated layers)."""
    fa = torch.cat([a[n].reshape(-1).double() for n in b])
    fb = torch.cat([b[n].reshape(-1).double() for n in b])
    return ((fa - fb).norm() / fb.norm()).item()


DATA_CRITERIA = ["grad_norm", "snip", "grasp", "fisher_diag", "fisher_pruning", "fts", "fbss",
                 "hutchinson_diag", "hutchinson_pruning", "hts"]


def _opts(c):
    return {"probes": PROBES} if c in ("hutchinson_diag", "hutchinson_pruning", "hts") else {}


@pytest.mark.parametrize("name", ["resnet18", "vgg19"])
def test_every_criterion_matches_reference_float64(name):
    model = _model(name)
    batches = _data(name)
    rule = "authors"  # includes BatchNorm scales under VGG's naming: exercises every layer kind
    params = prunable_parameters(model, rule)
    ref = _reference_scores(model, params, batches)
    for c in ["magnitude", *DATA_CRITERIA]:
        strategies = ("loop", "hooks", "vmap") if CRITERIA[c].per_sample else ("auto",)
        for strategy in strategies:
            got = score(c, model, batches, prunable=rule, strategy=strategy, **_opts(c))
            assert list(got) == list(params)
            assert all(got[n].shape == p.shape for n, p in params.items())
            assert _rel(got, ref[c]) <= 1e-10, (c, strategy, _rel(got, ref[c]))
    # the reference tells the full product (H g)_P from the prunable block alone (H_PP g_P),
    # the restricted GraSP an earlier version computed: they differ at O(1), not at round-off
    _, hg_pp = curvature.grasp_hg(model, params, batches, temperature=T_GRASP, wrt=params)
    restricted = {n: -p.detach() * hg_pp[n] for n, p in params.items()}
    assert _rel(restricted, ref["grasp"]) > 0.1


@pytest.mark.parametrize("name", ["resnet18", "vgg19"])
def test_every_criterion_float32_matches_float64_reference(name):
    # float32 scores against the float64 reference on the SAME weights and inputs (the float32
    # model cast to float64). Measured: every criterion and strategy is within 3e-6 (FBSS, whose
    # ĝ/F̂ amplifies rounding where F̂ is small, is the worst, ~3e-6; the others ~1e-7-4e-7).
    model = _model(name, torch.float32)
    model64 = copy.deepcopy(model).double()
    batches = _data(name, dtype=torch.float32)
    batches64 = [(x.double(), y) for x, y in batches]
    ref = _reference_scores(model64, prunable_parameters(model64, "authors"), batches64)
    for c in ["magnitude", *DATA_CRITERIA]:
        strategies = ("loop", "hooks", "vmap") if CRITERIA[c].per_sample else ("auto",)
        for strategy in strategies:
            got = score(c, model, batches, prunable="authors", strategy=strategy, **_opts(c))
            assert got[next(iter(got))].dtype == torch.float32
            assert _rel(got, ref[c]) <= 1e-4, (c, strategy, _rel(got, ref[c]))


def test_options_switch_conventions():
    model = _model("resnet18")
    batches = _data("resnet18")
    a = score("grasp", model, batches)
    b = score("grasp", model, batches, convention="reference")
    assert all(torch.equal(a[n], -b[n]) for n in a)
    plus = score("fts", model, batches, absolute=False)
    minus = score("fts", model, batches, sign="-", absolute=False)
    snip = score("snip", model, batches)
    fp = score("fisher_pruning", model, batches)
    for n in plus:  # (+) - (-) = 2 θĝ;  (+) + (-) = θ²F̂
        torch.testing.assert_close((plus[n] - minus[n]).abs(), 2 * snip[n], rtol=1e-9, atol=1e-300)
        # θĝ ≫ θ²F̂ at init: the sum cancels, so the tolerance is relative to |θĝ|
        torch.testing.assert_close(plus[n] + minus[n], 2 * fp[n], rtol=0, atol=1e-13 * float(snip[n].max()))
    hot = score("grasp", model, batches, temperature=200.0)
    assert _rel(hot, a) > 1e-3  # temperature really changes GraSP


def test_random_scores_reproducible_and_data_free():
    model = _model("vgg19", torch.float32)
    a = score("random", model, None, seed=3)
    b = score("random", model, None, seed=3)
    c = score("random", model, None, seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)
    assert all(bool(((v >= 0) & (v < 1)).all()) for v in a.values())


# --------------------------------------------------------------------------- SynFlow
def _synflow_reference(model, names, shape, sparsity, rounds):
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            t.abs_()
    params = dict(net.named_parameters())
    orig = {n: params[n].detach().clone() for n in names}
    mask = {n: torch.ones_like(orig[n], dtype=torch.bool) for n in names}
    total = sum(v.numel() for v in orig.values())
    for r in range(1, rounds + 1):
        with torch.no_grad():
            for n in names:
                params[n].copy_(orig[n] * mask[n])
        net.zero_grad()
        net(torch.ones(1, *shape, dtype=torch.float64)).sum().backward()
        sc = np.concatenate([(params[n].grad * params[n]).abs().detach().reshape(-1).numpy() for n in names])
        prev = np.concatenate([mask[n].reshape(-1).numpy() for n in names])
        sc[~prev] = -1.0
        keep_n = round((1 - sparsity) ** (r / rounds) * total)
        order = np.argsort(-sc, kind="stable")
        keep = np.zeros(total, dtype=bool)
        keep[order[:keep_n]] = True
        start = 0
        for n in names:
            k = orig[n].numel()
            mask[n] = torch.from_numpy(keep[start:start + k].copy()).view(orig[n].shape)
            start += k
    return mask


@pytest.mark.parametrize("name", ["resnet18", "vgg19"])
def test_synflow_scores_reproduce_iterative_mask(name):
    model = _model(name, torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = _data(name, dtype=torch.float32)
    s, rounds = 0.95, 6
    scores = score("synflow", model, batches, sparsity=s, rounds=rounds)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    masks = make_masks(scores, s)
    ref = _synflow_reference(model, list(scores), tuple(batches[0][0].shape[1:]), s, rounds)
    for n in scores:
        assert torch.equal(masks[n], ref[n]), n
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round((1 - s) * sum(m.numel() for m in masks.values()))
    # earlier-pruned weights sit at -1, all others >= 0
    assert all(bool(((v == -1) | (v >= 0)).all()) for v in scores.values())
    # data-free: input_shape instead of data gives the same scores
    alt = score("synflow", model, None, sparsity=s, rounds=rounds, input_shape=batches[0][0].shape[1:])
    assert all(torch.equal(alt[n], scores[n]) for n in scores)


def test_synflow_needs_sparsity():
    with pytest.raises(ValueError, match="sparsity"):
        score("synflow", _model("resnet18"), _data("resnet18"))


# --------------------------------------------------------------------------- Hutchinson
def test_hutchinson_converges_to_exact_hessian_diagonal():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(),
                          nn.Linear(12, 4, bias=False), nn.Tanh(), nn.Linear(4, 3)).double().eval()
    prunable = {"0.weight": model[0].weight, "4.weight": model[4].weight}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=g)
    data = [(x, y)]
    # exact diagonal: one Hessian-vector product per unit vector
    plist = list(prunable.values())
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, plist, create_graph=True)
    flat = torch.cat([gg.reshape(-1) for gg in grads])
    rows = [torch.cat([r.reshape(-1) for r in torch.autograd.grad(flat[i], plist, retain_graph=True)])
            for i in range(flat.numel())]
    exact = torch.stack([row[i] for i, row in enumerate(rows)])
    errors = {}
    for k in (4, 64, 1024):
        est = score("hutchinson_diag", model, data, prunable=prunable, probes=k, temperature=1.0, seed=1)
        e = torch.cat([est[n].reshape(-1) for n in prunable])
        errors[k] = ((e - exact).norm() / exact.norm()).item()
    # E||Ĥ_K - diag H||² = (1/K) Σ_i Σ_{j≠i} H_ij² (Rademacher): the error shrinks like 1/sqrt(K)
    hess = torch.stack(rows)
    offdiag = (hess - torch.diag(exact)).norm().item()
    for k, err in errors.items():
        expected = offdiag / (k ** 0.5) / exact.norm().item()
        assert 0.3 * expected < err < 2.0 * expected, (k, err, expected)
    assert errors[1024] < errors[64] < errors[4] and errors[4] / errors[1024] > 6  # 16 expected


# --------------------------------------------------------------------------- data and bad input
def test_subset_selection_reproducible_and_balanced():
    x = torch.arange(40.0).view(40, 1)
    y = torch.arange(40) % 4
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    a = _select(batches, None, 3, seed=0, batch_size=5)
    b = _select(batches, None, 3, seed=0, batch_size=5)
    c = _select(batches, None, 3, seed=1, batch_size=5)
    ya = torch.cat([t[1] for t in a])
    assert torch.bincount(ya).tolist() == [3, 3, 3, 3] and [t[0].shape[0] for t in a] == [5, 5, 2]
    assert torch.equal(torch.cat([t[0] for t in a]), torch.cat([t[0] for t in b]))
    assert not torch.equal(torch.cat([t[0] for t in a]), torch.cat([t[0] for t in c]))
    n = _select(batches, 7, None, seed=0, batch_size=16)
    assert sum(t[0].shape[0] for t in n) == 7 and len(set(torch.cat([t[0] for t in n]).flatten().tolist())) == 7
    net = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 4))  # score()'s one check refuses subsets that do not fit the data
    with pytest.raises(ValueError, match=r"per_class=11: class 0 of the scoring data has only 10 samples"):
        check_scoring("snip", net, labels=y, per_class=11)
    with pytest.raises(ValueError, match=r"num_samples=41: must be an integer in \[1, 40\]"):
        check_scoring("snip", net, labels=y, num_samples=41)
    with pytest.raises(ValueError, match=r"config score_samples=41: must be"):  # in the caller's words
        check_scoring("snip", net, labels=y, num_samples=41, spelled={"num_samples": "config score_samples"})
    with pytest.raises(ValueError, match=r"num_samples=3 and per_class=2: give at most one"):
        score("snip", net, batches, num_samples=3, per_class=2)


def test_score_with_subset_equals_score_on_that_subset():
    model = _model("resnet18")
    batches = _data("resnet18", n=12)
    sub = score("fts", model, batches, num_samples=5, seed=2)
    chosen = _select(batches, 5, None, seed=2, batch_size=5)
    direct = score("fts", model, chosen)
    assert _rel(sub, direct) < 1e-12


def test_model_left_unmodified_in_train_mode():
    model = _model("resnet18")
    model.train()
    model.layer1.eval()  # mixed flags must come back exactly
    model.conv1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    score("fts", model, _data("resnet18"), bn_mode="eval")  # per-sample: explicit consent to eval BN
    for c in ["grasp", "hts", "synflow"]:
        opts = {"sparsity": 0.5, "rounds": 2} if c == "synflow" else _opts(c)
        score(c, model, _data("resnet18"), **opts)
    score("snip", model, _data("resnet18"), bn_mode="train")  # batch statistics: buffers restored
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.conv1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_bad_input_gives_clear_errors_and_modifies_nothing():
    model = _model("resnet18")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = _data("resnet18")
    with pytest.raises(ValueError, match="unknown criterion 'ftz'.*snip.*fts"):
        score("ftz", model, data)
    with pytest.raises(ValueError, match="empty"):
        score("fts", model, [], bn_mode="eval")
    bad = [(data[0][0], torch.full((5,), 10))]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\].*max 10"):
        score("snip", model, bad)
    with pytest.raises(ValueError, match=r"labels must lie"):
        score("snip", model, [(data[0][0], torch.full((5,), -1))])
    for mode in ("train", "as_is"):
        with pytest.raises(ValueError, match="per-sample.*BatchNorm.*bn_mode='eval'"):
            score("fts", model, data, bn_mode=mode)
    for c in ("fts", "fisher_diag", "fisher_pruning", "fbss"):  # default: never a silent switch
        with pytest.raises(ValueError, match=r"per-sample.*BatchNorm in train mode.*'bn1'.*"
                                             r'model\.eval\(\).*bn_mode="eval"'):
            score(c, model, data)
    with pytest.raises(ValueError, match="unknown option"):
        score("fts", model, data, temprature=2)
    with pytest.raises(ValueError, match="bn_mode"):
        score("fts", model, data, bn_mode="frozen")
    with pytest.raises(ValueError, match="no prunable"):
        score("fts", nn.Sequential(nn.BatchNorm2d(3)), data)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_default_bn_mode_scores_eval_models_and_equals_explicit_eval():
    model = _model("vgg19")
    data = _data("vgg19")
    ref = score("fts", model, data)  # eval model: accepted by the default
    model.train()
    assert all(torch.equal(ref[n], v) for n, v in score("fts", model, data, bn_mode="eval").items())
    # criteria without per-sample statistics score in eval mode by default, as before
    model.eval()
    snip_eval = score("snip", model, data)
    model.train()
    assert all(torch.equal(snip_eval[n], v) for n, v in score("snip", model, data).items())
    assert model.training


def test_label_check_and_selection_use_only_the_chosen_rows():
    model = _model("resnet18")
    x, y = torch.cat([b[0] for b in _data("resnet18", n=12)]), torch.cat([b[1] for b in _data("resnet18", n=12)])
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]
    picked = _select(batches, 5, None, seed=2, batch_size=3)
    idx = torch.sort(torch.randperm(12, generator=torch.Generator().manual_seed(2))[:5]).values
    assert [t[0].shape[0] for t in picked] == [3, 2]
    assert torch.equal(torch.cat([t[0] for t in picked]), x[idx]) and torch.equal(torch.cat([t[1] for t in picked]), y[idx])
    # an out-of-range label outside the chosen subset is still reported (all labels are checked)
    bad = [(x[:7], y[:7]), (x[7:], torch.full((5,), 10))]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\].*max 10"):
        score("snip", model, bad, num_samples=2)


def test_progress_bars_only_when_not_quiet(capsys):
    model = _model("resnet18")
    data = _data("resnet18")
    score("grasp", model, data)
    score("hutchinson_diag", model, data, probes=1)
    assert capsys.readouterr().err == ""
    score("grasp", model, data, quiet=False)
    score("hutchinson_diag", model, data, probes=1, quiet=False)
    err = capsys.readouterr().err
    assert "grasp: gradient" in err and "grasp: Hessian-gradient product" in err and "hutchinson" in err


def test_registry_is_the_public_one():
    assert fts_core.CRITERIA is CRITERIA
    assert set(CRITERIA) == {"random", "magnitude", "grad_norm", "snip", "grasp", "synflow", "fisher_diag",
                             "fisher_pruning", "fts", "fbss", "hutchinson_diag", "hutchinson_pruning", "hts"}


# --------------------------------------------------------------------------- the authors' conventions
def _dead_channel_model():
    """A float64 ResNet18 in eval mode whose first block's first BN has three dead channels
    (bias -100 after ReLU): the conv weights feeding them get exactly zero gradients, F̂ = 0."""
    model = _model("resnet18")
    with torch.no_grad():
        model.layer1[0].bn1.bias[:3] = -100.0
    return model


def test_fbss_authors_convention_is_nan_exactly_where_the_fisher_is_zero():
    model, batches = _dead_channel_model(), _data("resnet18")
    fisher = score("fisher_diag", model, batches)
    damped = score("fbss", model, batches)
    theirs = score("fbss", model, batches, convention="authors")
    zero = {n: f == 0 for n, f in fisher.items()}
    assert int(zero["layer1.0.conv1.weight"].sum()) == 3 * zero["layer1.0.conv1.weight"][0].numel()
    for n in fisher:
        assert torch.equal(torch.isnan(theirs[n]), zero[n]), n
        # elsewhere the same number as the textbook ½F(θ − g/F)² (and as the damped score)
        torch.testing.assert_close(theirs[n][~zero[n]], damped[n][~zero[n]], rtol=1e-9, atol=0)
        assert (damped[n][zero[n]] <= 1e-30).all()  # damped: ½εθ², ranked last
    # our rule refuses NaN and names the rule that ranks it; the authors' keeps NaN first
    with pytest.raises(ValueError, match="rounding='authors'"):
        make_masks(theirs, 0.9)
    n_nan = sum(int(z.sum()) for z in zero.values())
    total = sum(z.numel() for z in zero.values())
    assert 0 < n_nan < total
    few = 1 - ((total - n_nan) // 2) / total  # keeps fewer weights than there are with F̂ > 0
    theirs_few, ours_few = make_masks(theirs, few, rounding="authors"), make_masks(damped, few)
    assert all(bool(zero[n][theirs_few[n]].all()) for n in zero)  # the authors keep only F̂ = 0 weights
    assert not any(bool(zero[n][ours_few[n]].any()) for n in zero)  # ours none of them
    many = 1 - (n_nan + (total - n_nan) // 2) / total  # room for every NaN weight and some others
    kept = make_masks(theirs, many, rounding="authors")
    assert all(bool(kept[n][zero[n]].all()) for n in zero)
    assert sum(int(m.sum()) for m in kept.values()) == max(int((1 - many) * total), 1)


def _revision_synflow(model, names, shape, sparsity, rounds):
    """The 2026 revision's procedure, step by step: scores |θ ∂R/∂θ| on the linearised net,
    round r keeps max(floor((1 − sparsity^(r/n))·P), 1) by torch.topk, weights multiplied by
    each round's mask; returns the last round's mask."""
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            t.abs_()
    params = dict(net.named_parameters())
    mask = None
    for r in range(1, rounds + 1):
        net.zero_grad()
        net(torch.ones(1, *shape, dtype=next(net.parameters()).dtype)).sum().backward()
        flat = torch.cat([(params[n] * params[n].grad).abs().detach().reshape(-1) for n in names])
        k = max(int((1 - sparsity ** (r / rounds)) * flat.numel()), 1)
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[torch.topk(flat, k, sorted=False).indices] = True
        mask, start = {}, 0
        for n in names:
            mask[n] = keep[start:start + params[n].numel()].view(params[n].shape)
            start += params[n].numel()
        with torch.no_grad():
            for n in names:
                params[n].mul_(mask[n])
    return mask


def test_synflow_authors_convention_reproduces_the_revisions_schedule():
    model = _model("resnet18", torch.float32)
    shape, s, rounds = (3, 8, 8), 0.9, 10
    scores = score("synflow", model, None, sparsity=s, rounds=rounds, input_shape=shape, convention="authors",
                   prunable="authors")
    masks = make_masks(scores, s, rounding="authors")
    ref = _revision_synflow(model, list(scores), shape, s, rounds)
    assert all(torch.equal(masks[n], ref[n]) for n in scores)
    from fts_core.scoring.synflow import kept_per_round

    total = sum(v.numel() for v in scores.values())
    counts = kept_per_round(total, s, rounds, convention="authors")
    assert counts[0] == max(int((1 - s ** 0.1) * total), 1) and counts[0] < 0.011 * total  # ~1 %: not 90 %
    assert counts[-1] == int(0.1 * total)
    ours = kept_per_round(total, s, rounds)
    assert ours[0] > 0.7 * total and ours[-1] == round(0.1 * total)
