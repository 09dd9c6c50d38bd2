"""Masks: which weights are prunable, scores -> keep-masks, applying and enforcing them, reports.

A *mask* is a ``dict[str, BoolTensor]`` keyed by parameter name (as in
``model.named_parameters()``), each tensor shaped like its parameter, ``True`` = keep.
Sparsity ``s`` is the pruned fraction of the prunable weights (not of all parameters).

Rounding. ``make_masks`` keeps exactly ``k = round((1 - s) * n)`` weights, where ``n`` is the
number of prunable weights in the scope (all of them for ``scope="global"``, one tensor for
``scope="layer"``), ``(1 - s) * n`` is computed in float64 and ``round`` is Python's
round-half-to-even (``round(2.5) == 2``, ``round(3.5) == 4``). The authors' code keeps
``max(floor((1 - s) * P), 1)`` (global only); ``rounding="authors"`` selects that rule.

Ties. Scores are ranked by a *stable* descending sort of the concatenation of the
flattened score tensors in dict order; among equal scores the one with the lower position
(earlier layer, then lower flat index) is kept. Masks are therefore a pure function of
the scores, on every device.

Enforcement (``apply_masks``). Pruned weights are zeroed once, and then kept *exactly* zero by
(i) a gradient hook per masked parameter that replaces the pruned gradient entries by 0
(``torch.where``, so even a NaN/inf gradient cannot leak), and (ii) zeroing the pruned
entries of the optimizer's per-parameter state (SGD's ``momentum_buffer``, Adam's moments)
when an optimizer is passed. With a zero weight, zero gradient and zero momentum, SGD's
update ``p -= lr * (mu * buf + g + wd * p)`` is exactly 0 for every pruned entry, step after
step (the authors' code masked once and let a warm-up momentum buffer move pruned weights).
Why not ``torch.nn.utils.prune`` / parametrizations: both recompute ``weight = orig * mask``
at every forward (an extra weight-sized multiply and tensor per layer, and a backward
through it) and rename the parameter (``weight_orig`` / ``parametrizations.weight.original``),
which breaks the parameter names that scorers, masks and checkpoints are keyed by. The
speed difference is not the reason: measured on this shared 2-core CPU (ResNet18 width 1/8,
batch 64, SGD step in train mode, 1 thread, min of 3 interleaved runs of 15 steps;
``_benchmark_enforcement``), no mask / hooks / prune / parametrize took 118 / 107 / 82 /
79 ms per step in one run and 73 / 77 / 73 / 75 ms in another: the differences are below
the noise of the shared machine. A hook costs one masked select per layer per backward and
does not touch the forward.

Caveats: hooks live on the parameter tensors, so ``copy.deepcopy(model)`` copies
``model.fts_masks`` but not the hooks (call ``apply_masks`` on the copy); an optimizer
created *after* ``apply_masks`` starts with empty state and needs nothing.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterable, Mapping, Union

import torch
from torch import Tensor, nn

__all__ = [
    "PRUNABLE_RULES",
    "prunable_parameters",
    "make_masks",
    "apply_masks",
    "remove_masks",
    "layer_density",
    "mask_summary",
    "collapsed_layers",
    "CollapseReport",
]

Rule = Union[str, Callable[[str, nn.Parameter, nn.Module], bool]]
PRUNABLE_RULES = ("default", "authors")
ROUNDINGS = ("nearest", "authors")
SCOPES = ("global", "layer")
_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# --------------------------------------------------------------------------- prunable set
def _final_classifier(model: nn.Module) -> str | None:
    """Name of the final classifier: the module named ``linear``, else the last nn.Linear."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
            if name == "linear":
                return name
    return last


