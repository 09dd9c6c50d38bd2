"""One epoch of training, evaluation, and the BatchNorm-statistics-only warm-up.

Device-agnostic and free of per-step host synchronisation: losses and correct counts are
accumulated as device tensors and read back once per call (one ``.tolist()``), so a CUDA
device never waits for the host inside the loop. Batches come from any iterable of
``(x float (B, C, H, W), y int64 (B,))`` already on the model's device (a ``TensorLoader``).
"""
from __future__ import annotations

import time
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fts_core.setup.device import synchronize

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD over all parameters, weight decay on all of them (the authors' setting); the values
    are RunConfig's (``lr``, ``momentum``, ``weight_decay``), which hold the protocol's defaults."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, milestones: Sequence[int],
                   gamma: float) -> torch.optim.lr_scheduler.MultiStepLR:
    """MultiStepLR stepped once per epoch; milestones count from epoch 0 of the run (RunConfig's
    ``milestones`` and ``gamma``)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def train_epoch(
    model: nn.Module,
    loader: Batches,
    optimizer: torch.optim.Optimizer,
    *,
    channels_last: bool = False,
    quiet: bool = True,
    desc: str = "train",
) -> dict[str, float]:
    """One pass of SGD with cross-entropy over ``loader`` (model in train mode).

    Returns ``loss`` (mean per image), ``accuracy`` (fraction), ``images``, ``seconds``
    (wall time including the final device sync) and ``images_per_s``. Masks installed by
    ``apply_masks`` act through their gradient hooks; nothing here knows about them.
    """
    device = _device_of(model)
    model.train()
    loss_sum = torch.zeros((), device=device, dtype=torch.float32)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    images = 0
    bar = None
    if not quiet:
        bar = tqdm(total=_safe_len(loader), desc=desc, leave=False, unit="batch")
    start = time.perf_counter()
    for x, y in loader:
        x = _to_memory_format(x, channels_last)
        out = model(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = y.shape[0]
        images += n
        loss_sum += loss.detach().float() * n
        correct += (out.detach().argmax(dim=1) == y).sum()
        if bar is not None:
            bar.update(1)
    if images == 0:
        raise ValueError("train_epoch: the loader yielded no batches")
    loss_total, correct_total = torch.stack([loss_sum, correct.float()]).tolist()
    synchronize(device)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    return {
        "loss": loss_total / images,
        "accuracy": correct_total / images,
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds if seconds > 0 else float("inf"),
    }


@torch.no_grad()
def evaluate(model: nn.Module, loader: Batches, *, channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy ``loss`` and ``accuracy`` over ``loader`` in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    device = _device_of(model)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float32)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    images = 0
    try:
        for x, y in loader:
            out = model(_to_memory_format(x, channels_last))
            loss_sum += F.cross_entropy(out, y, reduction="sum").float()
            correct += (out.argmax(dim=1) == y).sum()
            images += y.shape[0]
    finally:
        model.train(was_training)
    if images == 0:
        raise ValueError("evaluate: the loader yielded no batches")
    loss_total, correct_total = torch.stack([loss_sum, correct.float()]).tolist()
    return {"loss": loss_total / images, "accuracy": correct_total / images, "images": images}


@torch.no_grad()
def refresh_batchnorm(model: nn.Module, loader: Batches, num_batches: int | None = None) -> int:
    """BatchNorm-statistics-only warm-up: train-mode forwards, no gradients, no weight update.

    Only BatchNorm running means/variances (and their batch counters) change, with each
    layer's own momentum. Returns the number of batches seen. The mode is restored.
    """
    if num_batches is not None and num_batches <= 0:
        raise ValueError(f"refresh_batchnorm: num_batches={num_batches} must be > 0 or None")
    was_training = model.training
    model.train()
    seen = 0
    try:
        for x, _ in loader:
            if num_batches is not None and seen >= num_batches:
                break
            model(x)
            seen += 1
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("refresh_batchnorm: the loader yielded no batches")
    return seen


def _safe_len(loader: Batches) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
