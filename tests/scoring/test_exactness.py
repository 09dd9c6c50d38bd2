"""The per-sample fast path ("hooks") is used only where it is exact; everywhere else ``auto`` takes
an exact generic path and an explicit ``"hooks"`` refuses, naming the layer. Each model below breaks
one rule of :func:`fts_core.scoring.persample.hooks_supported` or of the first-chunk check, and
each test compares with a float64 batch-size-1 autograd reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from small_models import Attention  # tests/small_models.py

from fts_core.masks import prunable_parameters
from fts_core.scoring.persample import hooks_supported, per_sample_stats, register_equivalent

torch.set_num_threads(1)
D = torch.float64


def _reference(model, params, batches):
    """One sample at a time, autograd, float64; an unused parameter has gradient zero."""
    names = list(params)
    g = {n: torch.zeros_like(params[n]) for n in names}
    f = {n: torch.zeros_like(params[n]) for n in names}
    count = 0
    for x, y in batches:
        for i in range(x.shape[0]):
            loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
            grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
            for n, gr in zip(names, grads):
                if gr is not None:
                    g[n] += gr
                    f[n] += gr * gr
            count += 1
    return {n: v / count for n, v in g.items()}, {n: v / count for n, v in f.items()}


def _rel(a, b):
    return max(float((a[n] - b[n]).norm() / max(float(b[n].norm()), 1e-300)) for n in b)


def _images(n=6, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, c, 8, 8, generator=gen, dtype=D), torch.randint(0, 3, (n,), generator=gen))]


def _exact(model, batches, strategy="auto", params=None):
    params = params or prunable_parameters(model)
    stats = per_sample_stats(model, params, batches, strategy=strategy, chunk_size=4)
    g_ref, f_ref = _reference(model, params, batches)
    assert _rel(stats.mean_grad, g_ref) <= 1e-10 and _rel(stats.fisher, f_ref) <= 1e-10, stats.strategy
    return stats.strategy


class StandardizedConv(nn.Conv2d):
    """Weight standardization: the forward transforms the weight before convolving."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class SameConv(nn.Conv2d):
    """Overrides forward but computes exactly what Conv2d computes."""

    def forward(self, x):
        return super().forward(x)


def _conv_net(conv_cls):
    torch.manual_seed(0)
    return nn.Sequential(conv_cls(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)).to(D).eval()


def test_a_subclass_that_overrides_forward_goes_to_an_exact_generic_path():
    model = _conv_net(StandardizedConv)
    params = prunable_parameters(model)
    assert "overrides a method" in hooks_supported(model, params)
    assert _exact(model, _images()) in ("vmap", "loop")
    with pytest.raises(ValueError, match="register_equivalent"):
        per_sample_stats(model, params, _images(), strategy="hooks")


def test_a_subclass_registered_as_equivalent_keeps_the_fast_path():
    model = _conv_net(SameConv)
    assert hooks_supported(model, prunable_parameters(model)) is not None
    register_equivalent(SameConv, nn.Conv2d)
    assert hooks_supported(model, prunable_parameters(model)) is None
    assert _exact(model, _images()) == "hooks"
    with pytest.raises(TypeError, match="must subclass"):
        register_equivalent(StandardizedConv, nn.Linear)


class ReusedWeight(nn.Module):
    """A stock Linear whose weight is also used outside the layer's call (a tied projection)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return self.head(F.linear(h, self.fc.weight))


def _vectors(n=6, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, d, generator=gen, dtype=D), torch.randint(0, 3, (n,), generator=gen))]


def test_multihead_attention_output_projection_takes_the_attention_rule():
    """out_proj is a Linear whose weight MHA uses without calling it: the MultiheadAttention rule
    owns it, so the fast path is exact (no misdiagnosis, no fallback)."""
    torch.manual_seed(0)
    model = Attention().to(D).eval()
    params = {"attn.out_proj.weight": model.attn.out_proj.weight, "head.weight": model.head.weight}
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(5, 4, 8, generator=gen, dtype=D), torch.randint(0, 3, (5,), generator=gen))]
    assert _exact(model, batches, params=params) == "hooks"


class WeightUsedOutside(nn.Module):
    """``fc``'s weight used by a functional call of the parent, ``fc`` itself never called."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.tanh(F.linear(x, self.fc.weight)))