def prunable_parameters(model: nn.Module, rule: Rule = "default") -> dict[str, nn.Parameter]:
    """The prunable parameters of ``model``, by name, in ``named_parameters`` order.

    rule:
      - ``"default"``: the ``weight`` of every Conv1d/2d/3d and Linear module except the final
        classifier (the module named ``linear``, else the last ``nn.Linear``). Biases,
        BatchNorm and the classifier stay dense.
      - ``"authors"``: the authors' name rule: every trainable parameter whose name contains
        none of ``"bias"``, ``"linear"``, ``"bn"``. Their BatchNorm modules are all named
        ``bn*`` except ResNet's shortcut BN (``shortcut.1``), whose scale is therefore prunable
        (an accident of naming). Our VGG19 names its BN layers ``features.N``, so the rule is
        applied to the authors' naming: a BatchNorm parameter counts as named ``bn`` unless it
        sits under a module named ``shortcut``. This reproduces their prunable sets:
        ResNet18 23 tensors / 11,160,128 weights, VGG19 16 tensors / 20,018,880 (width 1).
      - a callable ``(name, param, module) -> bool``.

    Raises ValueError for an unknown rule or when no parameter is prunable.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    owners: dict[str, nn.Module] = {}
    for mname, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            owners[f"{mname}.{pname}" if mname else pname] = module
    if callable(rule):
        keep = lambda n, p: bool(rule(n, p, owners[n]))  # noqa: E731
    elif rule == "default":
        classifier = _final_classifier(model)

        def keep(n: str, p: nn.Parameter) -> bool:
            module = owners[n]
            mname = n.rsplit(".", 1)[0] if "." in n else ""
            return (
                isinstance(module, _WEIGHT_LAYERS)
                and n.endswith("weight")
                and module.weight is p
                and mname != classifier
            )
    elif rule == "authors":
        def keep(n: str, p: nn.Parameter) -> bool:
            bn_named = isinstance(owners[n], nn.modules.batchnorm._BatchNorm) and "shortcut" not in n
            return p.requires_grad and not bn_named and not any(t in n for t in ("bias", "linear", "bn"))
    else:
        raise ValueError(f"unknown prunable rule {rule!r}; allowed: {PRUNABLE_RULES} or a callable")
    out = {n: p for n, p in model.named_parameters() if keep(n, p)}
    if not out:
        raise ValueError(
            f"model {type(model).__name__} has no prunable parameter under rule "
            f"{rule if isinstance(rule, str) else getattr(rule, '__name__', 'callable')!r}"
        )
    return out


# --------------------------------------------------------------------------- scores -> masks
def _check_sparsity(sparsity: float) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a number in [0, 1], got {sparsity!r}") from None
    if isinstance(sparsity, bool) or not (0.0 <= s <= 1.0):  # also rejects NaN
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}")
    return s


def num_kept(n: int, sparsity: float, rounding: str = "nearest") -> int:
    """Number of weights kept out of ``n`` at ``sparsity`` (see the module docstring)."""
    s = _check_sparsity(sparsity)
    if rounding == "nearest":
        k = round((1.0 - s) * n)  # float64, round half to even
    elif rounding == "authors":
        k = max(math.floor((1.0 - s) * n), 1)
    else:
        raise ValueError(f"unknown rounding {rounding!r}; allowed: {ROUNDINGS}")
    return int(min(max(k, 0), n))


def _check_scores(scores: Mapping[str, Tensor]) -> None:
    if not isinstance(scores, Mapping) or len(scores) == 0:
        raise ValueError("scores must be a non-empty dict name -> tensor, got "
                         f"{type(scores).__name__} of length {len(scores) if hasattr(scores, '__len__') else '?'}")
    for name, s in scores.items():
        if not isinstance(s, Tensor):
            raise ValueError(f"score of layer {name!r} is a {type(s).__name__}, not a tensor")
        if s.numel() == 0:
            raise ValueError(f"score of layer {name!r} is empty (shape {tuple(s.shape)})")
        if s.is_complex() or s.dtype == torch.bool:
            raise ValueError(f"score of layer {name!r} has dtype {s.dtype}; need a real dtype")
        finite = torch.isfinite(s)
        if not bool(finite.all()):
            bad = (~finite).sum().item()
            kinds = sorted({"nan" if bool(torch.isnan(s).any()) else "", "inf" if bool(torch.isinf(s).any()) else ""} - {""})
            raise ValueError(f"score of layer {name!r} has {bad} non-finite value(s) ({'/'.join(kinds)})")


def _top_k_mask(flat: Tensor, k: int) -> Tensor:
    """Bool mask of the k largest entries of a 1-D tensor; ties -> lower index kept."""
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k >= flat.numel():
        mask.fill_(True)
    elif k > 0:
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:k]] = True
    return mask


def make_masks(
    scores: Mapping[str, Tensor],
    sparsity: float,
    scope: str = "global",
    *,
    rounding: str = "nearest",
) -> dict[str, Tensor]:
    """Keep-masks from scores (higher = keep).

    scores: ``{name: tensor}``, any real dtype/shape; sparsity in [0, 1] (pruned fraction).
    scope: ``"global"`` ranks all weights together and keeps ``round((1-s)·n_total)``;
    ``"layer"`` keeps ``round((1-s)·n_l)`` in every tensor. Returns ``{name: BoolTensor}``
    shaped and placed like the scores. Non-finite scores raise ValueError naming the layer.
    """
    s = _check_sparsity(sparsity)
    _check_scores(scores)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; allowed: {SCOPES}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; allowed: {ROUNDINGS}")
    if scope == "layer":
        return {
            n: _top_k_mask(t.detach().reshape(-1).double(), num_kept(t.numel(), s, rounding)).view(t.shape)
            for n, t in scores.items()
        }
    device = next(iter(scores.values())).device
    flat = torch.cat([t.detach().reshape(-1).to(device=device, dtype=torch.float64) for t in scores.values()])
    keep = _top_k_mask(flat, num_kept(flat.numel(), s, rounding))
    out, start = {}, 0
    for n, t in scores.items():
        out[n] = keep[start:start + t.numel()].view(t.shape).to(t.device)
        start += t.numel()
    return out


# --------------------------------------------------------------------------- apply / enforce
def _check_masks_against(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, nn.Parameter]:
    if not isinstance(masks, Mapping) or len(masks) == 0:
        raise ValueError("masks must be a non-empty dict name -> BoolTensor")
    params = dict(model.named_parameters())
    for name, m in masks.items():
        if name not in params:
            raise ValueError(f"mask {name!r} names no parameter of {type(model).__name__}; "
                             f"parameters include {list(params)[:6]}...")
        if not isinstance(m, Tensor) or m.dtype != torch.bool:
            raise ValueError(f"mask {name!r} must be a bool tensor, got "
                             f"{getattr(m, 'dtype', type(m).__name__)}")
        if m.shape != params[name].shape:
            raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, parameter has {tuple(params[name].shape)}")
    return params


def _make_grad_hook(mask: Tensor) -> Callable[[Tensor], Tensor]:
    laid_out = [mask]  # the mask in the memory layout (strides) of the gradients seen last

    def hook(grad: Tensor) -> Tensor:
        m = laid_out[0]
        if m.stride() != grad.stride():  # e.g. NHWC training: a mismatched layout costs ~3 % a step
            m = laid_out[0] = torch.empty_like(grad, dtype=torch.bool).copy_(mask)
        return torch.where(m, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
    return hook


@torch.no_grad()
def mask_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module, masks: Mapping[str, Tensor]) -> int:
    """Zero the pruned entries of every parameter-shaped optimizer state tensor. Returns how many
    state tensors were masked."""
    params = dict(model.named_parameters())
    count = 0
    for name, m in masks.items():
        state = optimizer.state.get(params[name])
        if not state:
            continue
        for value in state.values():
            if isinstance(value, Tensor) and value.shape == m.shape:
                value.masked_fill_(~m.to(value.device), 0)
                count += 1
    return count


@torch.no_grad()
def apply_masks(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    optimizer: torch.optim.Optimizer | None = None,
) -> nn.Module:
    """Zero the pruned weights of ``model`` in place and keep them exactly zero in training.

    Registers one gradient hook per masked parameter (pruned gradient entries -> 0) and,
    when ``optimizer`` is given, zeroes the pruned entries of its state (momentum buffers
    left by a warm-up). Masks already applied are replaced. Sets ``model.fts_masks`` (the
    masks moved to each parameter's device). Returns ``model``.
    """
    params = _check_masks_against(model, masks)
    remove_masks(model)
    placed: dict[str, Tensor] = {}
    handles = []
    for name, m in masks.items():
        p = params[name]
        m = m.to(p.device)
        p.masked_fill_(~m, 0.0)  # +0.0, never -0.0
        if p.requires_grad:
            handles.append(p.register_hook(_make_grad_hook(m)))
        placed[name] = m
    if optimizer is not None:
        mask_optimizer_state(optimizer, model, placed)
    model.fts_masks = placed
    model._fts_mask_handles = handles
    return model


def remove_masks(model: nn.Module) -> dict[str, Tensor] | None:
    """Remove the hooks of ``apply_masks`` (weights stay as they are). Returns the old masks."""
    for h in getattr(model, "_fts_mask_handles", ()):
        h.remove()
    if hasattr(model, "_fts_mask_handles"):
        del model._fts_mask_handles
    return model.__dict__.pop("fts_masks", None)


# --------------------------------------------------------------------------- reports
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
        _check_masks_against(model, masks)
        path, eff = _path_analysis(model, masks, input_shape)
    return CollapseReport(empty, path_exists=path, kept=kept, total=total, effective_density=eff)


# --------------------------------------------------------------------------- measurement
def _benchmark_enforcement(width: float = 0.125, batch: int = 64, steps: int = 20,
                           repeats: int = 3) -> dict[str, float]:
    """ms per SGD step (train mode) with no mask, gradient hooks, torch.nn.utils.prune and
    parametrizations, on a width-reduced ResNet18 at 90 % random sparsity. For the docstring."""
    import time

    import torch.nn.utils.parametrize as parametrize
    import torch.nn.utils.prune as tprune

    from fts_core.models import build_model

    class _Mask(nn.Module):
        def __init__(self, m: Tensor) -> None:
            super().__init__()
            self.register_buffer("m", m)

        def forward(self, w: Tensor) -> Tensor:
            return w * self.m

    def timed(kind: str) -> float:
        torch.manual_seed(0)
        model = build_model("resnet18", width=width)
        scores = {n: torch.rand_like(p) for n, p in prunable_parameters(model).items()}
        masks = make_masks(scores, 0.9)
        if kind == "hooks":
            apply_masks(model, masks)
        elif kind == "prune":
            for n, m in masks.items():
                mod = model.get_submodule(n.rsplit(".", 1)[0])
                tprune.custom_from_mask(mod, "weight", m)
        elif kind == "parametrize":
            for n, m in masks.items():
                parametrize.register_parametrization(model.get_submodule(n.rsplit(".", 1)[0]), "weight", _Mask(m.float()))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
        model.train()
        for i in range(steps + 3):
            if i == 3:
                t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return 1000 * (time.perf_counter() - t0) / steps

    kinds = ("none", "hooks", "prune", "parametrize")
    runs: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(repeats):  # interleaved, the minimum is the least disturbed by other load
        for k in kinds:
            runs[k].append(timed(k))
    return {k: min(v) for k, v in runs.items()}
