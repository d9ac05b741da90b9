"""The reverse-mode path wired into the public entry points (issue 9 items 1, 2a).

``path="auto"`` falls back to the reverse path above the generic path's parameter limit; its
results equal the generic path's (an independent route: nested forward mode per entry) on
small convolutional nets, V₂ ≡ 0 is proved with a reason, and the exact-w cost is refused
before any work when too many entries would need it.
"""
import pytest
import torch
from torch import nn

from fishersym import families
from fishersym.numeric import conditional_stats, dataset_stats

CAT = families.get("categorical", C=4)

KEYS = ("fisher", "var1", "var2", "var1_upper", "fisher_lower", "var2_upper")


def _close(a, b, keys=KEYS, rtol=1e-10):
    for k in keys:
        for n in b[k]:
            scale = b[k][n].abs().max() + 1e-300
            assert float((a[k][n] - b[k][n]).abs().max() / scale) <= rtol, (k, n)


class _FunctionalCNN(nn.Module):
    """conv → act → max-pool → head with the activation as a function call (torch.relu/torch.tanh),
    which the per-layer (fast) engine has no rule for: the auto path falls back to reverse/generic."""

    def __init__(self, act):
        super().__init__()
        self.act = torch.relu if isinstance(act, nn.ReLU) else torch.tanh
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3))
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4))

    def forward(self, x):
        return self.head(self.act(self.body(x)))


def _cnn(act):
    torch.manual_seed(0)
    m = _FunctionalCNN(act).eval()
    return m


@pytest.mark.parametrize("act,proved", [(nn.ReLU(), True), (nn.Tanh(), False)])
def test_auto_uses_reverse_above_the_limit_and_matches_generic(act, proved):
    model = _cnn(act)
    x = torch.randn(3, 1, 8, 8)
    gen = conditional_stats(model, x, CAT, path="generic")
    rev = conditional_stats(model, x, CAT, max_params=40)      # 124 parameters > 40
    assert rev.path == "reverse" and "reverse mode" in rev.info["path_reason"]
    _close(rev, gen)
    reasons = rev.info["var2_zero_reason"]
    assert ("body.0.weight" in reasons) == proved and "head.2.weight" in reasons   # the head is always proved
    if proved:
        assert "aten.relu" in reasons["body.0.weight"]
        assert all(float(v.abs().max()) == 0 for v in rev.var2.values())
    else:
        assert float(rev.var2["body.0.weight"].abs().max()) > 0


def test_dataset_stats_reverse_matches_generic():
    model = _cnn(nn.ReLU())
    x = torch.randn(5, 1, 8, 8)
    gen = dataset_stats(model, x, CAT, path="generic", batch_size=2, progress=False)
    rev = dataset_stats(model, x, CAT, path="reverse", batch_size=2, progress=False)
    _close(rev, gen, KEYS + ("input_var",))
    assert set(rev.info["var2_zero_reason"]) == set(rev.fisher)


def test_exact_w_cost_refused_before_work():
    model = _cnn(nn.Tanh())
    with pytest.raises(ValueError, match=r"could not be proved.*max_params=20"):
        conditional_stats(model, torch.randn(2, 1, 8, 8), CAT, path="reverse", max_params=20)
