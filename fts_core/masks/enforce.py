"""Keeping pruned weights at exactly zero while a masked model trains: ``apply_masks``.

After :func:`apply_masks`, pruned weights are exactly 0 after every step of any ``torch.optim``
optimizer, passed or not, created before or after, with or without momentum state from dense
steps (two mechanisms, see :func:`apply_masks`; ``benchmarks/README.md`` says what they cost).
The parameters keep their names (unlike ``torch.nn.utils.prune`` and parametrizations, which
rename them), so scores, masks and checkpoints stay keyed the same way; the masks live with the
model (``model.fts_masks``). ``copy.deepcopy(model)`` copies ``model.fts_masks`` but not the
enforcement: call ``apply_masks`` on the copy.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.weak import WeakIdKeyDictionary

from fts_core.masks.prunable import check_masks

__all__ = ["apply_masks", "remove_masks", "is_masked", "mask_optimizer_state"]


def _make_grad_hook(mask: Tensor) -> Callable[[Tensor], Tensor]:
    laid_out = [mask]  # the mask in the memory layout (strides) and device of the gradients seen last

    def hook(grad: Tensor) -> Tensor:
        m = laid_out[0]
        if m.stride() != grad.stride() or m.device != grad.device:  # NHWC training, a moved model
            m = laid_out[0] = torch.empty_like(grad, dtype=torch.bool).copy_(mask)
        return torch.where(m, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
    return hook


class _Pruned:
    """The pruned entries of one parameter (``True`` = pruned), kept in the parameter's layout."""

    __slots__ = ("pruned",)

    def __init__(self, keep: Tensor) -> None:
        self.pruned = ~keep

    def zero(self, p: Tensor) -> None:
        m = self.pruned
        if m.device != p.device or m.stride() != p.stride():  # moved or switched to NHWC after masking
            m = self.pruned = torch.empty_like(p, dtype=torch.bool).copy_(m)
        p.masked_fill_(m, 0.0)


# parameter -> its pruned entries; weak, so a model that is dropped takes its entries with it
_PRUNED: WeakIdKeyDictionary = WeakIdKeyDictionary()
_STEP_HOOK: list[Any] = []  # the handle of the global optimizer post-step hook, once registered


@torch.no_grad()
def _zero_pruned_after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Global ``Optimizer.step`` post-hook: pruned weights back to exactly 0 after every step of
    every ``torch.optim`` optimizer, whichever state (momentum, Adam moments) it carries."""
    if not _PRUNED:
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            entry = _PRUNED.get(p)
            if entry is not None:
                entry.zero(p)


def _ensure_step_hook() -> None:
    if not _STEP_HOOK:
        _STEP_HOOK.append(register_optimizer_step_post_hook(_zero_pruned_after_step))


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

    After this call the pruned weights are exactly 0 after every step of every ``torch.optim``
    optimizer, whether it existed before the call or not, was passed here or not, carries
    momentum or Adam moments from dense steps or not, and also when the model is wrapped by
    ``torch.compile`` or moved to another device or dtype (in place, as ``model.to`` does). Two
    mechanisms: a gradient hook per masked parameter (pruned gradient entries -> 0, so the
    gradient and what an optimizer accumulates from it stay sparse), and one global
    ``Optimizer.step`` post-hook that sets the pruned entries back to 0 after each step (so
    momentum or weight decay cannot revive them). ``optimizer``, when given, also gets the
    pruned entries of its state zeroed (momentum buffers left by a dense warm-up), which keeps
    the trajectory of the kept weights that of a model trained sparse from the start.

    Masks already applied are replaced; :func:`remove_masks` undoes everything but the zeros.
    Sets ``model.fts_masks`` (the masks on each parameter's device). Returns ``model``.
    """
    params = check_masks(model, masks)
    remove_masks(model)
    _ensure_step_hook()
    placed: dict[str, Tensor] = {}
    handles = []
    for name, m in masks.items():
        p = params[name]
        m = m.to(p.device)
        p.masked_fill_(~m, 0.0)  # +0.0, never -0.0
        if p.requires_grad:
            handles.append(p.register_hook(_make_grad_hook(m)))
        _PRUNED[p] = _Pruned(m)
        placed[name] = m
    if optimizer is not None:
        mask_optimizer_state(optimizer, model, placed)
    model.fts_masks = placed
    model._fts_mask_handles = handles
    return model


def remove_masks(model: nn.Module) -> dict[str, Tensor] | None:
    """Undo :func:`apply_masks` (the weights stay as they are, and are free to train again).
    Returns the old masks (None if there were none)."""
    for h in getattr(model, "_fts_mask_handles", ()):
        h.remove()
    if hasattr(model, "_fts_mask_handles"):
        del model._fts_mask_handles
    old = model.__dict__.pop("fts_masks", None)
    if old is not None:
        params = dict(model.named_parameters())
        for name in old:
            if name in params:
                _PRUNED.pop(params[name], None)
    return old


def is_masked(model: nn.Module) -> bool:
    """Whether :func:`apply_masks` holds masks on ``model``."""
    return getattr(model, "fts_masks", None) is not None

