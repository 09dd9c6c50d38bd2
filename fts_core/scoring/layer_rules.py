"""Per-layer rules of the vectorised per-sample path: when a stock layer is handled exactly, and how
Σ_n g_n and Σ_n g_n ⊙ g_n of its parameters follow from its input and output-gradient for a chunk.

    RULES[type(module)].check(module)                         # None, or why this instance is not handled
    RULES[type(module)].accumulate(module, inp, gout, g, f)   # g[attr] += Σ_n g_n, f[attr] += Σ_n g_n²

``inp``: the layer's first input (B, ...); ``gout``: the gradient of the summed loss w.r.t. its
(first) output; ``g``/``f``: attribute (``"weight"``, ``"bias"``) -> accumulator shaped like the
parameter. A ``whole_call`` rule gets ``inp = (args, kwargs)`` and owns its children's parameters too
(MultiheadAttention's ``"out_proj.weight"``). A rule's optional ``reexpress(module, args, kwargs)``
computes, for the calls it covers (else None), the layer's output with its inner linear maps made
visible (``(output, Tap)`` pairs), whose per-sample gradients then follow from the main backward
pass. A rule raises :class:`NotExact` for a call it cannot handle exactly. A new layer type: one
:data:`RULES` entry and its test against autograd (``tests/scoring/test_layer_rules.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["LayerRule", "RULES", "NotExact", "Tap", "accumulate_tap", "patches"]


class NotExact(RuntimeError):
    """A layer's rule met a call it does not handle exactly (found while running)."""

Grads = Callable[[nn.Module, Tensor, Tensor, set], dict]


@dataclass(frozen=True)
class LayerRule:
    """``check(module) -> str | None`` and ``accumulate(module, inp, gout, g, f)`` of one layer type."""

    check: Callable[[nn.Module], str | None]
    accumulate: Callable[[nn.Module, Any, Tensor, dict, dict], None]
    whole_call: bool = False
    reexpress: Callable[[nn.Module, tuple, dict], tuple[Any, list[tuple[Tensor, Tap]]] | None] | None = None


@dataclass(frozen=True)
class Tap:
    """A linear map inside a layer's call, made visible: its input (B, ..., in) and the attribute
    paths of the layer's parameters that are its weight and bias (its output is paired with it)."""

    inp: Tensor
    weight: str
    bias: str | None


def _from_per_sample(grads: Grads) -> Callable[[nn.Module, Tensor, Tensor, dict, dict], None]:
    """An ``accumulate`` from a function giving per-sample gradients ``{attr: (B, *shape)}``."""
    def accumulate(module: nn.Module, inp: Tensor, gout: Tensor, g: dict, f: dict) -> None:
        for attr, gs in grads(module, inp, gout, set(g)).items():
            g[attr].add_(gs.sum(0).view_as(g[attr]))
            add_squares(f[attr], gs)
    return accumulate


def add_squares(f: Tensor, gs: Tensor) -> None:
    """``f += Σ_n gs[n]²`` for per-sample gradients ``gs`` (B, *f.shape or its flattening). On the
    CPU one ``addcmul_`` per sample, which stays in cache and allocates nothing (measured 4x faster
    than ``gs.square().sum(0)`` for (32, 512, 512)); elsewhere the one-kernel reduction."""
    f2 = f.view(gs.shape[1:])
    if gs.device.type == "cpu":
        for gn in gs:
            f2.addcmul_(gn, gn)
    else:
        f2.add_(gs.square().sum(0))


def _ok(module: nn.Module) -> None:
    return None


# ---------------------------------------------------------------------- Linear (any input rank)
def _linear_accumulate(module: nn.Linear, inp: Tensor, gout: Tensor, g: dict, f: dict) -> None:
    """One token per sample (B, in): g_n = go_n x_nᵀ is an outer product, so Σ_n g_n = goᵀx and
    Σ_n g_n² = (go²)ᵀ(x²), two matrix products and no (B, out, in) tensor. Tokens: per sample."""
    if inp.dim() > 2 and inp[0].numel() != inp.shape[-1]:
        return _linear_per_sample(module, inp, gout, g, f)
    x, go = inp.reshape(-1, inp.shape[-1]), gout.reshape(-1, gout.shape[-1])
    if "weight" in g:
        g["weight"].addmm_(go.t(), x)
        f["weight"].addmm_(go.square().t(), x.square())
    if "bias" in g:
        g["bias"].add_(go.sum(0))
        f["bias"].add_(go.square().sum(0))


