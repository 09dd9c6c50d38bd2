import pytest
import torch
from torch import nn

from fts_core.setup.layout import channels_last_hazard, resolve_channels_last
from fts_core.setup.models import build_model

CPU, META = torch.device("cpu"), torch.device("meta")


@pytest.mark.parametrize("width, hazard", [(0.0625, True), (0.125, True), (0.1875, True), (0.25, False), (1.0, False)])
def test_resnet18_shortcuts_below_16_input_channels_are_hazards(width, hazard):
    model = build_model("resnet18", width=width)
    why = channels_last_hazard(model)
    assert (why is not None) == hazard
    if hazard:
        assert "layer2.0.shortcut.0" in why and "oneDNN#6035" in why
    assert resolve_channels_last(None, model, CPU) is (not hazard)


def test_only_strided_1x1_convolutions_count():
    assert channels_last_hazard(build_model("vgg19", width=0.0625)) is None  # 3x3 convolutions only
    assert channels_last_hazard(nn.Conv2d(4, 8, 1)) is None  # stride 1
    assert channels_last_hazard(nn.Conv2d(4, 8, 3, stride=2)) is None  # 3x3
    assert channels_last_hazard(nn.Conv2d(4, 8, 1, stride=2)) is not None


def test_explicit_settings():
    risky = nn.Conv2d(8, 16, 1, stride=2)
    assert resolve_channels_last(False, build_model("resnet18"), CPU) is False
    with pytest.raises(ValueError, match="8 input channels"):
        resolve_channels_last(True, risky, CPU)
    # other devices: as given, and never on automatically (not measured there)
    assert resolve_channels_last(None, risky, META) is False
    assert resolve_channels_last(True, risky, META) is True
