"""Double backprop on any model: attention runs under the math kernel (the fused CPU kernel has no
second derivative), and an operation without one is refused by name, not with torch's error."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from small_models import Attention  # tests/small_models.py

import fts_core
from fts_core.scoring.curvature import hessian_vector_product

torch.set_num_threads(1)
D = torch.float64


def _mean_grad(model, params, x, y):
    loss = F.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, list(params.values()))


def test_hessian_vector_product_through_attention_matches_finite_differences():
    torch.manual_seed(0)
    model = Attention().to(D).eval()
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 4, 8, generator=gen, dtype=D), torch.randint(0, 3, (5,), generator=gen)
    v = {n: torch.randn(p.shape, generator=gen, dtype=D) for n, p in params.items()}
    hv = hessian_vector_product(model, params, [(x, y)], v)
    eps = 1e-5
    with torch.no_grad():
        for n, p in params.items():
            p.add_(eps * v[n])
    plus = _mean_grad(model, params, x, y)
    with torch.no_grad():
        for n, p in params.items():
            p.sub_(2 * eps * v[n])
    minus = _mean_grad(model, params, x, y)
    fd = {n: (a - b) / (2 * eps) for n, a, b in zip(params, plus, minus)}
    num = sum(float((hv[n] - fd[n]).norm() ** 2) for n in params) ** 0.5
    den = sum(float(fd[n].norm() ** 2) for n in params) ** 0.5
    assert num / den < 1e-6


def test_grasp_scores_an_attention_model():
    torch.manual_seed(0)
    model = Attention().eval()
    data = [(torch.randn(5, 4, 8), torch.randint(0, 3, (5,)))]
    scores = fts_core.score("grasp", model, data)
    assert set(scores) == {"attn.out_proj.weight"} and bool(torch.isfinite(scores["attn.out_proj.weight"]).all())


def test_an_operation_without_a_second_derivative_is_named():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 5), nn.Hardsigmoid(), nn.Linear(5, 3)).to(D)
    data = [(torch.randn(6, 5, dtype=D), torch.randint(0, 3, (6,)))]
    with pytest.raises(ValueError, match=r"no derivative of aten::hardsigmoid_backward.*first-order criterion"):
        fts_core.score("grasp", model, data)
    assert fts_core.score("fts", model, data)  # first order works on the same model
