"""Real architectures, written here because torchvision cannot be used beside torch 2.13.

Each factory returns a fresh ``nn.Module`` in eval mode, seeded, so a model spec such as
``fishersym.experiments.architectures:lenet5`` gives the same network every time it is imported
(``fishersym check --model`` and ``fishersym report --model``).

* :func:`resnet18` — the CIFAR-style ResNet-18 (He et al. 2016, the 3×3 stem of the CIFAR
  variant, no max-pool): 11,173,962 parameters for 10 classes at ``width=64`` and 3 × 32 × 32
  inputs.  ``width`` scales every stage (``width=4`` gives a 44k-parameter network with the same
  graph for tests).  BatchNorm layers are in eval mode with non-trivial running statistics.
* :func:`lenet5` — LeNet-5 (LeCun et al. 1998) with tanh, average pooling, 1 × 28 × 28 inputs
  (``input_size=32`` for the original 32 × 32; ``8`` for the digits data set).
* :func:`small_transformer` — a transformer classifier: a (seq × in_features) input is embedded by
  a Linear layer plus a learned position embedding, 2 ``nn.TransformerEncoderLayer`` (d = 64,
  4 heads, ReLU feed-forward of width 128, no dropout), LayerNorm, mean pooling, Linear head.
  With ``vocab`` set the input is a (seq,) tensor of token ids through ``nn.Embedding`` instead.

>>> import torch
>>> m = lenet5(input_size=8)
>>> m(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
>>> sum(p.numel() for p in resnet18().parameters())
11173962
"""
from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

__all__ = ["resnet18", "lenet5", "small_transformer", "BasicBlock", "ResNet", "TransformerClassifier", "ARCHITECTURES"]

_M = TypeVar("_M", bound=nn.Module)


def _eval_seeded(model: _M, seed: int) -> _M:
    """Eval mode; BatchNorm running statistics drawn away from (0, 1) so they are not a no-op."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                assert m.running_mean is not None and m.running_var is not None   # track_running_stats
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1.0 + 0.2 * torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


class BasicBlock(nn.Module):
    """y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), shortcut a 1×1 conv + BN when the
    shape changes, else the identity."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                                     nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: 3×3 stem, four stages of BasicBlocks, global average pooling, Linear head."""

    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, width: int = 64,
                 in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        layers, c = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2 ** i
            stage = [BasicBlock(c, c_out, 1 if i == 0 else 2)] + [BasicBlock(c_out, c_out) for _ in range(n - 1)]
            layers.append(nn.Sequential(*stage))
            c = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes): stem, the four stages, global average pooling, the linear head."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        return self.fc(self.flatten(self.pool(out)))


def resnet18(num_classes: int = 10, width: int = 64, in_channels: int = 3, seed: int = 0) -> ResNet:
    """CIFAR-style ResNet-18 (11,173,962 parameters at the defaults), eval mode, seeded."""
    torch.manual_seed(seed)
    return _eval_seeded(ResNet((2, 2, 2, 2), num_classes, width, in_channels), seed)


def lenet5(num_classes: int = 10, activation: str = "tanh", input_size: int = 28, in_channels: int = 1,
           seed: int = 0) -> nn.Sequential:
    """LeNet-5: conv 5×5 (6) → act → avgpool 2 → conv 5×5 (16) → act → avgpool 2 → 120 → 84 → C.

    The first convolution pads by 2 so that 28 × 28 inputs give LeNet's 28 × 28 maps; for
    ``input_size`` below 16 (the 8 × 8 digits) the kernels are 3 × 3 with padding 1 so the
    maps stay positive-sized.
    """
    from .. import activations as _act
    if activation not in _act.names():
        raise ValueError(f"activation must be one of {_act.names()} (fishersym.activations), got {activation!r}")
    if input_size < 4:
        raise ValueError(f"input_size must be at least 4, got {input_size}")
    act = _act.get(activation).make
    torch.manual_seed(seed)
    k, pad = (5, 2) if input_size >= 16 else (3, 1)
    s1 = input_size // 2                       # after the first pooling (conv1 keeps the size)
    s2 = (s1 - k + 1 + (0 if k == 5 else 2)) // 2
    pad2 = 0 if k == 5 else 1
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, k, padding=pad), act(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, k, padding=pad2), act(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * s2 * s2, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, num_classes),
    )
    return model.eval()


class TransformerClassifier(nn.Module):
    """Embed (Linear on features, or nn.Embedding on token ids) + learned positions → encoder
    layers → LayerNorm → mean over the sequence → Linear head."""

    def __init__(self, seq_len: int, in_features: int | None, vocab: int | None, d_model: int, nhead: int,
                 dim_feedforward: int, num_layers: int, num_classes: int):
        super().__init__()
        if (in_features is None) == (vocab is None):
            raise ValueError("give exactly one of in_features (real-valued sequences) and vocab (token ids)")
        if in_features is not None:                 # then vocab is None (exactly one, checked above)
            self.embed: nn.Module = nn.Linear(in_features, d_model)
        else:
            assert vocab is not None
            self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, d_model))
        self.encoder = nn.ModuleList([
            nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True)
            for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of inputs (B, seq_len, in_features) or token ids (B, seq_len)."""
        z = self.embed(x) + self.pos
        for layer in self.encoder:
            z = layer(z)
        return self.head(self.norm(z).mean(dim=1))


def small_transformer(num_classes: int = 10, seq_len: int = 8, in_features: int | None = 8,
                      vocab: int | None = None, d_model: int = 64, nhead: int = 4, dim_feedforward: int = 128,
                      num_layers: int = 2, seed: int = 0) -> TransformerClassifier:
    """A 2-layer transformer classifier with d = 64 (the digits' 8 × 8 images read as 8 rows of
    8 pixels by default; ``vocab=`` for token ids, then ``in_features=None``)."""
    torch.manual_seed(seed)
    if vocab is not None:
        in_features = None
    return TransformerClassifier(seq_len, in_features, vocab, d_model, nhead, dim_feedforward, num_layers,
                                 num_classes).eval()


#: name → (factory, input shape of one example at the defaults)
ARCHITECTURES = {
    "resnet18": (resnet18, (3, 32, 32)),
    "lenet5": (lenet5, (1, 28, 28)),
    "small_transformer": (small_transformer, (8, 8)),
}
