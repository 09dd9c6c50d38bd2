"""Every rule of ``fts_core.scoring.layer_rules.RULES`` against autograd: a small network with the
layer (weight and bias prunable) scored by the vectorised path equals a float64 batch-size-1
reference to 1e-10 relative, on odd configurations of each layer."""
from __future__ import annotations

import dataclasses

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
    "linear": (lambda: nn.Linear(4, 5), (6, 4)),  # one token per sample: the outer-product shortcut
    "linear_one_token": (lambda: nn.Linear(4, 5), (6, 1, 4)),
    "linear_tokens": (lambda: nn.Linear(4, 5), (6, 7, 4)),  # a token dimension, summed per sample
    "linear_rank4": (lambda: nn.Linear(4, 5), (6, 2, 3, 4)),
    "conv1d_dilated_reflect": (lambda: nn.Conv1d(4, 6, 3, stride=2, dilation=2, padding=2,
                                                 padding_mode="reflect"), (6, 4, 11)),
    "conv2d_pointwise_strided_padded": (lambda: nn.Conv2d(4, 6, 1, stride=2, padding=1), (6, 4, 7, 6)),
    "conv1d_pointwise": (lambda: nn.Conv1d(4, 6, 1), (6, 4, 5)),
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
    tested = {type(CASES[c][0]()) for c in CASES} | {nn.Embedding, nn.Linear, nn.MultiheadAttention}
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


class AttentionBlock(nn.Module):
    """``nn.MultiheadAttention`` called with the given options, mean-pooled, a linear head."""

    def __init__(self, batch_first: bool, kdim: int | None = None, call: dict | None = None,
                 self_attention: bool = False, **options):
        super().__init__()
        self.batch_first, self.call, self.self_attention = batch_first, call or {}, self_attention
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first, kdim=kdim, vdim=kdim, **options)
        self.kv = nn.Linear(8, kdim or 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # x: (B, L, 8)
        kv = torch.tanh(self.kv(x))
        q = x if self.batch_first else x.transpose(0, 1)
        kv = kv if self.batch_first else kv.transpose(0, 1)
        call = {k: (v(x) if callable(v) else v) for k, v in self.call.items()}
        out = self.attn(q, q, q, **call)[0] if self.self_attention else self.attn(q, kv, kv, **call)[0]
        return self.head((out if self.batch_first else out.transpose(0, 1)).mean(1))


def _padding(x):  # per-sample key padding from the sample itself (never its first token)
    pad = x[:, :, 0] > 0.3
    pad[:, 0] = False
    return pad


ATTENTION_CASES = {
    "batch_first_need_weights": dict(batch_first=True),
    "sequence_first_fused_projection": dict(batch_first=False, call={"need_weights": False}),
    "separate_kv_projections_bias_kv_zero_attn": dict(batch_first=True, kdim=6, add_bias_kv=True,
                                                       add_zero_attn=True),
    "key_padding_mask_and_causal_mask": dict(batch_first=True, call={
        "key_padding_mask": _padding, "attn_mask": lambda x: torch.triu(torch.ones(x.shape[1], x.shape[1]), 1).bool()}),
    # the calls the re-expression covers (a ViT's or a transformer encoder's), and one it leaves to the rule
    "self_attention_batch_first": dict(batch_first=True, self_attention=True, call={"need_weights": False}),
    "self_attention_sequence_first": dict(batch_first=False, self_attention=True, call={"need_weights": False}),
    "self_attention_need_weights": dict(batch_first=True, self_attention=True),
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_multihead_attention_rule_matches_autograd_on_every_projection(case):
    torch.manual_seed(0)
    model = AttentionBlock(**ATTENTION_CASES[case]).to(D).eval()
    params = {n: p for n, p in model.named_parameters() if n.startswith("attn.")}
    assert {"attn.out_proj.weight", "attn.out_proj.bias"} <= set(params)
    assert hooks_supported(model, params) is None
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, 8, generator=gen, dtype=D), torch.randint(0, 3, (6,), generator=gen)
    stats = per_sample_stats(model, params, [(x, y)], strategy="hooks", chunk_size=4)
    g_ref, f_ref = _reference(model, params, x, y)
    assert _rel(stats.mean_grad, g_ref) <= 1e-10 and _rel(stats.fisher, f_ref) <= 1e-10


@pytest.mark.parametrize("case, reexpressed", [("self_attention_batch_first", True),
                                               ("self_attention_sequence_first", True),
                                               ("self_attention_need_weights", False),
                                               ("sequence_first_fused_projection", False)])
def test_self_attention_is_reexpressed_and_nothing_else(case, reexpressed, monkeypatch):
    """Self-attention without masks or attention weights takes its projections' per-sample gradients
    from the main backward (taps), not from the whole-call rule's recomputation; other calls do not."""
    rule = RULES[nn.MultiheadAttention]
    used = []

    def spy(*args):
        same = rule.reexpress(*args)
        used.append(same is not None)
        return same

    monkeypatch.setitem(RULES, nn.MultiheadAttention, dataclasses.replace(rule, reexpress=spy))
    torch.manual_seed(0)
    model = AttentionBlock(**ATTENTION_CASES[case]).to(D).eval()
    params = {n: p for n, p in model.named_parameters() if n.startswith("attn.")}
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, 8, generator=gen, dtype=D), torch.randint(0, 3, (6,), generator=gen)
    stats = per_sample_stats(model, params, [(x, y)], strategy="hooks", chunk_size=4)
    assert used and set(used) == {reexpressed}
    g_ref, f_ref = _reference(model, params, x, y)
    assert _rel(stats.mean_grad, g_ref) <= 1e-10 and _rel(stats.fisher, f_ref) <= 1e-10


