"""fts_core.chapters.taylor: exact float64 Taylor quantities on tiny problems (fast: a few seconds)."""
import math

import pytest
import torch
import torch.nn.functional as F

from fts_core.chapters import taylor as T


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    x, y, xe, ye = T.load_digits_arrays(n_train=96, n_test=32, seed=0)
    return x, y


def _model(activation="tanh", hidden=(6,), seed=0, steps=0, data=None):
    m = T.make_mlp(64, hidden, 10, activation, seed=seed)
    if steps:
        T.train_full_batch(m, *data, steps=steps, lr=0.1)
    return m


def _full_hessian(m, x, y, names):
    f = T._loss_of_flat(m, names, x, y)
    theta = T.flatten(T._params(m), names)
    return torch.autograd.functional.hessian(f, theta)


def test_digits_split_is_stratified_float64_and_standardised(digits):
    x, y = digits
    assert x.dtype == torch.float64 and x.shape == (96, 64) and y.dtype == torch.int64
    assert abs(float(x.mean())) < 1e-12 and abs(float(x.std(unbiased=False)) - 1) < 1e-12
    assert torch.bincount(y, minlength=10).min() >= 9  # stratified: ~9.6 per class
    with pytest.raises(ValueError, match="n_train"):
        T.load_digits_arrays(n_train=1700, n_test=200)


def test_hessian_diag_matches_dense_hessian(digits):
    x, y = digits
    m = _model("tanh", hidden=(4, 3), steps=5, data=digits)  # two hidden layers: generic path
    names = T.weight_names(m)
    dense = _full_hessian(m, x, y, names)
    hd = T.hessian_diag(m, x, y, names, chunk_size=7)
    assert torch.allclose(hd, dense.diagonal(), rtol=1e-10, atol=1e-13)
    idx = torch.tensor([0, 5, hd.numel() - 1])
    assert torch.allclose(T.hessian_diag(m, x, y, names, index=idx), dense.diagonal()[idx])


def test_fisher_and_gradient_match_explicit_per_sample_loops(digits):
    x, y = digits
    x, y = x[:12], y[:12]
    m = _model("tanh", hidden=(5,), steps=3, data=digits)
    names = T.weight_names(m)
    fg = T.fisher_and_gradient(m, x, y, names, chunk_size=5)
    per, true_f = [], torch.zeros_like(fg["grad"])
    for xi, yi in zip(x, y):
        def g_of(label):
            m.zero_grad()
            F.cross_entropy(m(xi[None]), label.view(1)).backward()
            return T.flatten({n: p.grad for n, p in m.named_parameters()}, names).clone()
        per.append(g_of(yi))
        with torch.no_grad():
            p = torch.softmax(m(xi[None]), -1)[0]
        for c in range(10):  # true Fisher: labels drawn from the model, exact expectation
            true_f += p[c] * g_of(torch.tensor(c)) ** 2
    per = torch.stack(per)
    assert torch.allclose(fg["grad"], per.mean(0), atol=1e-14)
    assert torch.allclose(fg["fisher"], (per**2).mean(0), atol=1e-14)
    assert torch.allclose(fg["true_fisher"], true_f / len(x), atol=1e-14)
    assert bool((fg["fisher"] >= fg["grad"] ** 2 - 1e-15).all())  # Jensen: F̂ >= ĝ²


def test_relu_hessian_diagonal_equals_true_fisher_exactly(digits):
    """Piecewise-linear nets: each logit is linear in any single weight, so H_ii = GGN_ii = F_ii."""
    x, y = digits
    m = _model("relu", hidden=(6,), steps=10, data=digits)
    q = T.taylor_quantities(m, x, y, method="autograd")
    assert torch.allclose(q.hessian, q.true_fisher, rtol=1e-9, atol=1e-14)
    t = T.taylor_quantities(_model("tanh", hidden=(6,)), x, y, method="autograd")
    assert not torch.allclose(t.hessian, t.true_fisher, rtol=1e-3)  # smooth nets: not equal


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_closed_form_equals_autograd(digits, activation):
    x, y = digits
    m = _model(activation, hidden=(6,), steps=7, data=digits)
    a = T.taylor_quantities(m, x, y, method="autograd", num_probes=3)
    b = T.taylor_quantities(m, x, y, method="closed_form", num_probes=3)
    for k in ("theta", "grad", "fisher", "true_fisher", "hessian", "delta_loss", "hutchinson"):
        va, vb = getattr(a, k), getattr(b, k)
        assert torch.allclose(va, vb, rtol=1e-9, atol=1e-12 * float(va.abs().max())), k
    with pytest.raises(ValueError, match="closed_form"):
        T.taylor_quantities(_model(hidden=(3, 3)), x, y, method="closed_form")


def test_removal_change_is_the_loss_of_the_zeroed_network(digits):
    x, y = digits
    m = _model("tanh", hidden=(5,), steps=4, data=digits)
    names = T.weight_names(m)
    idx = torch.tensor([3, 77, 320, 349])
    dl = T.removal_loss_change(m, x, y, names, index=idx)
    base = T.mean_loss(m, x, y)
    flat = T.flatten(T._params(m), names)
    for i, d in zip(idx.tolist(), dl.tolist()):
        m2 = _model("tanh", hidden=(5,), steps=4, data=digits)
        v = flat.clone()
        v[i] = 0.0
        with torch.no_grad():
            for n, t in T.unflatten(v, T._params(m2), names).items():
                dict(m2.named_parameters())[n].copy_(t)
        assert math.isclose(T.mean_loss(m2, x, y) - base, d, rel_tol=1e-9, abs_tol=1e-15)


