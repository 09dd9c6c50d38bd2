"""Per-sample statistics: every strategy equals a plain batch-size-1 loop; auto picks per device."""
import pytest
import torch
from torch import nn

from fts_core.masks import owner, prunable_parameters
from fts_core.scoring.gradients import batched_mean_grad, requires_grad, zeros_for_none
from fts_core.scoring.persample import choose_strategy, conv_method_for, hooks_supported, per_sample_stats
from fts_core.setup.models import build_model
from small_models import bn_model, image_batches  # tests/small_models.py

torch.set_num_threads(1)


def _model(name, dtype=torch.float64):
    return bn_model(name, dtype)


def _data(name, n=10, dtype=torch.float64):
    return image_batches(name, n, 6, dtype)


def _reference(model, params, batches):
    """Obviously right: one sample at a time, .backward(), mean of grads and of squared grads."""
    g_sum = {n: torch.zeros_like(p) for n, p in params.items()}
    f_sum = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for x, y in batches:
        for i in range(x.shape[0]):
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
            for n, p in params.items():
                g_sum[n] += p.grad
                f_sum[n] += p.grad ** 2
            count += 1
    model.zero_grad(set_to_none=True)
    return {n: v / count for n, v in g_sum.items()}, {n: v / count for n, v in f_sum.items()}


def _rel(a, b):
    return max(((a[n] - b[n]).norm() / b[n].norm()).item() for n in b)


@pytest.mark.parametrize("name", ["resnet18", "vgg19"])
@pytest.mark.parametrize("rule", ["default", "authors"])
def test_all_strategies_match_plain_loop_float64(name, rule):
    model = _model(name)
    params = prunable_parameters(model, rule)
    batches = _data(name)
    g_ref, f_ref = _reference(model, params, batches)
    for strategy in ("loop", "hooks", "vmap", "auto"):
        stats = per_sample_stats(model, params, batches, strategy=strategy, chunk_size=4)
        assert stats.num_samples == 10
        assert _rel(stats.mean_grad, g_ref) <= 1e-10, strategy
        assert _rel(stats.fisher, f_ref) <= 1e-10, strategy
    # batched ĝ (no per-sample pass) too
    assert _rel(batched_mean_grad(model, params, batches), g_ref) <= 1e-10


@pytest.mark.parametrize("name", ["resnet18", "vgg19"])
def test_float32_strategies_match_float64_reference_on_same_weights(name):
    import copy

    model = _model(name, torch.float32)
    model64 = copy.deepcopy(model).double()  # the same weights, in float64
    batches = _data(name, dtype=torch.float32)
    g_ref, f_ref = _reference(model64, prunable_parameters(model64), [(x.double(), y) for x, y in batches])
    params = prunable_parameters(model)
    for strategy in ("loop", "hooks", "vmap"):
        stats = per_sample_stats(model, params, batches, strategy=strategy)
        assert stats.fisher[next(iter(params))].dtype == torch.float32
        # measured ~1e-7 per layer (float32 round-off); 1e-4 is the contract bound
        assert _rel(stats.fisher, f_ref) <= 1e-4 and _rel(stats.mean_grad, g_ref) <= 1e-4, strategy


def test_shared_helpers():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    b.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        with requires_grad([a, b]):
            assert a.requires_grad and b.requires_grad
            raise RuntimeError("boom")
    assert a.requires_grad and not b.requires_grad  # restored on error too
    z = zeros_for_none([None, torch.full((3,), 2.0)], [a, b])
    assert torch.equal(z[0], torch.zeros(2)) and torch.equal(z[1], torch.full((3,), 2.0))
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert owner(m, "1.weight") == (m[1], "weight")


@pytest.mark.parametrize("method", ["grouped", "per_sample"])
def test_every_conv_method_of_hooks_matches_loop(method):
    model = _model("vgg19")
    params = prunable_parameters(model, "authors")
    batches = _data("vgg19")
    a = per_sample_stats(model, params, batches, strategy="hooks", chunk_size=3, conv_method=method)
    b = per_sample_stats(model, params, batches, strategy="loop")
    assert _rel(a.fisher, b.fisher) <= 1e-12 and _rel(a.mean_grad, b.mean_grad) <= 1e-12