def _linear(module: nn.Linear, inp: Tensor, gout: Tensor, attrs: set) -> dict:
    b = inp.shape[0]
    x, go = inp.reshape(b, -1, inp.shape[-1]), gout.reshape(b, -1, gout.shape[-1])  # tokens summed per sample
    out = {}
    if "weight" in attrs:
        out["weight"] = torch.bmm(go.transpose(1, 2), x)
    if "bias" in attrs:
        out["bias"] = go.sum(1)
    return out


_linear_per_sample = _from_per_sample(_linear)


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


def patches(x: Tensor, kernel_size, stride, dilation) -> Tensor:
    """``F.unfold`` of a padded (B, C, H, W) input: (B, C*kh*kw, L), the same values in the same
    order, made as one copy of a strided view (on the CPU 1.1-2.3x faster than ``F.unfold``)."""
    b, c = x.shape[:2]
    v = x
    for dim, (k, s, d) in enumerate(zip(kernel_size, stride, dilation), start=2):
        v = v.unfold(dim, d * (k - 1) + 1, s)[..., ::d] if d > 1 else v.unfold(dim, k, s)
    # v: (B, C, oh, ow, kh, kw)
    return v.permute(0, 1, 4, 5, 2, 3).reshape(b, c * kernel_size[0] * kernel_size[1], -1)


def samples_as_groups(inp: Tensor, gout: Tensor, weight_shape: torch.Size, stride, dilation, groups: int) -> Tensor:
    """Per-sample weight-gradients (B, *weight_shape) of a convolution with padding 0: one
    weight-gradient with the chunk's samples as extra groups."""
    b, dims = inp.shape[0], inp.dim() - 2
    shape = (weight_shape[0] * b, *weight_shape[1:])
    w = _CONV_WEIGHT[dims](inp.reshape(1, -1, *inp.shape[2:]), shape, gout.reshape(1, -1, *gout.shape[2:]),
                           stride=stride, padding=0, dilation=dilation, groups=groups * b)
    return w.view(b, *weight_shape)


def pointwise_per_sample(inp: Tensor, gout: Tensor, stride) -> Tensor:
    """Per-sample weight-gradients (B, Cout, Cin) of a 1x1 convolution with groups 1 and padding 0
    (a Linear over the output positions): one batched matrix product."""
    index = (slice(None), slice(None)) + tuple(slice(0, n * s, s) for n, s in zip(gout.shape[2:], stride))
    x = inp[index]
    b = inp.shape[0]
    return torch.bmm(gout.reshape(b, gout.shape[1], -1), x.reshape(b, x.shape[1], -1).transpose(1, 2))


def _conv(module: nn.modules.conv._ConvNd, inp: Tensor, gout: Tensor, attrs: set) -> dict:
    out = {}
    if "weight" in attrs and module.groups == 1 and all(k == 1 for k in module.kernel_size):
        out["weight"] = pointwise_per_sample(padded_input(module, inp), gout, module.stride)
    elif "weight" in attrs:
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


# ---------------------------------------------------------------------- MultiheadAttention
_MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def _multihead_attention(module: nn.MultiheadAttention, call: tuple, gout: Tensor, attrs: set) -> dict:
    """Per-sample gradients of any of the module's parameters (``in_proj_weight``, ``out_proj.weight``,
    ...): the module's own forward for one sample at a time under ``vmap(grad)``, contracted with
    that sample's output-gradient. Exact for batched inputs with masks shared by the batch or
    per sample (``key_padding_mask``); a per-sample-and-head ``attn_mask`` (3-D) is refused."""
    args, kwargs = call
    bound = _MHA_SIGNATURE.bind(module, *args, **kwargs)
    bound.apply_defaults()
    a = dict(bound.arguments)
    a.pop("self")
    query, key, value, padding = a.pop("query"), a.pop("key"), a.pop("value"), a.pop("key_padding_mask")
    if query.dim() != 3:
        raise NotExact("MultiheadAttention called on an unbatched input")
    if a["attn_mask"] is not None and a["attn_mask"].dim() == 3:
        raise NotExact("MultiheadAttention with a per-sample attn_mask (3-D)")
    bd = 0 if module.batch_first else 1
    params = {n: module.get_parameter(n).detach() for n in attrs}

    def contracted(p, q, k, v, pad, go):
        return (functional_call(module, p, (q, k, v), {**a, "key_padding_mask": pad})[0] * go).sum()

    # only the transformed function is differentiated; attention on the math kernel, which vmap batches
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        return vmap(grad(contracted), in_dims=(None, bd, bd, bd, None if padding is None else 0, bd))(
            params, query, key, value, padding, gout)


