"""The entry points outside ``fishersym.numeric`` leave the model and torch's global state alone
(issue 13 item 7; README "Guarantees"): ``Derivation.evaluate``, ``check_model`` and
``family_constants``, compared with :func:`fishersym.numeric.state_fingerprint` before and after."""
import torch
from torch import nn

from fishersym import families, symbolic
from fishersym.families.constants import family_constants
from fishersym.numeric import state_fingerprint
from fishersym.testing import check_model


def _net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)).double()


def test_derivation_evaluate_leaves_state_unchanged():
    model = _net().train()
    x = torch.randn(3, 2, dtype=torch.float64)
    D = symbolic.derive(symbolic.mlp([2, 2, 1], "tanh"), families.get("bernoulli"), n_samples=1)
    before = state_fingerprint(model)
    D.evaluate(model, x)
    assert state_fingerprint(model) == before


def test_check_model_leaves_state_unchanged():
    model = _net().train()
    before = state_fingerprint(model)
    check_model(model, "bernoulli", input_shape=(2,), max_examples=1, properties=["nonnegative"])
    assert state_fingerprint(model) == before


def test_family_constants_leaves_global_state_unchanged():
    h = torch.randn(3, 4, dtype=torch.float64)
    before = state_fingerprint(None)
    family_constants(families.get("categorical", C=4), h, optimised=True, n_iter=20)
    assert state_fingerprint(None) == before
