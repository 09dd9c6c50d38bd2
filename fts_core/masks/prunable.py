"""Which weights are prunable, and checks of masks against a model.

A *mask* is a ``dict[str, BoolTensor]`` keyed by parameter name (as in
``model.named_parameters()``), each tensor shaped like its parameter, ``True`` = keep.
Sparsity ``s`` is the pruned fraction of the prunable weights (not of all parameters).
"""
from __future__ import annotations

from typing import Callable, Mapping, Union

from torch import Tensor, nn
import torch

__all__ = ["PRUNABLE_RULES", "prunable_parameters", "check_masks", "owner"]

Rule = Union[str, Callable[[str, nn.Parameter, nn.Module], bool]]
PRUNABLE_RULES = ("default", "authors", "all_weights")
_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: rule "all_weights": the weight matrices (or tensors) of these layers, by attribute name
_ALL_WEIGHTS: tuple[tuple[type, Callable[[str], bool]], ...] = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
      nn.Bilinear, nn.Embedding, nn.EmbeddingBag), lambda attr: attr == "weight"),
    ((nn.RNNBase, nn.RNNCellBase), lambda attr: attr.startswith(("weight_ih", "weight_hh"))),
    ((nn.MultiheadAttention,), lambda attr: attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight",
                                                       "v_proj_weight")),
)


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
      - ``"all_weights"``: every weight a user may want to prune, the classifier included:
        the ``weight`` of Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear, Bilinear, Embedding and
        EmbeddingBag; the input and recurrent weights (``weight_ih*``, ``weight_hh*``) of RNN,
        LSTM and GRU and their cells; the attention projections of MultiheadAttention
        (``in_proj_weight`` or ``q/k/v_proj_weight``, and ``out_proj``, a Linear). Biases,
        normalisation layers and positional parameters stay dense.
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
    elif rule == "all_weights":
        def keep(n: str, p: nn.Parameter) -> bool:
            attr = n.rpartition(".")[2]
            return any(isinstance(owners[n], kinds) and wanted(attr) for kinds, wanted in _ALL_WEIGHTS)
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




def owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """``(module, attribute)`` owning the parameter ``name`` (e.g. ``"layer1.0.conv1.weight"``)."""
    mname, _, attr = name.rpartition(".")
    return (model.get_submodule(mname) if mname else model), attr


def check_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, nn.Parameter]:
    """The model's parameters by name, after checking that every mask names one of them, is a
    bool tensor and has its shape (``ValueError`` naming the mask otherwise)."""
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

