"""error_bars against the peer libraries themselves (optional: BackPACK, curvlinops from the
``[peers]`` extra; each test skips with the reason where its library is missing).

Deterministic calls (BackPACK DiagGGNExact) must equal the mapped mean to rounding.  For the random
calls, R seeded calls give a sample mean and a sample variance per entry, compared with the exact
mean and variance of :func:`fishersym.estimators.error_bars`:

* mean: |x̄ − μ| ≤ z·√(v/R), z = 5.6 (two-sided normal tail 2.1e-8 per statistic; with ≤ 8 entries
  and two statistics each per test, the false-alarm probability is ≤ 16 · 2.1e-8 < 1e-6);
* variance: |s² − v| ≤ z·√((m̂₄ − s⁴)/R) with m̂₄ the sample fourth central moment (the normal
  approximation of the sample variance's sampling distribution), same z.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fishersym.estimators as fe
from fishersym import families
from fishersym.estimators.peers import error_bars

Z = 5.6
R = 1500


def _setup(seed: int = 0, B: int = 4):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    x = torch.randn(B, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (B,), generator=g)
    return net, x, y, families.get("categorical", C=3)


def test_backpack_exact_and_mc():
    backpack = pytest.importorskip("backpack", reason="BackPACK is in the optional [peers] extra")
    from backpack.extensions import DiagGGNExact, DiagGGNMC
    net, x, y, fam = _setup()
    bp = backpack.extend(copy.deepcopy(net))
    loss_fn = backpack.extend(nn.CrossEntropyLoss(reduction="mean"))

    def call(ext, attr):
        bp.zero_grad()
        with backpack.backpack(ext):
            loss_fn(bp(x), y).backward()
        return {n: getattr(p, attr).detach().clone() for n, p in bp.named_parameters()}

    exact = call(DiagGGNExact(), "diag_ggn_exact")
    eb = error_bars(net, (x, y), fam, "backpack_diag_ggn_exact")
    for n in exact:
        torch.testing.assert_close(exact[n], eb.mean[n], rtol=1e-12, atol=1e-14)
        assert float(eb.variance[n].abs().max()) == 0.0
    eb = error_bars(net, (x, y), fam, "backpack_diag_ggn_mc", mc_samples=2)
    torch.manual_seed(1)
    draws = [call(DiagGGNMC(mc_samples=2), "diag_ggn_mc") for _ in range(R)]
    _check_draws(draws, eb, R, names=("0.weight", "2.weight"), k=4)


def _curvlinops():
    return pytest.importorskip("curvlinops", reason="curvlinops is in the optional [peers] extra")


def test_curvlinops_mc_fisher():
    cl = _curvlinops()
    net, x, y, fam = _setup(1)
    params = [p for p in net.parameters()]
    loss_fn = nn.CrossEntropyLoss(reduction="mean")
    P = sum(p.numel() for p in params)
    eye = torch.eye(P, dtype=torch.float64)
    eb = error_bars(net, (x, y), fam, "curvlinops_mc", mc_samples=1)
    draws = []
    for s in range(R // 3):     # a dense diagonal per seed is the slow part
        A = cl.FisherMCLinearOperator(net, loss_fn, params, [(x, y)], seed=s, mc_samples=1,
                                      check_deterministic=False)
        d = torch.diagonal(A @ eye)
        draws.append(fe.moments.unflatten(d, [n for n, _ in net.named_parameters()],
                                          {n: p.shape for n, p in net.named_parameters()}))
    _check_draws(draws, eb, R // 3)


def _check_draws(draws, eb, r: int, names=("2.weight",), k: int = 8) -> None:
    for n in names:
        D = torch.stack([d[n].reshape(-1) for d in draws])[:, :k]
        mu, v = eb.mean[n].reshape(-1)[:k], eb.variance[n].reshape(-1)[:k]
        xbar, s2 = D.mean(0), D.var(0)
        m4 = ((D - xbar) ** 4).mean(0)
        assert torch.all((xbar - mu).abs() <= Z * (v / r).sqrt() + 1e-12), (xbar, mu)
        assert torch.all((s2 - v).abs() <= Z * ((m4 - s2 ** 2).clamp_min(0) / r).sqrt() + 1e-12), (s2, v)


def test_curvlinops_hutchinson():
    cl = _curvlinops()
    net, x, y, fam = _setup(2)
    params = [p for p in net.parameters()]
    A = cl.GGNLinearOperator(net, nn.CrossEntropyLoss(reduction="mean"), params, [(x, y)],
                             check_deterministic=False)
    eb = error_bars(net, (x, y), fam, "curvlinops_hutchinson", num_matvecs=2)
    names = [n for n, _ in net.named_parameters()]
    shapes = {n: p.shape for n, p in net.named_parameters()}
    torch.manual_seed(3)
    draws = [fe.moments.unflatten(cl.hutchinson_diag(A, 2), names, shapes) for _ in range(R)]
    _check_draws(draws, eb, R, names=("0.weight", "2.weight"), k=4)


def test_error_bars_bad_input():
    net, x, y, fam = _setup()
    with pytest.raises(ValueError, match="error_bars knows: backpack_diag_ggn_mc"):
        error_bars(net, x, fam, "backpack_diag_hessian")
    with pytest.raises(ValueError, match="takes the settings"):
        error_bars(net, x, fam, "backpack_diag_ggn_mc", num_matvecs=3)
    with pytest.raises(ValueError, match="reduction must be"):
        error_bars(net, x, fam, "backpack_diag_ggn_mc", reduction="none")
    with pytest.raises(ValueError, match="positive integer"):
        error_bars(net, x, fam, "backpack_diag_ggn_mc", mc_samples=0)


def test_optax_mapping_scale_by_hand():
    """optax's fisher_diag is jnp.square(ravel(grad(nll))) (its source); optax is not a dependency,
    so the mapping is checked against that definition written with torch autograd: the squared
    gradient of the mean NLL of the batch at the observed labels equals error_bars' mean (deterministic,
    variance 0)."""
    net, x, y, fam = _setup(4)
    eb = error_bars(net, (x, y), fam, "optax_fisher_diag", reduction="mean")
    loss = nn.functional.cross_entropy(net(x), y, reduction="mean")
    grads = torch.autograd.grad(loss, list(net.parameters()))
    for (n, _), g in zip(net.named_parameters(), grads):
        torch.testing.assert_close(g * g, eb.mean[n], rtol=1e-12, atol=1e-15)
        assert float(eb.variance[n].abs().max()) == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_backpack_mse_mapping(reduction):
    """MSELoss: reduction 'sum' is gaussian(C=D, sigma2=0.5), 'mean' (÷ B·D) is gaussian(C=D, sigma2=D/2)
    with c = 1/B — the documented mapping, checked against BackPACK's exact GGN diagonal."""
    backpack = pytest.importorskip("backpack", reason="BackPACK is in the optional [peers] extra")
    from backpack.extensions import DiagGGNExact
    g = torch.Generator().manual_seed(5)
    D, B = 2, 5
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, D)).double()
    x = torch.randn(B, 3, generator=g, dtype=torch.float64)
    y = torch.randn(B, D, generator=g, dtype=torch.float64)
    bp = backpack.extend(copy.deepcopy(net))
    loss_fn = backpack.extend(nn.MSELoss(reduction=reduction))
    with backpack.backpack(DiagGGNExact()):
        loss_fn(bp(x), y).backward()
    fam = families.get("gaussian", C=D, sigma2=D / 2 if reduction == "mean" else 0.5)
    eb = error_bars(net, x, fam, "backpack_diag_ggn_exact", reduction=reduction)
    for n, p in bp.named_parameters():
        torch.testing.assert_close(p.diag_ggn_exact, eb.mean[n], rtol=1e-12, atol=1e-14)


def test_error_bars_batches_and_the_mean_reduction_note():
    net, x, y, fam = _setup(6, B=6)
    with pytest.raises(ValueError, match="batch size"):
        error_bars(net, [(x[:2], y[:2]), (x[2:], y[2:])], fam, "ewc_batched")
    eb = error_bars(net, [(x[:3], y[:3]), (x[3:], y[3:])], fam, "optax_fisher_diag")
    assert "Ī/B" in eb.info["note"] and eb.info["batch_sizes"] == [3, 3]
    by_hand = None                        # one call per batch of the mean NLL, squared, summed
    for i in (0, 3):
        loss = nn.functional.cross_entropy(net(x[i:i + 3]), y[i:i + 3], reduction="mean")
        g2 = [t * t for t in torch.autograd.grad(loss, list(net.parameters()))]
        by_hand = g2 if by_hand is None else [a + b for a, b in zip(by_hand, g2)]
    for (n, _), v in zip(net.named_parameters(), by_hand):
        torch.testing.assert_close(v, eb.mean[n], rtol=1e-12, atol=1e-15)
