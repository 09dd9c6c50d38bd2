"""Fisher spectra (fts_core.chapters.spectrum): theory, exact dual route, matrix-free route agree."""
import math

import numpy as np
import pytest
import torch

from fts_core.chapters import spectrum as S


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def _dense_fisher(module, x, kind, y):
    """P x P Fisher (1/T) J^T B J from the full Jacobian (tiny models only)."""
    from torch.func import functional_call, jacrev

    params = {n: p.detach() for n, p in module.named_parameters()}
    jac = jacrev(lambda p: functional_call(module, p, (x,)))(params)
    T, C = x.shape[0], next(iter(jac.values())).shape[1]
    J = torch.cat([j.reshape(T, C, -1) for j in jac.values()], 2)
    A = S.output_factor(functional_call(module, params, (x,)), kind, y)
    E = torch.einsum("tcr,tcp->trp", A, J).reshape(-1, J.shape[2])
    return E.T @ E / T


@pytest.mark.parametrize("q1,q2", [(1.0, 0.0), (2.1, 0.7), (1.5, -0.5), (0.8, 0.79)])
def test_relu_closed_forms_match_quadrature(q1, q2):
    exact = S.gauss_expectations("relu", q1, q2)
    quad = S.gauss_expectations("relu", q1, q2, n_quad=120, closed_form=False)
    # the kink of ReLU makes tensor Gauss-Hermite converge slowly off the diagonal
    assert quad[0] == pytest.approx(exact[0], rel=1e-10) and quad[2] == pytest.approx(exact[2], rel=1e-10)
    assert quad[1] == pytest.approx(exact[1], rel=1e-2, abs=1e-4)
    assert quad[3] == pytest.approx(exact[3], abs=1e-2)


def test_quadrature_converges_for_a_smooth_activation():
    a = S.gauss_expectations("tanh", 1.3, 0.6, n_quad=80)
    b = S.gauss_expectations("tanh", 1.3, 0.6, n_quad=160)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert abs(S.gauss_expectations("tanh", 1.3, 0.0)[1]) < 1e-14  # odd phi, uncorrelated inputs


def test_mean_field_constants_and_negative_control():
    mf = S.mean_field([512] * 4 + [10], "relu", sigma_w2=2.0, sigma_b2=0.1)
    assert mf.alpha == pytest.approx(3.0)
    assert mf.kappa1 == pytest.approx(4.3 / 3)  # q~ = 1 at sigma_w^2 = 2, q^_1 = 1, 1.05, 1.1, 1.15
    assert 0.3 < mf.kappa2 < mf.kappa1
    odd = S.mean_field([512] * 4 + [10], "tanh", sigma_w2=2.0, bias=False)
    assert abs(odd.kappa2) < 1e-12 and odd.kappa1 > 0.1
    biased = S.mean_field([512] * 4 + [10], "tanh", sigma_w2=2.0, sigma_b2=0.1)
    assert biased.kappa2 > 1e-3
    pred = S.karakida_predictions([512] * 4 + [10], 32)
    # finite-width predictions approach the asymptotic forms
    assert pred["mean"] * 512 / 10 == pytest.approx(pred["kappa1"], rel=0.02)
    assert pred["top"] / (3 * 512) == pytest.approx((31 * pred["kappa2"] + pred["kappa1"]) / 32, rel=0.02)


