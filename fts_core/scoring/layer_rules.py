"""Per-layer rules of the vectorised per-sample path: for each stock layer type, when an instance
is handled exactly, and how Σ_n g_n and Σ_n g_n ⊙ g_n of its parameters follow from the layer's
input and output-gradient for a chunk of samples.

    RULES[type(module)].check(module)                    # None, or why this instance is not handled
    RULES[type(module)].accumulate(module, inp, gout, g, f)   # g[attr] += Σ_n g_n, f[attr] += Σ_n g_n²

``inp`` is the layer's first input (B, ...), ``gout`` the gradient of the summed loss w.r.t. its
output; ``g``/``f`` map the attributes to score (``"weight"``, ``"bias"``) to accumulators shaped
like the parameters. Adding a layer type = one entry of :data:`RULES` and its test against
autograd (``tests/scoring/test_layer_rules.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerRule", "RULES"]

Grads = Callable[[nn.Module, Tensor, Tensor, set], dict]


@dataclass(frozen=True)
class LayerRule:
    """``check(module) -> str | None`` and ``accumulate(module, inp, gout, g, f)`` of one layer type."""

    check: Callable[[nn.Module], str | None]
    accumulate: Callable[[nn.Module, Tensor, Tensor, dict, dict], None]


def _from_per_sample(grads: Grads) -> Callable[[nn.Module, Tensor, Tensor, dict, dict], None]:
    """An ``accumulate`` from a function giving per-sample gradients ``{attr: (B, *shape)}``."""
    def accumulate(module: nn.Module, inp: Tensor, gout: Tensor, g: dict, f: dict) -> None:
        for attr, gs in grads(module, inp, gout, set(g)).items():
            g[attr].add_(gs.sum(0).view_as(g[attr]))
            f[attr].add_(gs.square().sum(0).view_as(f[attr]))
    return accumulate


def _ok(module: nn.Module) -> None:
    return None


# ---------------------------------------------------------------------- Linear (any input rank)
def _linear(module: nn.Linear, inp: Tensor, gout: Tensor, attrs: set) -> dict:
    b = inp.shape[0]
    x, go = inp.reshape(b, -1, inp.shape[-1]), gout.reshape(b, -1, gout.shape[-1])  # tokens summed per sample
    out = {}
    if "weight" in attrs:
        out["weight"] = torch.bmm(go.transpose(1, 2), x)
    if "bias" in attrs:
        out["bias"] = go.sum(1)
    return out


# ---------------------------------------------------------------------- convolutions
_CONV_WEIGHT = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}


def padded_input(module: nn.modules.conv._ConvNd, inp: Tensor) -> Tensor:
    """The input as the convolution sees it after padding (any padding mode, ``"same"``), so
    that the weight-gradient can be taken with padding 0."""
    pad = module._reversed_padding_repeated_twice
    if not any(pad):
        return inp
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    return F.pad(inp, pad, mode=mode)


def samples_as_groups(inp: Tensor, gout: Tensor, weight_shape: torch.Size, stride, dilation, groups: int) -> Tensor:
    """Per-sample weight-gradients (B, *weight_shape) of a convolution with padding 0: one
    weight-gradient with the chunk's samples as extra groups."""
    b, dims = inp.shape[0], inp.dim() - 2
    shape = (weight_shape[0] * b, *weight_shape[1:])
    w = _CONV_WEIGHT[dims](inp.reshape(1, -1, *inp.shape[2:]), shape, gout.reshape(1, -1, *gout.shape[2:]),
                           stride=stride, padding=0, dilation=dilation, groups=groups * b)
    return w.view(b, *weight_shape)


def _conv(module: nn.modules.conv._ConvNd, inp: Tensor, gout: Tensor, attrs: set) -> dict:
    out = {}
    if "weight" in attrs:
        out["weight"] = samples_as_groups(padded_input(module, inp), gout, module.weight.shape, module.stride,
                                          module.dilation, module.groups)
    if "bias" in attrs:
        out["bias"] = gout.sum(dim=tuple(range(2, gout.dim())))
    return out


def _conv_transpose(module: nn.modules.conv._ConvTransposeNd, inp: Tensor, gout: Tensor, attrs: set) -> dict:
    """ConvTranspose is the adjoint of a convolution with the same weight: its weight-gradient is
    that convolution's, with the output-gradient as the input and the input as the output-gradient."""
    out = {}
    if "weight" in attrs:
        pad = [p for p in reversed(module.padding) for _ in range(2)]  # the adjoint pads what the forward crops
        go = F.pad(gout, pad) if any(pad) else gout
        out["weight"] = samples_as_groups(go, inp, module.weight.shape, module.stride, module.dilation, module.groups)
    if "bias" in attrs:
        out["bias"] = gout.sum(dim=tuple(range(2, gout.dim())))
    return out


