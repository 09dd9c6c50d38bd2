"""Small BatchNorm models and image batches shared by the scorer tests (float64 by default)."""
import torch
from torch import nn

from fts_core.setup.models import build_model


def bn_model(name: str, dtype: torch.dtype = torch.float64, width: float = 1 / 16) -> nn.Module:
    """``build_model(name, width)`` in eval mode with non-trivial BatchNorm statistics and affine
    parameters, so the eval-mode BatchNorm path of every scorer is really exercised. Seeded."""
    torch.manual_seed(0)
    m = build_model(name, width=width).to(dtype).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    return m


def image_batches(name: str, n: int, first: int, dtype: torch.dtype = torch.float64) -> list:
    """``n`` random images for ``name`` (8x8 for ResNet18, 32x32 for VGG19: its five pools need
    32) with labels in 0..9, as two batches of ``first`` and ``n - first``. Seeded."""
    g = torch.Generator().manual_seed(1)
    size = 8 if name == "resnet18" else 32
    x = torch.randn(n, 3, size, size, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (n,), generator=g)
    return [(x[:first], y[:first]), (x[first:], y[first:])]


class EveryKind(nn.Module):
    """One layer of every kind the "all_weights" rule selects, on integer token ids."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(13, 8)
        self.bag = nn.EmbeddingBag(13, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.deconv = nn.ConvTranspose1d(8, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.gru_cell = nn.GRUCell(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.bil = nn.Bilinear(8, 8, 8)
        self.linear = nn.Linear(8, 3)

    def forward(self, ids):
        h = self.emb(ids)
        h = self.deconv(self.conv(h.transpose(1, 2))).transpose(1, 2)
        h, _ = self.lstm(self.norm(h))
        h = self.attn(h, h, h, need_weights=False)[0]
        last = self.gru_cell(h[:, -1])
        return self.linear(self.bil(last, self.bag(ids)))



def every_kind_model(dtype=torch.float32) -> nn.Module:
    """:class:`EveryKind` with seed-0 weights, in eval mode."""
    torch.manual_seed(0)
    return EveryKind().to(dtype).eval()


class Attention(nn.Module):
    """Self-attention over a token dimension (nn.MultiheadAttention), mean-pooled, a linear head."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))