def _self_attention(module: nn.MultiheadAttention, args: tuple, kwargs: dict):
    """The common call -- self-attention (query, key and value one tensor), batched, no masks,
    ``need_weights=False``, packed projections without ``bias_k``/``bias_v`` or zero attention, no
    dropout -- as ``in_proj`` (tapped), scaled dot-product attention and ``out_proj`` (tapped); any
    other call: None (the whole-call rule)."""
    a = _MHA_SIGNATURE.bind(module, *args, **kwargs)
    a.apply_defaults()
    a = a.arguments
    x = a["query"]
    if not (x is a["key"] is a["value"] and x.dim() == 3 and module._qkv_same_embed_dim
            and module.bias_k is None and not module.add_zero_attn and a["key_padding_mask"] is None
            and a["attn_mask"] is None and not a["need_weights"] and not a["is_causal"]
            and not (module.training and module.dropout > 0)):
        return None
    xb = x if module.batch_first else x.transpose(0, 1)  # (B, T, E)
    b, t, e = xb.shape
    qkv = F.linear(xb, module.in_proj_weight, module.in_proj_bias)  # (B, T, 3E)
    q, k, v = qkv.view(b, t, 3, module.num_heads, e // module.num_heads).permute(2, 0, 3, 1, 4)
    att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, e)
    out = F.linear(att, module.out_proj.weight, module.out_proj.bias)
    taps = [(qkv, Tap(xb.detach(), "in_proj_weight", "in_proj_bias")),
            (out, Tap(att.detach(), "out_proj.weight", "out_proj.bias"))]
    return (out if module.batch_first else out.transpose(0, 1), None), taps


def accumulate_tap(tap: Tap, gout: Tensor, g: dict, f: dict) -> None:
    """``g[attr] += Σ_n g_n``, ``f[attr] += Σ_n g_n²`` for the tap's weight and bias (those in ``g``),
    from the output-gradient ``gout`` of its linear map: the Linear rule."""
    parts = {"weight": tap.weight, "bias": tap.bias}
    g2 = {k: g[a] for k, a in parts.items() if a in g}
    if g2:
        _linear_accumulate(None, tap.inp, gout, g2, {k: f[parts[k]] for k in g2})


_conv_rule = LayerRule(_ok, _from_per_sample(_conv))
_conv_t_rule = LayerRule(_conv_transpose_check, _from_per_sample(_conv_transpose))
_bn_rule = LayerRule(_batch_norm_check, _from_per_sample(_batch_norm))

#: stock layer type -> its rule
RULES: dict[type, LayerRule] = {
    nn.Linear: LayerRule(_ok, _linear_accumulate),
    nn.Conv1d: _conv_rule, nn.Conv2d: _conv_rule, nn.Conv3d: _conv_rule,
    nn.ConvTranspose1d: _conv_t_rule, nn.ConvTranspose2d: _conv_t_rule, nn.ConvTranspose3d: _conv_t_rule,
    nn.BatchNorm1d: _bn_rule, nn.BatchNorm2d: _bn_rule, nn.BatchNorm3d: _bn_rule,
    nn.LayerNorm: LayerRule(_ok, _from_per_sample(_layer_norm)),
    nn.GroupNorm: LayerRule(_ok, _from_per_sample(_group_norm)),
    nn.Embedding: LayerRule(_embedding_check, _embedding_accumulate),
    nn.MultiheadAttention: LayerRule(_ok, _from_per_sample(_multihead_attention), whole_call=True,
                                     reexpress=_self_attention),
}
