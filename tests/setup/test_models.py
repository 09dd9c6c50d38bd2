"""Models: the paper's architectures (exact parameter counts), shapes, width, registry, errors."""
import pytest
import torch
from torch import nn

from fts_core.setup.models import MODELS, build_model, register_model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, classes, expected", [
    ("resnet18", 10, 11_173_962),
    ("resnet18", 100, 11_173_962 + 90 * 513),  # Linear(512, C): 513 parameters per extra class
    ("vgg19", 10, 20_040_522),
    ("vgg19", 100, 20_040_522 + 90 * 513),
])
def test_parameter_counts_at_full_width(name, classes, expected):
    assert n_params(build_model(name, num_classes=classes)) == expected


def test_resnet18_module_names_follow_the_contract():
    model = build_model("resnet18")
    names = dict(model.named_modules())
    for stem in ("conv1", "bn1", "linear"):
        assert stem in names
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        for part in ("conv1", "bn1", "conv2", "bn2", "shortcut"):
            assert f"{layer}.0.{part}" in names
    # a projection shortcut (1x1 conv + BN) exactly where the shape changes: 3 of 8 blocks
    projections = [n for n, m in names.items() if n.endswith("shortcut.0")]
    assert projections == ["layer2.0.shortcut.0", "layer3.0.shortcut.0", "layer4.0.shortcut.0"]
    assert isinstance(names["layer2.0.shortcut.0"], nn.Conv2d) and names["layer2.0.shortcut.0"].kernel_size == (1, 1)
    assert isinstance(names["layer2.0.shortcut.1"], nn.BatchNorm2d)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 0
    assert names["conv1"].kernel_size == (3, 3) and names["conv1"].stride == (1, 1)


def test_vgg19_has_16_biased_convs_five_pools_and_a_linear_classifier():
    model = build_model("vgg19")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16 and all(c.bias is not None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 16
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 5
    assert model.linear.in_features == 512


@pytest.mark.parametrize("name", ["resnet18", "vgg19", "mlp", "small_cnn"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_shapes_at_small_width(name, in_channels):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=in_channels, width=0.125)
    out = model(torch.randn(4, in_channels, 32, 32))
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    last_linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    assert last_linear == "linear" and model.linear.out_features == 7


def test_width_scales_channels_and_stays_valid_at_tiny_width():
    model = build_model("resnet18", width=0.25)
    assert model.conv1.out_channels == 16 and model.linear.in_features == 128
    tiny = build_model("resnet18", width=0.001)  # every stage rounds to >= 1 channel
    assert tiny.conv1.out_channels == 1 and tiny.linear.in_features == 1
    assert tiny(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert build_model("vgg19", width=0.5).linear.in_features == 256
    # parameter count grows roughly quadratically with width
    assert 3.5 < n_params(build_model("vgg19", width=0.5)) / n_params(build_model("vgg19", width=0.25)) < 4.2


def test_mlp_options():
    model = build_model("mlp", in_channels=1, hidden=(20, 10), input_size=8)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 20), (20, 10), (10, 10)]
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert build_model("mlp", hidden=()).linear.in_features == 3 * 32 * 32


def test_default_init_is_seeded():
    torch.manual_seed(1)
    a = build_model("small_cnn", width=0.25)
    torch.manual_seed(1)
    b = build_model("small_cnn", width=0.25)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_register_a_model_by_name():
    @register_model("test_tiny_linear")
    def tiny(num_classes: int, in_channels: int, width: float, bias: bool = True) -> nn.Module:
        model = nn.Sequential(nn.Flatten())
        model.linear = nn.Linear(in_channels * 32 * 32, num_classes, bias=bias)
        return model

    try:
        assert MODELS["test_tiny_linear"] is tiny
        model = build_model("test_tiny_linear", num_classes=3, bias=False)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3) and model.linear.bias is None
        with pytest.raises(ValueError, match="already registered"):
            register_model("test_tiny_linear")(tiny)
        register_model("test_tiny_linear", overwrite=True)(tiny)
    finally:
        MODELS.pop("test_tiny_linear", None)


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'.*resnet18.*vgg19"):
        build_model("resnet19")
    for width in (0, -1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="width"):
            build_model("resnet18", width=width)
    for classes in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"num_classes.*{classes!r}"):
            build_model("resnet18", num_classes=classes)
    with pytest.raises(ValueError, match="in_channels"):
        build_model("vgg19", in_channels=0)
    with pytest.raises(ValueError, match=r"unknown option.*'depth'"):
        build_model("resnet18", depth=34)
    with pytest.raises(ValueError, match="hidden"):
        build_model("mlp", hidden=(0,))