def test_a_reexpression_that_does_not_reproduce_the_module_is_refused_by_name(monkeypatch):
    """The first re-expressed call is compared with the module's own output: a wrong one fails
    ``strategy="hooks"`` naming the layer, and ``"auto"`` takes an exact path instead."""
    rule = RULES[nn.MultiheadAttention]

    def off(*args):
        same = rule.reexpress(*args)
        return None if same is None else ((same[0][0] * 1.01, None), same[1])

    monkeypatch.setitem(RULES, nn.MultiheadAttention, dataclasses.replace(rule, reexpress=off))
    torch.manual_seed(0)
    model = AttentionBlock(**ATTENTION_CASES["self_attention_batch_first"]).to(D).eval()
    params = {n: p for n, p in model.named_parameters() if n.startswith("attn.")}
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, 8, generator=gen, dtype=D), torch.randint(0, 3, (6,), generator=gen)
    with pytest.raises(ValueError, match="'attn'.*does not reproduce the module's output"):
        per_sample_stats(model, params, [(x, y)], strategy="hooks")
    assert "forward" not in vars(model.attn)  # the module's own forward is back
    stats = per_sample_stats(model, params, [(x, y)])
    g_ref, f_ref = _reference(model, params, x, y)
    assert stats.strategy != "hooks" and _rel(stats.mean_grad, g_ref) <= 1e-10 and _rel(stats.fisher, f_ref) <= 1e-10


def test_multihead_attention_rule_refuses_a_per_sample_attn_mask_and_auto_stays_exact():
    torch.manual_seed(0)
    heads_mask = lambda x: torch.zeros(x.shape[0] * 2, x.shape[1], x.shape[1], dtype=D)  # noqa: E731
    model = AttentionBlock(batch_first=True, call={"attn_mask": heads_mask}).to(D).eval()
    params = {n: p for n, p in model.named_parameters() if n.startswith("attn.")}
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, 8, generator=gen, dtype=D), torch.randint(0, 3, (6,), generator=gen)
    with pytest.raises(ValueError, match="'attn'.*per-sample attn_mask"):
        per_sample_stats(model, params, [(x, y)], strategy="hooks")
    stats = per_sample_stats(model, params, [(x, y)])
    g_ref, f_ref = _reference(model, params, x, y)
    assert stats.strategy in ("vmap", "loop")
    assert _rel(stats.mean_grad, g_ref) <= 1e-10 and _rel(stats.fisher, f_ref) <= 1e-10


@pytest.mark.parametrize("kernel, stride, dilation", [((3, 3), (1, 1), (1, 1)), ((3, 2), (2, 1), (1, 2)),
                                                      ((1, 1), (2, 2), (1, 1)), ((2, 3), (3, 2), (2, 3))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_patches_equal_unfold(kernel, stride, dilation, channels_last):
    from fts_core.scoring.layer_rules import patches

    x = torch.randn(3, 5, 11, 9, dtype=D)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mine = patches(x, kernel, stride, dilation)
    theirs = nn.functional.unfold(x, kernel, dilation=dilation, stride=stride)
    assert mine.shape == theirs.shape and torch.equal(mine, theirs)