@pytest.mark.parametrize("kind", S.FISHER_KINDS)
@pytest.mark.parametrize("activation,bias", [("relu", True), ("tanh", False)])
def test_dual_gram_gives_the_nonzero_fisher_eigenvalues(kind, activation, bias):
    torch.manual_seed(0)
    net = S.init_mlp([6, 9, 7, 4], activation, bias=bias, seed=3)
    x = torch.randn(5, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    K = S.mlp_dual_gram(net, x, kind, y)
    module = S.mlp_to_module(net)
    torch.testing.assert_close(K, S.jacobian_dual_gram(module, x, kind, y), rtol=1e-10, atol=1e-12)
    F = _dense_fisher(module, x, kind, y)
    assert F.shape == (net.num_params, net.num_params)
    ev_full = torch.linalg.eigvalsh(F).flip(0).numpy()
    ev = S.dual_eigenvalues(K)
    r = ev.size
    np.testing.assert_allclose(ev_full[:r], ev, rtol=1e-8, atol=1e-10)
    assert np.abs(ev_full[r:]).max() < 1e-10  # the remaining P - T R eigenvalues are zero
    st = S.spectrum_stats(ev, net.num_params, top=2)
    assert st["mean"] == pytest.approx(float(torch.trace(F)) / net.num_params)
    assert st["second"] == pytest.approx(float((F * F).sum()) / net.num_params)
    # exact Fisher diagonal
    diag = torch.cat([torch.cat([dW.reshape(-1)] + ([db] if db is not None else []))
                      for dW, db in S.mlp_fisher_diagonal(net, x, kind, y)])
    torch.testing.assert_close(diag, torch.diagonal(F), rtol=1e-10, atol=1e-12)


def test_mean_gradient_matches_autograd():
    net = S.init_mlp([5, 8, 3], seed=1)
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    module = S.mlp_to_module(net)
    torch.nn.functional.cross_entropy(module(x), y).backward()
    for g, lin in zip(S.mlp_mean_gradient(net, x, y), [module[0], module[2]]):
        torch.testing.assert_close(g, lin.weight.grad)


def test_fisher_operator_matches_exact_dual_on_a_conv_net():
    net = S.small_convnet(4, depth=2, in_channels=2, image_size=5, num_classes=3, seed=0)
    x = torch.randn(6, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for kind in S.FISHER_KINDS:
        op = S.FisherOperator(net, x, kind, y)
        ev = S.dual_eigenvalues(S.jacobian_dual_gram(net, x, kind, y))
        np.testing.assert_allclose(op.top_eigenvalues(3), ev[:3], rtol=1e-7)
        assert op.trace() == pytest.approx(ev.sum(), rel=1e-9)
    op = S.FisherOperator(net, x)
    ev = S.dual_eigenvalues(S.jacobian_dual_gram(net, x))
    assert op.top_eigenvalues(1, method="power", tol=1e-12, maxiter=2000)[0] == pytest.approx(ev[0], rel=1e-6)
    # F v is symmetric: u.Fv == v.Fu
    u, v = np.random.default_rng(0).standard_normal((2, op.num_params))
    assert u @ op.matvec(v) == pytest.approx(v @ op.matvec(u), rel=1e-10)


def test_karakida_scaling_at_moderate_width():
    """Measured statistics agree with the mean-field predictions (two seeds, M = 384, T = 16)."""
    widths = [384] * 4 + [10]
    pred = S.karakida_predictions(widths, 16)
    stats = []
    for seed in range(2):
        net = S.init_mlp(widths, seed=seed)
        x = torch.randn(16, 384, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + seed))
        stats.append(S.spectrum_stats(S.dual_eigenvalues(S.mlp_dual_gram(net, x)), net.num_params, top=10))
    for key, tol in [("mean", 0.1), ("top", 0.1), ("second", 0.2), ("bulk", 0.2)]:
        measured = np.mean([s[key] for s in stats])
        assert measured == pytest.approx(pred[key], rel=tol), key
    assert min(s["separation"] for s in stats) > 5  # C outliers far above the bulk


def test_fit_loglog_recovers_a_power_law():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    fit = S.fit_loglog(x, 3.0 * x**-1.5)
    assert fit["slope"] == pytest.approx(-1.5) and fit["intercept"] == pytest.approx(math.log(3.0))
    assert fit["stderr"] < 1e-10
    with pytest.raises(ValueError, match="two distinct"):
        S.fit_loglog([2.0, 2.0], [1.0, 3.0])


def test_global_ranking_and_collapse_point_agree():
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(100, generator=g) * 0.01, torch.rand(50, generator=g) * 0.98 + 0.02,
              torch.rand(30, generator=g) + 1.0]
    kept = S.global_kept_fraction(scores, 0.6)
    assert sum(k * s.numel() for k, s in zip(kept, scores)) == pytest.approx(72)
    assert kept[0] == 0.0 and kept[2] == 1.0
    coll = S.collapse_sparsity(scores)
    for i, c in enumerate(coll):
        if c < 1.0:
            assert S.global_kept_fraction(scores, min(c + 1e-3, 0.999))[i] == 0.0
        if c > 0.01:
            assert S.global_kept_fraction(scores, c - 0.01)[i] > 0.0


def test_bad_inputs_name_the_allowed_values():
    with pytest.raises(ValueError, match="allowed"):
        S.mean_field([4, 4, 2], "gelu")
    with pytest.raises(ValueError, match="allowed"):
        S.output_factor(torch.zeros(2, 3), "fisher")
    with pytest.raises(ValueError, match="targets"):
        S.output_factor(torch.zeros(2, 3), "empirical")
    with pytest.raises(ValueError, match="allowed"):
        S.small_convnet(4, head="mlp")
    with pytest.raises(ValueError, match="shape"):
        S.mlp_forward(S.init_mlp([4, 3, 2]), torch.zeros(2, 5, dtype=torch.float64))