def _conv_transpose_check(module: nn.modules.conv._ConvTransposeNd) -> str | None:
    return None if module.padding_mode == "zeros" else f"padding_mode {module.padding_mode!r}"


# ---------------------------------------------------------------------- normalisation layers
def _affine(gout: Tensor, xhat: Tensor, keep: int, attrs: set) -> dict:
    """Per-sample ``Σ gout ⊙ x̂`` and ``Σ gout`` over every dim but the sample and the ``keep`` dims
    that follow it (channels) or end it (normalized_shape, ``keep < 0``)."""
    if keep >= 0:
        dims = tuple(range(1 + keep, gout.dim()))
    else:
        dims = tuple(range(1, gout.dim() + keep))
    out = {}
    if "weight" in attrs:
        prod = gout * xhat
        out["weight"] = prod.sum(dims) if dims else prod
    if "bias" in attrs:
        out["bias"] = gout.sum(dims) if dims else gout
    return out


def _batch_norm(module: nn.modules.batchnorm._BatchNorm, inp: Tensor, gout: Tensor, attrs: set) -> dict:
    shape = [1, -1] + [1] * (inp.dim() - 2)
    xhat = (inp - module.running_mean.view(shape)) * torch.rsqrt(module.running_var.view(shape) + module.eps)
    return _affine(gout, xhat, 1, attrs)


def _batch_norm_check(module: nn.modules.batchnorm._BatchNorm) -> str | None:
    return "BatchNorm using batch statistics" if module.training or module.running_mean is None else None


def _layer_norm(module: nn.LayerNorm, inp: Tensor, gout: Tensor, attrs: set) -> dict:
    xhat = F.layer_norm(inp, module.normalized_shape, None, None, module.eps)
    return _affine(gout, xhat, -len(module.normalized_shape), attrs)


def _group_norm(module: nn.GroupNorm, inp: Tensor, gout: Tensor, attrs: set) -> dict:
    xhat = F.group_norm(inp, module.num_groups, None, None, module.eps)
    return _affine(gout, xhat, 1, attrs)


# ---------------------------------------------------------------------- Embedding
def _embedding_accumulate(module: nn.Embedding, inp: Tensor, gout: Tensor, g: dict, f: dict) -> None:
    """Rows summed per (sample, token id) without a (B, V, D) tensor: one row per distinct pair."""
    if "weight" not in g:
        return
    vocab, b = module.num_embeddings, inp.shape[0]
    ids = inp.reshape(b, -1)
    rows = gout.reshape(b, ids.shape[1], -1)
    keys = (torch.arange(b, device=ids.device)[:, None] * vocab + ids).reshape(-1)
    flat = rows.reshape(keys.shape[0], -1)
    if module.padding_idx is not None:
        keep = ids.reshape(-1) != module.padding_idx
        keys, flat = keys[keep], flat[keep]
    pairs, where = torch.unique(keys, return_inverse=True)
    per_pair = torch.zeros(pairs.shape[0], flat.shape[1], dtype=flat.dtype, device=flat.device)
    per_pair.index_add_(0, where, flat)
    g["weight"].index_add_(0, pairs % vocab, per_pair)
    f["weight"].index_add_(0, pairs % vocab, per_pair * per_pair)


def _embedding_check(module: nn.Embedding) -> str | None:
    if module.max_norm is not None:
        return "Embedding with max_norm (renormalises its weight in the forward)"
    if module.scale_grad_by_freq:
        return "Embedding with scale_grad_by_freq (couples the samples of a batch)"
    return None


_conv_rule = LayerRule(_ok, _from_per_sample(_conv))
_conv_t_rule = LayerRule(_conv_transpose_check, _from_per_sample(_conv_transpose))
_bn_rule = LayerRule(_batch_norm_check, _from_per_sample(_batch_norm))

#: stock layer type -> its rule
RULES: dict[type, LayerRule] = {
    nn.Linear: LayerRule(_ok, _from_per_sample(_linear)),
    nn.Conv1d: _conv_rule, nn.Conv2d: _conv_rule, nn.Conv3d: _conv_rule,
    nn.ConvTranspose1d: _conv_t_rule, nn.ConvTranspose2d: _conv_t_rule, nn.ConvTranspose3d: _conv_t_rule,
    nn.BatchNorm1d: _bn_rule, nn.BatchNorm2d: _bn_rule, nn.BatchNorm3d: _bn_rule,
    nn.LayerNorm: LayerRule(_ok, _from_per_sample(_layer_norm)),
    nn.GroupNorm: LayerRule(_ok, _from_per_sample(_group_norm)),
    nn.Embedding: LayerRule(_embedding_check, _embedding_accumulate),
}
