"""Architectures that are *not* fishersym MLPs, for the check_model tests (issue: property toolkit)."""
import torch
from torch import nn


class ResMLP(nn.Module):
    """A residual MLP with LayerNorm (generic path; LayerNorm needs fishersym.numeric.safe_ad)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.block = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        z = torch.tanh(self.inp(x))
        z = z + self.block(self.norm(z))
        return self.out(z)


def resmlp():
    torch.manual_seed(0)
    return ResMLP()


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 3 * 3, 2)

    def forward(self, x):
        return self.fc(nn.functional.softplus(self.conv(x)).flatten(1))


def tinycnn():
    torch.manual_seed(1)
    return TinyCNN(), torch.randn(2, 1, 5, 5)


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x).detach()


class Rounded(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x).round().long()
