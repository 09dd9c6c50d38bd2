"""Every rule of ``fts_core.scoring.layer_rules.RULES`` against autograd: a small network with the
layer (weight and bias prunable) scored by the vectorised path equals a float64 batch-size-1
reference to 1e-10 relative, on odd configurations of each layer."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fts_core.scoring.layer_rules import RULES
from fts_core.scoring.persample import hooks_supported, per_sample_stats

torch.set_num_threads(1)
D = torch.float64


class Wrap(nn.Module):
    """``layer`` between a fixed input map and a linear head (so every output matters)."""

    def __init__(self, layer: nn.Module, out_features: int):
        super().__init__()
        self.layer, self.head = layer, nn.LazyLinear(3)

    def forward(self, x):
        return self.head(torch.tanh(self.layer(x)).flatten(1))


def _reference(model, params, x, y):
    names = list(params)
    g = {n: torch.zeros_like(params[n]) for n in names}
    f = {n: torch.zeros_like(params[n]) for n in names}
    for i in range(x.shape[0]):
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        for n, gr in zip(names, torch.autograd.grad(loss, [params[n] for n in names])):
            g[n] += gr
            f[n] += gr * gr
    return {n: v / x.shape[0] for n, v in g.items()}, {n: v / x.shape[0] for n, v in f.items()}


def _rel(a, b):
    return max(float((a[n] - b[n]).norm() / b[n].norm()) for n in b)


CASES = {
    "linear_tokens": (lambda: nn.Linear(4, 5), (6, 7, 4)),  # a token dimension, summed per sample
    "linear_rank4": (lambda: nn.Linear(4, 5), (6, 2, 3, 4)),
    "conv1d_dilated_reflect": (lambda: nn.Conv1d(4, 6, 3, stride=2, dilation=2, padding=2,
                                                 padding_mode="reflect"), (6, 4, 11)),
    "conv2d_depthwise": (lambda: nn.Conv2d(4, 8, 3, groups=4, padding=1), (6, 4, 7, 7)),
    "conv2d_grouped_same_circular": (lambda: nn.Conv2d(4, 6, (3, 2), groups=2, padding="same",
                                                       padding_mode="circular"), (6, 4, 6, 5)),
    "conv2d_strided_replicate": (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1, padding_mode="replicate"),
                                 (6, 3, 9, 9)),
    "conv3d_grouped": (lambda: nn.Conv3d(4, 4, 2, groups=2, stride=(1, 2, 1), padding=1), (6, 4, 4, 5, 3)),
    "conv_transpose1d": (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, dilation=1),
                         (6, 4, 5)),
    "conv_transpose2d_grouped": (lambda: nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0),
                                                             groups=2, dilation=(1, 2)), (6, 4, 4, 5)),
    "conv_transpose3d": (lambda: nn.ConvTranspose3d(2, 4, 2, stride=(2, 1, 1), padding=(0, 1, 0)), (6, 2, 3, 3, 2)),
    "batchnorm3d_eval": (lambda: nn.BatchNorm3d(3), (6, 3, 2, 3, 2)),
    "layernorm_tokens": (lambda: nn.LayerNorm((5,)), (6, 4, 5)),
    "layernorm_2d_shape": (lambda: nn.LayerNorm((3, 4)), (6, 2, 3, 4)),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), (6, 4, 3, 3)),
}


def _model_and_data(case, seed=0):
    torch.manual_seed(seed)
    make, shape = CASES[case]
    layer = make()
    model = Wrap(layer, 3)
    x = torch.randn(*shape)
    model(x)  # materialise the lazy head
    model = model.to(D).eval()
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):  # non-trivial running statistics and affine
        with torch.no_grad():
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.5, 0.5)
    gen = torch.Generator().manual_seed(seed + 1)
    return model, torch.randn(*shape, generator=gen, dtype=D), torch.randint(0, 3, (shape[0],), generator=gen)


@pytest.mark.parametrize("case", list(CASES))
def test_rule_matches_autograd_reference(case):
    model, x, y = _model_and_data(case)
    params = {n: p for n, p in model.named_parameters() if n.startswith("layer.")}
    assert hooks_supported(model, params) is None
    stats = per_sample_stats(model, params, [(x, y)], strategy="hooks", chunk_size=4)
    g_ref, f_ref = _reference(model, params, x, y)
    assert _rel(stats.mean_grad, g_ref) <= 1e-10 and _rel(stats.fisher, f_ref) <= 1e-10


class Tokens(nn.Module):
    def __init__(self, padding_idx=None):
        super().__init__()
        self.emb = nn.Embedding(9, 4, padding_idx=padding_idx)
        self.head = nn.Linear(4, 3)

    def forward(self, ids):
        return self.head(torch.tanh(self.emb(ids)).mean(1))


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_rule_matches_autograd_with_repeated_tokens(padding_idx):
    torch.manual_seed(0)
    model = Tokens(padding_idx).to(D)
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 5, (6, 8), generator=gen)  # a small vocabulary in use: many repeats per sample
    y = torch.randint(0, 3, (6,), generator=gen)
    params = {"emb.weight": model.emb.weight}
    stats = per_sample_stats(model, params, [(ids, y)], strategy="hooks", chunk_size=4)
    g_ref, f_ref = _reference(model, params, ids, y)
    assert _rel(stats.mean_grad, g_ref) <= 1e-10 and _rel(stats.fisher, f_ref) <= 1e-10


def test_every_layer_type_of_the_table_has_a_test():
    tested = {type(CASES[c][0]()) for c in CASES} | {nn.Embedding, nn.Linear}
    tested |= {nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d}  # tests/scoring/test_persample.py (paper models)
    missing = {t.__name__ for t in RULES} - {t.__name__ for t in tested}
    assert not missing, f"layer rules without an autograd test: {sorted(missing)}"


@pytest.mark.parametrize("layer, why", [
    (nn.Embedding(5, 3, max_norm=1.0), "max_norm"),
    (nn.Embedding(5, 3, scale_grad_by_freq=True), "scale_grad_by_freq"),
    (nn.ConvTranspose1d(2, 2, 3), None),
])
def test_rule_checks_name_what_they_do_not_handle(layer, why):
    check = RULES[type(layer)].check(layer)
    assert (check is None) if why is None else (why in check)
