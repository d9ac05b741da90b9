"""Check the exact variances and the Theorem 4.1 bounds against Monte Carlo on *your* model.

Copy this file, replace ``make_model`` / ``make_inputs`` / ``FAMILY`` with your own, run it:

    python examples/check_bounds_mc.py

For every parameter tensor it compares the exact V₁, V₂ (THEORY §3,
``fishersym.numeric.conditional_stats``) with the empirical variance of many
independent Monte Carlo estimates Î₁, Î₂ (``fishersym.numeric.estimate``, §2),
and checks lower ≤ V ≤ upper for the certified Theorem 4.1 bounds (§5).
"""
import torch
from torch import nn

from fishersym import families
from fishersym.numeric import conditional_stats, estimate

FAMILY = families.get("categorical", C=3)   # your output distribution
N = 4                                        # label samples per estimate
REPEATS = 4000                               # Monte Carlo repetitions


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def make_inputs() -> torch.Tensor:
    return torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def main() -> None:
    model, x = make_model(), make_inputs()
    exact = conditional_stats(model, x, FAMILY, n_samples=N)
    gen = torch.Generator().manual_seed(2)
    # REPEATS independent estimates at the same input: repeat x and ask for per-input values
    xs = x.repeat(REPEATS, 1)
    mc = {k: estimate(model, xs, FAMILY, k, n_samples=N, generator=gen, per_input=True, progress=False)
          for k in ("I1", "I2")}
    print(f"{'parameter':12} {'V1 exact':>11} {'V1 MC':>11} {'V2 exact':>11} {'V2 MC':>11}  bounds hold")
    for name in exact.parameters:
        v1, v2 = exact["var1"][name][0], exact["var2"][name][0]
        m1, m2 = mc["I1"][name].var(0), mc["I2"][name].var(0)
        ok = all(bool((exact[f"{s}_lower"][name] <= exact[s][name] * (1 + 1e-9) + 1e-300).all()
                      and (exact[s][name] <= exact[f"{s}_upper"][name] * (1 + 1e-9) + 1e-300).all())
                 for s in ("fisher", "var1", "var2"))
        print(f"{name:12} {float(v1.mean()):11.4g} {float(m1.mean()):11.4g} {float(v2.mean()):11.4g} "
              f"{float(m2.mean()):11.4g}  {ok}")
        # MC agrees within a few standard errors (relative s.e. of a variance ≈ sqrt(2/REPEATS) ≈ 2%)
        assert torch.allclose(m1.sum(), v1.sum(), rtol=0.15), name
        assert torch.allclose(m2.sum(), v2.sum(), rtol=0.15, atol=1e-12), name
        assert ok, name
    print("exact variances match Monte Carlo; the certified bounds hold.")


if __name__ == "__main__":
    main()
