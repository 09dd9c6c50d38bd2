"""What a mask leaves of a network: per-layer density, summaries, and layer collapse.

Layer collapse (Tanaka et al. 2020): a prunable layer with no weight left. Whether the network
is still connected is checked exactly by a SynFlow-style pass (:func:`collapsed_layers`), since
in a ResNet a shortcut can bridge an empty layer.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from fts_core.masks.enforce import remove_masks
from fts_core.masks.prunable import check_masks, prunable_parameters

__all__ = ["layer_density", "mask_summary", "collapsed_layers", "CollapseReport"]


def _masks_of(model_or_masks: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(model_or_masks, nn.Module):
        masks = getattr(model_or_masks, "fts_masks", None)
        if masks is not None:
            return dict(masks)
        return {n: p.detach() != 0 for n, p in prunable_parameters(model_or_masks).items()}
    if isinstance(model_or_masks, Mapping) and len(model_or_masks) > 0:
        return dict(model_or_masks)
    raise ValueError(f"expected a model or a non-empty dict of masks, got {type(model_or_masks).__name__}")


def layer_density(model_or_masks: nn.Module | Mapping[str, Tensor]) -> dict[str, float]:
    """Kept fraction per layer, ``{name: float in [0, 1]}``, in mask order.

    Given a model: its ``fts_masks`` if applied, else the non-zero fraction of each prunable
    parameter (default rule)."""
    masks = _masks_of(model_or_masks)
    return {n: float(m.float().mean().item()) if m.numel() else 0.0 for n, m in masks.items()}


def mask_summary(model_or_masks: nn.Module | Mapping[str, Tensor]) -> dict[str, Any]:
    """``{"kept": int, "total": int, "density": float, "sparsity": float, "layers": {name: density}}``."""
    masks = _masks_of(model_or_masks)
    kept = int(sum(int(m.sum().item()) for m in masks.values()))
    total = int(sum(m.numel() for m in masks.values()))
    return {"kept": kept, "total": total, "density": kept / total if total else 0.0,
            "sparsity": 1 - kept / total if total else 1.0, "layers": layer_density(masks)}


class CollapseReport(list):
    """The layers with no weight left (a ``list[str]``, so ``len()``/``json`` work), plus:

    ``path_exists``: whether any input->output path through kept weights remains (None when no
    model was given); ``collapsed``: empty layer or no path; ``effective_density``: per masked
    layer, the fraction of its weights that are kept *and* lie on an input->output path (None
    without a model); ``kept``/``total``: prunable weight counts.
    """

    def __init__(self, empty: Iterable[str], *, path_exists: bool | None, kept: int, total: int,
                 effective_density: dict[str, float] | None) -> None:
        super().__init__(empty)
        self.path_exists = path_exists
        self.kept = kept
        self.total = total
        self.effective_density = effective_density

    @property
    def empty_layers(self) -> list[str]:
        return list(self)

    @property
    def collapsed(self) -> bool:
        return len(self) > 0 or self.path_exists is False

    def to_dict(self) -> dict[str, Any]:
        return {"empty_layers": list(self), "path_exists": self.path_exists, "collapsed": self.collapsed,
                "kept": self.kept, "total": self.total, "effective_density": self.effective_density}

    def __repr__(self) -> str:
        return (f"CollapseReport(empty_layers={list(self)}, path_exists={self.path_exists}, "
                f"kept={self.kept}/{self.total})")


class _ChannelScale(nn.Module):
    """Normalisation layer replaced by a per-channel scale (BatchNorm/GroupNorm -> dim 1)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, *([1] * (x.dim() - 2)))


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _infer_input_shape(model: nn.Module) -> tuple[int, ...]:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return (1, module.in_channels, 32, 32)
        if isinstance(module, nn.Conv1d):
            return (1, module.in_channels, 32)
        if isinstance(module, nn.Linear):
            return (1, module.in_features)
    raise ValueError(f"cannot infer the input shape of {type(model).__name__}; pass input_shape=")