@pytest.mark.parametrize("make, why", [(ReusedWeight, "do not add up"),
                                       (WeightUsedOutside, "without calling the layer")])
def test_a_weight_used_outside_its_layer_is_caught_on_the_first_chunk(make, why):
    torch.manual_seed(0)
    model = make().to(D)
    params = {"fc.weight": model.fc.weight, "head.weight": model.head.weight}
    assert hooks_supported(model, params) is None  # nothing static shows it
    assert _exact(model, _vectors(), params=params) in ("vmap", "loop")
    with pytest.raises(ValueError, match=f"'fc'.*{why}"):
        per_sample_stats(model, params, _vectors(), strategy="hooks")


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.b(x) if self.training else self.a(x))


def test_a_branch_unused_in_eval_mode_scores_zero_on_the_fast_path():
    torch.manual_seed(0)
    model = Branchy().to(D).eval()
    assert _exact(model, _vectors()) == "hooks"
    stats = per_sample_stats(model, prunable_parameters(model), _vectors(), strategy="hooks")
    assert not stats.fisher["b.weight"].any()


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.fc(torch.tanh(self.fc(x))))


def test_a_layer_called_twice_goes_to_an_exact_generic_path():
    torch.manual_seed(0)
    model = Twice().to(D)
    assert _exact(model, _vectors()) in ("vmap", "loop")
    with pytest.raises(ValueError, match="'fc'.*called twice"):
        per_sample_stats(model, prunable_parameters(model), _vectors(), strategy="hooks")


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.fc2, self.head = nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 3)
        self.fc2.weight = self.fc.weight

    def forward(self, x):
        return self.head(self.fc2(torch.tanh(self.fc(x))))


def test_a_parameter_shared_by_two_layers_goes_to_an_exact_generic_path():
    torch.manual_seed(0)
    model = Tied().to(D)
    params = {"fc.weight": model.fc.weight, "head.weight": model.head.weight}
    assert "shared" in hooks_supported(model, params)
    assert _exact(model, _vectors(), params=params) in ("vmap", "loop")


def test_a_layer_with_a_forward_hook_of_its_own_goes_to_an_exact_generic_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 3)).to(D)
    model[0].register_forward_hook(lambda m, i, o: 2 * o)  # changes the output the next layer sees
    assert "forward hooks" in hooks_supported(model, prunable_parameters(model))
    assert _exact(model, _vectors()) in ("vmap", "loop")


class TokenClassifier(nn.Module):
    """Token ids -> embedding -> Linear on every token (a token dimension) -> mean -> classes."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, ids):
        return self.head(torch.tanh(self.fc(self.emb(ids))).mean(1))


def test_integer_token_inputs_take_the_fast_path_exactly():
    torch.manual_seed(0)
    model = TokenClassifier().to(D)
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randint(0, 11, (6, 7), generator=gen), torch.randint(0, 3, (6,), generator=gen))]
    assert _exact(model, batches) == "hooks"


def test_every_layer_kind_a_user_may_prune_is_scored_exactly():
    """Embedding(Bag), Conv1d, ConvTranspose1d, LSTM, GRUCell, attention projections, Bilinear,
    Linear (rule "all_weights") on token ids: the generic path, equal to the float64 reference."""
    from small_models import every_kind_model  # tests/small_models.py

    model = every_kind_model(D)
    gen = torch.Generator().manual_seed(3)
    batches = [(torch.randint(0, 13, (5, 4), generator=gen), torch.randint(0, 3, (5,), generator=gen))]
    assert _exact(model, batches, params=prunable_parameters(model, "all_weights")) in ("vmap", "loop")
