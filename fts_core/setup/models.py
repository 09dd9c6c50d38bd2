"""Models used in the paper (CIFAR ResNet18, VGG19 with BatchNorm) and small extras.

Every model maps images ``(B, in_channels, H, W)`` (float, normalised) to logits
``(B, num_classes)``; the final classifier is always the ``nn.Linear`` named ``linear``.
Weights use PyTorch's default initialisation, as in the authors' code. ``width`` multiplies every
channel / hidden count, ``max(1, round(c * width))`` (``width=0.25``: a ResNet18 of 16..128 channels).
:func:`register_model` adds a model by name (``book/guide.md``, "Adding a model").
"""
from __future__ import annotations

import inspect
import math
from typing import Callable, Sequence

import torch
from torch import nn

from fts_core.hints import unknown_names

ModelFn = Callable[..., nn.Module]

MODELS: dict[str, ModelFn] = {}


def register_model(name: str, *, overwrite: bool = False) -> Callable[[ModelFn], ModelFn]:
    """Decorator adding ``fn(num_classes, in_channels, width, **kwargs) -> nn.Module`` to MODELS.

    Registering an existing name raises ValueError unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")

    def decorator(fn: ModelFn) -> ModelFn:
        if name in MODELS and not overwrite:
            raise ValueError(f"model {name!r} is already registered; pass overwrite=True to replace it")
        MODELS[name] = fn
        return fn

    return decorator


def scaled(channels: int, width: float) -> int:
    """Channel count ``channels`` scaled by ``width``, at least 1."""
    return max(1, round(channels * width))


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                **kwargs) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a key of MODELS (``resnet18``, ``vgg19``, ``mlp``, ``small_cnn``, ...).
        num_classes: number of output logits (>= 1).
        in_channels: image channels (3 for CIFAR, 1 for Fashion-MNIST / digits).
        width: channel multiplier (> 0); 1.0 is the paper's size.
        **kwargs: model-specific options (e.g. ``hidden``, ``input_size`` for ``mlp``).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {unknown_names([name], MODELS)}; known models: {', '.join(sorted(MODELS))}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width must be a finite number > 0, got {width!r}")
    fn = MODELS[name]
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = [p for p in params if p not in ("num_classes", "in_channels", "width")]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for model {name!r}; allowed: {allowed or 'none'}")
    return fn(num_classes=num_classes, in_channels=in_channels, width=float(width), **kwargs)


# --------------------------------------------------------------------------- ResNet18
class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (identity, or 1x1 conv + BN when the shape changes).

    ``(B, in_planes, H, W) -> (B, planes, H / stride, W / stride)``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()  # identity
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stride-1 stem (no max-pool), four stages, global average pool, ``linear``."""

    def __init__(self, blocks: Sequence[int], num_classes: int, in_channels: int, width: float) -> None:
        super().__init__()
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        in_planes = planes[0]
        for i, (p, n) in enumerate(zip(planes, blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, p, stride if j == 0 else 1))
                in_planes = p
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """CIFAR ResNet18 (BasicBlocks [2, 2, 2, 2]); 11,173,962 parameters at width 1, 10 classes."""
    return ResNet([2, 2, 2, 2], num_classes, in_channels, width)


# --------------------------------------------------------------------------- VGG19
VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class VGG(nn.Module):
    """VGG with BatchNorm: ``features`` (conv with bias, BN, ReLU; "M" = 2x2 max-pool), then ``linear``.

    Needs 32x32 inputs (five pools leave a 1x1 map).
    """

    def __init__(self, cfg: Sequence[int | str], num_classes: int, in_channels: int, width: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = scaled(int(v), width)
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=True), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.features(x), 1))


@register_model("vgg19")
def vgg19(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """VGG19 with BatchNorm; 20,040,522 parameters at width 1, 10 classes."""
    return VGG(VGG19_CFG, num_classes, in_channels, width)


# --------------------------------------------------------------------------- small extras
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Flatten ``(B, C, S, S)`` (or take ``(B, C)`` with ``S = 1``) -> hidden Linear+activation
    layers (``features``) -> ``linear``."""

    def __init__(self, num_classes: int, in_channels: int, width: float,
                 hidden: Sequence[int], input_size: int, activation: str = "relu") -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        n = in_channels * input_size * input_size
        for h in hidden:
            layers += [nn.Linear(n, scaled(h, width)), ACTIVATIONS[activation]()]
            n = scaled(h, width)
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(n, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


@register_model("mlp")
def mlp(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
        hidden: Sequence[int] = (256, 128), input_size: int = 32, activation: str = "relu") -> nn.Module:
    """Multi-layer perceptron on ``input_size`` x ``input_size`` images (``input_size=1``: on
    vectors of ``in_channels`` features); ``hidden`` sizes scale with width; ``activation``
    ``"relu"`` or ``"tanh"``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    hidden = tuple(hidden)
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be integers >= 1, got {hidden!r}")
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be an integer >= 1, got {input_size!r}")
    return MLP(num_classes, in_channels, width, hidden, input_size, activation)


@register_model("small_cnn")
def small_cnn(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """Three conv-BN-ReLU layers (32, 64, 128 channels x width; 2x2 max-pools), global pool, ``linear``.

    A fast stand-in for notebooks; accepts any input size >= 4x4.
    """
    c1, c2, c3 = (scaled(c, width) for c in (32, 64, 128))
    model = nn.Sequential()
    model.features = nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    model.linear = nn.Linear(c3, num_classes)
    return model