def _path_analysis(model: nn.Module, masks: Mapping[str, Tensor],
                   input_shape: tuple[int, ...] | None) -> tuple[bool, dict[str, float]]:
    """Binary connectivity pass (SynFlow-style): every masked weight -> its mask (0/1), every other
    weight -> 1, biases -> 0, norms -> per-channel scale (mask or 1), max-pools -> avg-pools,
    all-ones input, float64. With non-negative weights and inputs the output is > 0 iff an
    input->output path exists, and d(sum out)/d(w_q) > 0 iff a path runs through w_q."""
    if input_shape is None:
        input_shape = _infer_input_shape(model)
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    remove_masks(net)
    mask_by_name = {n: m.detach().to("cpu") for n, m in masks.items()}
    for mname, module in list(net.named_modules()):
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
            channels = module.num_features if hasattr(module, "num_features") else module.num_channels
            wname = f"{mname}.weight" if mname else "weight"
            w = mask_by_name[wname].double() if wname in mask_by_name else torch.ones(channels, dtype=torch.float64)
            _set_submodule(net, mname, _ChannelScale(w))  # keeps the name "<module>.weight"
        elif isinstance(module, nn.LayerNorm):
            _set_submodule(net, mname, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            _set_submodule(net, mname, nn.AvgPool2d(module.kernel_size, module.stride, module.padding,
                                                    ceil_mode=module.ceil_mode))
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            _set_submodule(net, mname, nn.AdaptiveAvgPool2d(module.output_size))
    params = dict(net.named_parameters())
    tracked: dict[str, Tensor] = {}
    with torch.no_grad():
        for n, p in params.items():
            p.requires_grad_(False)
            leaf = n.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.zero_()
            elif n in mask_by_name:
                p.copy_(mask_by_name[n].double())
            else:
                p.fill_(1.0)
    params = dict(net.named_parameters())
    for n in mask_by_name:
        p = params.get(n)
        if p is None:
            raise ValueError(f"mask {n!r} names no parameter of {type(model).__name__}")
        p.requires_grad_(True)
        tracked[n] = p
    out = net(torch.ones(input_shape, dtype=torch.float64))
    total = out.sum()
    path = bool(total.item() > 0)
    if not torch.isfinite(total):
        raise ValueError("path count overflowed float64; the model is too deep/wide for the path check")
    eff: dict[str, float] = {}
    if path:
        grads = torch.autograd.grad(total, list(tracked.values()), allow_unused=True)
        for (n, p), g in zip(tracked.items(), grads):
            on_path = (g > 0) & (p.detach() > 0) if g is not None else torch.zeros_like(p, dtype=torch.bool)
            eff[n] = float(on_path.double().mean().item())
    else:
        eff = {n: 0.0 for n in tracked}
    return path, eff


def collapsed_layers(
    masks: Mapping[str, Tensor] | nn.Module,
    model: nn.Module | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
) -> CollapseReport:
    """Layer collapse: the masked layers with no weight left, and (given ``model``) whether any
    input->output path through kept weights remains.

    masks: ``{name: BoolTensor}`` or a model with ``fts_masks`` (then it is also the model).
    input_shape: for the path check; default ``(1, C, 32, 32)`` from the first conv (or
    ``(1, in_features)`` for a leading Linear). Returns a :class:`CollapseReport` (a list of
    the empty layer names with ``path_exists``, ``collapsed``, ``effective_density``).
    The path check runs on a float64 CPU copy; the model is not modified.
    """
    if isinstance(masks, nn.Module):
        model = masks if model is None else model
        if getattr(masks, "fts_masks", None) is None:
            raise ValueError("model has no fts_masks; pass masks or call apply_masks first")
        masks = masks.fts_masks
    masks = _masks_of(masks)
    empty = [n for n, m in masks.items() if not bool(m.any())]
    kept = int(sum(int(m.sum().item()) for m in masks.values()))
    total = int(sum(m.numel() for m in masks.values()))
    path, eff = (None, None)
    if model is not None:
        check_masks(model, masks)
        path, eff = _path_analysis(model, masks, input_shape)
    return CollapseReport(empty, path_exists=path, kept=kept, total=total, effective_density=eff)