def test_auto_conv_method_mixes_per_layer_and_matches_loop(monkeypatch):
    import fts_core.scoring.persample as ps

    model = _model("resnet18")
    sizes = sorted(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    monkeypatch.setattr(ps, "CPU_GROUPED_MAX_WEIGHTS", sizes[len(sizes) // 2])  # half each way
    cpu = torch.device("cpu")
    methods = {conv_method_for(m, cpu) for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert methods == {"grouped", "per_sample"}
    assert conv_method_for(nn.Conv2d(512, 512, 3), torch.device("meta")) == "grouped"  # accelerators
    with pytest.raises(ValueError, match="conv_method"):
        per_sample_stats(model, prunable_parameters(model), _data("resnet18"), conv_method="unfold")
    params = prunable_parameters(model, "authors")
    a = per_sample_stats(model, params, _data("resnet18"), strategy="hooks", chunk_size=4)
    b = per_sample_stats(model, params, _data("resnet18"), strategy="loop")
    assert _rel(a.fisher, b.fisher) <= 1e-12 and _rel(a.mean_grad, b.mean_grad) <= 1e-12


def test_chunk_size_and_batching_do_not_change_results():
    model = _model("resnet18")
    params = prunable_parameters(model)
    batches = _data("resnet18")
    x = torch.cat([b[0] for b in batches]); y = torch.cat([b[1] for b in batches])
    a = per_sample_stats(model, params, batches, strategy="hooks", chunk_size=1)
    b = per_sample_stats(model, params, [(x, y)], strategy="hooks", chunk_size=7)
    assert _rel(a.fisher, b.fisher) <= 1e-12 and _rel(a.mean_grad, b.mean_grad) <= 1e-12


def test_empirical_fisher_dominates_squared_mean_gradient():
    # Jensen: mean of squares >= square of mean, elementwise
    model = _model("vgg19")
    params = prunable_parameters(model)
    stats = per_sample_stats(model, params, _data("vgg19"))
    for n in params:
        assert bool((stats.fisher[n] + 1e-300 >= stats.mean_grad[n] ** 2).all())


def test_auto_strategy_per_device():
    model = _model("resnet18", torch.float32)
    assert choose_strategy(model, prunable_parameters(model)) == "hooks"  # CPU, vectorised
    big = build_model("resnet18", width=0.5).eval()
    assert choose_strategy(big, prunable_parameters(big)) == "hooks"
    meta = build_model("resnet18", width=0.5).to("meta").eval()  # stands in for a GPU
    assert choose_strategy(meta, prunable_parameters(meta)) == "hooks"  # never a per-sample loop
    # an unsupported owner on an accelerator falls back to vmap, never to the loop
    m = nn.Sequential(nn.Conv2d(3, 4, 3, groups=1), nn.PReLU(4), nn.Flatten(), nn.LazyLinear(2))  # no PReLU rule
    m = m.to("meta")
    p = {"1.weight": m[1].weight}
    assert hooks_supported(m, p) is not None
    assert choose_strategy(m, p) == "vmap"
    with pytest.raises(ValueError, match="hooks"):
        choose_strategy(m, p, "hooks")
    with pytest.raises(ValueError, match=r"strategy='fast': allowed: auto, loop, hooks, vmap"):
        choose_strategy(m, p, "fast")


def test_parameters_and_grads_untouched():
    model = _model("resnet18")
    params = prunable_parameters(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params["conv1.weight"].requires_grad_(False)
    for strategy in ("loop", "hooks", "vmap"):
        per_sample_stats(model, params, _data("resnet18"), strategy=strategy)
    assert not params["conv1.weight"].requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class TimeFirst(nn.Module):
    """A Linear that sees (T, B, features): its first dimension is not the samples."""

    def __init__(self):
        super().__init__()
        self.lin, self.head = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):  # x: (B, T, 4)
        return self.head(torch.tanh(self.lin(x.transpose(0, 1))).mean(0))


class SequenceFirstEncoder(nn.Module):
    """torch's TransformerEncoderLayer at its default batch_first=False: its Linear layers see (T, B, E)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # x: (B, T, 8)
        return self.head(self.enc(x.transpose(0, 1)).mean(0))


def test_torch_encoder_layer_with_sequence_first_inputs_is_exact():
    torch.manual_seed(0)
    model = SequenceFirstEncoder().double().eval()
    x, y = torch.randn(6, 5, 8, dtype=torch.float64), torch.randint(0, 3, (6,))
    params = prunable_parameters(model)
    ref = per_sample_stats(model, params, [(x, y)], strategy="loop")
    auto = per_sample_stats(model, params, [(x, y)])
    assert auto.strategy == "vmap"  # the hooks path was 58 % off here before its first-dimension check
    assert _rel(auto.fisher, ref.fisher) <= 1e-10 and _rel(auto.mean_grad, ref.mean_grad) <= 1e-10


def test_a_layer_whose_first_dimension_is_not_the_samples_leaves_hooks():
    torch.manual_seed(0)
    model = TimeFirst().double().eval()
    x, y = torch.randn(6, 7, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    params = {"lin.weight": model.lin.weight}
    ref = per_sample_stats(model, params, [(x, y)], strategy="loop")
    auto = per_sample_stats(model, params, [(x, y)])
    assert auto.strategy == "vmap" and _rel(auto.fisher, ref.fisher) <= 1e-10  # hooks would be 141 % off
    with pytest.raises(ValueError, match=r"layer 'lin' \(Linear\) gets an input of shape \(7, 4, 4\) for 4 samples"):
        per_sample_stats(model, params, [(x, y)], strategy="hooks")
