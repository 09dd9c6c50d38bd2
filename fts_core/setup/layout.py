"""Memory layout for training: when NHWC (``channels_last``) is used, and when it must not be.

``RunConfig.channels_last = None`` (the default) means: NHWC on the CPU when the model is safe
for it (there NHWC trains faster; ``benchmarks/README.md``), NCHW elsewhere (GPU layouts are left
to cuDNN).

Unsafe: oneDNN's 1x1 *strided* convolution weight-gradient with NHWC input and fewer input
channels than its channel block writes past a workspace (uxlfoundation/oneDNN#6035): heap
corruption ("double free or corruption"), hangs or silently wrong weight gradients; NCHW is
unaffected. A ResNet18 at width ≤ 3/16 has such a layer (its first shortcut has 8 or 12 input
channels). :func:`channels_last_hazard` names it.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["NHWC_MIN_STRIDED_1X1_CHANNELS", "channels_last_hazard", "resolve_channels_last"]

#: strided 1x1 convolutions need at least this many input channels for NHWC on the CPU
NHWC_MIN_STRIDED_1X1_CHANNELS = 16


def channels_last_hazard(model: nn.Module) -> str | None:
    """The first layer of ``model`` that NHWC training on the CPU would hit oneDNN#6035 with
    (a Conv2d with a 1x1 kernel, stride > 1 and < 16 input channels), as a message; else None."""
    for name, m in model.named_modules():
        if (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and max(m.stride) > 1
                and m.in_channels // m.groups < NHWC_MIN_STRIDED_1X1_CHANNELS):
            return (f"layer {name!r} (1x1 convolution, stride {tuple(m.stride)}, {m.in_channels} input channels) "
                    f"needs >= {NHWC_MIN_STRIDED_1X1_CHANNELS} input channels for channels_last on the CPU: oneDNN's "
                    "weight-gradient corrupts memory there (uxlfoundation/oneDNN#6035)")
    return None


def resolve_channels_last(setting: bool | None, model: nn.Module, device: torch.device) -> bool:
    """Whether to train ``model`` on ``device`` in NHWC: ``setting`` True/False as given,
    None = on the CPU when :func:`channels_last_hazard` finds nothing.

    Raises ValueError for ``setting=True`` on the CPU with a hazardous layer (naming it).
    """
    if device.type != "cpu":
        return bool(setting)
    hazard = channels_last_hazard(model)
    if setting is None:
        return hazard is None
    if setting and hazard is not None:
        raise ValueError(f"channels_last=True: {hazard}; use channels_last=false or null (automatic), "
                         "or a wider model")
    return setting