def test_second_order_taylor_predicts_small_removals(digits):
    """Shrinking θ_i by a factor t: the loss change tends to −tθg + ½t²θ²H (error O(t³))."""
    x, y = digits
    m = _model("tanh", hidden=(5,), steps=4, data=digits)
    names = T.weight_names(m)
    q = T.taylor_quantities(m, x, y, names, method="autograd")
    f = T._loss_of_flat(m, names, x, y)
    base = float(f(q.theta))
    i = int(q.delta_loss.abs().argmax())
    errs = []
    for t in (1e-1, 5e-2):
        v = q.theta.clone()
        v[i] *= 1 - t
        actual = float(f(v)) - base
        pred = float(-t * q.theta[i] * q.grad[i] + 0.5 * t**2 * q.theta[i] ** 2 * q.hessian[i])
        errs.append(abs(actual - pred))
    assert errs[1] < errs[0] / 6  # third-order remainder: halving t divides the error by ~8


def test_scores_from_quantities_and_spearman_table(digits):
    x, y = digits
    m = _model("tanh", hidden=(6,), data=digits)
    q = T.taylor_quantities(m, x, y)
    s = T.scores_from_quantities(q)
    assert set(s) == set(T.VARIANTS)
    th, g, f = q.theta, q.grad, q.fisher
    assert torch.allclose(s["fts"], (th * g + 0.5 * th**2 * f).abs())
    assert torch.allclose(s["fts_removal"], (-th * g + 0.5 * th**2 * f).abs())
    # FBSS = predicted increase when the other weights take a diagonal Newton step (+ const)
    assert torch.allclose(s["fbss"], -th * g + 0.5 * f * th**2 + g**2 / (2 * f), rtol=1e-8)
    tab = T.spearman_table(q)
    assert tab["taylor2_exact"]["abs"] > 0.9  # the exact diagonal second order ranks well
    assert math.isnan(tab["fbss"]["signed"]) and not math.isnan(tab["snip"]["signed"])
    with pytest.raises(ValueError, match="unknown criteria"):
        T.spearman_table(q, ["nope"])


def test_stats_helpers():
    a = torch.arange(10.0)
    assert T.spearman(a, a**3) == pytest.approx(1.0)
    assert T.spearman(a, -a) == pytest.approx(-1.0)
    assert T.topk_overlap(a, a, 0.3) == 1.0
    assert T.topk_overlap(a, -a, 0.3) == 0.0
    with pytest.raises(ValueError, match="keep_fraction"):
        T.topk_overlap(a, a, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        T.spearman(a, a[:3])


def test_bad_inputs_are_named(digits):
    x, y = digits
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        T.make_mlp(activation="gelu")
    m = _model()
    with pytest.raises(ValueError, match="nope.weight"):
        T.hessian_diag(m, x, y, ["nope.weight"])
    with pytest.raises(ValueError, match="method"):
        T.taylor_quantities(m, x, y, method="fast")


def test_trajectory_is_deterministic(digits):
    x, y = digits
    a = T.trajectory(x, y, steps=(0, 3), seed=2, hidden=(5,), num_probes=2)
    b = T.trajectory(x, y, steps=(0, 3), seed=2, hidden=(5,), num_probes=2)
    assert [c["step"] for c in a] == [0, 3]
    assert a[1]["loss"] < a[0]["loss"]
    assert torch.equal(a[1]["quantities"].delta_loss, b[1]["quantities"].delta_loss)


# ------------------------------------------------------------------ cross-check with the scorer
criteria = pytest.importorskip("fts_core.scoring")


@pytest.mark.parametrize(
    "name, opts, ours",
    [
        ("snip", {}, "snip"),
        ("fisher_pruning", {}, "fisher_pruning"),
        ("fts", {}, "fts"),
        ("fts", {"sign": "-"}, "fts_removal"),
        ("fbss", {"damping": 1e-12}, "fbss"),
    ],
)
def test_float64_formulas_agree_with_fts_core_score(digits, name, opts, ours):
    x, y = digits
    m = _model("tanh", hidden=(6,), steps=5, data=digits)
    q = T.taylor_quantities(m, x, y)
    prunable = {n: dict(m.named_parameters())[n] for n in q.names}
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, len(x), 32)]
    lib = criteria.score(name, m, batches, prunable=prunable, **opts)
    assert torch.allclose(T.flatten(lib, q.names), T.scores_from_quantities(q, fbss_eps=1e-12)[ours], rtol=1e-9, atol=1e-18)


def test_fts_core_hutchinson_converges_to_the_exact_hessian_diagonal(digits):
    x, y = digits
    m = _model("tanh", hidden=(4,), steps=3, data=digits)
    names = T.weight_names(m)
    prunable = {n: dict(m.named_parameters())[n] for n in names}
    lib = criteria.score("hutchinson_diag", m, [(x, y)], prunable=prunable, probes=3000, temperature=1.0, seed=0)
    exact = T.hessian_diag(m, x, y, names)
    rel = float((T.flatten(lib, names) - exact).norm() / exact.norm())
    assert rel < 0.1, rel
