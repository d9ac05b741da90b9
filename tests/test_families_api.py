"""Registry, links and bad input of fishersym.families (issue: foundation)."""
from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

from fishersym import families
from fishersym.cli import main
from fishersym.families.links import Identity, MeanLogVar, Scale



def test_registry_lists_families_and_rejects_unknown():
    assert families.available() == ["bernoulli", "categorical", "gaussian", "gaussian_meanvar", "poisson"]
    with pytest.raises(ValueError, match="unknown family 'gamma'.*available: bernoulli, categorical"):
        families.get("gamma")
    with pytest.raises(ValueError, match="invalid parameters"):
        families.get("bernoulli", C=3)
    fam = families.get("categorical", C=4)
    assert families.get(fam) is fam


@pytest.mark.parametrize("name,params,match", [
    ("gaussian", {"sigma2": 0.0}, "sigma2 must be a finite number > 0"),
    ("gaussian", {"sigma2": -1.0}, "sigma2"),
    ("gaussian", {"sigma2": float("nan")}, "sigma2"),
    ("categorical", {"C": 1}, "needs C >= 2"),
    ("categorical", {"C": 2.5}, "needs C >= 2"),
    ("poisson", {"C": 0}, "positive integer"),
])
def test_out_of_domain_parameters(name, params, match):
    with pytest.raises(ValueError, match=match):
        families.get(name, **params)


def test_natural_parameter_checks():
    fam = families.get("categorical", C=3)
    with pytest.raises(ValueError, match=r"expected natural parameters of shape \(\.\.\., C=3\), got shape \(4, 2\)"):
        fam.sigma_quad(fam.check_h(torch.zeros(4, 2)), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="non-finite"):
        fam.check_h(torch.tensor([[0.0, float("inf"), 1.0]]))
    with pytest.raises(TypeError, match="floating point"):
        fam.check_h(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="non-finite"):
        fam.sample(torch.tensor([float("nan"), 0.0, 0.0]), 3)
    g = families.get("gaussian_meanvar", link="identity")
    with pytest.raises(ValueError, match="h_2 .* must be < 0"):
        g.check_h(torch.tensor([0.0, 0.5]))


def test_output_checks_name_both_sizes():
    fam = families.get("categorical", C=10)
    with pytest.raises(ValueError, match="size 7 .* expects 10"):
        fam.natural(torch.zeros(5, 7))
    with pytest.raises(ValueError, match="non-finite"):
        fam.natural(torch.full((5, 10), float("nan")))


def test_links_torch_equals_sympy():
    o = [sp.Symbol("o1"), sp.Symbol("o2")]
    vals = {o[0]: 0.3, o[1]: -0.7}
    x = torch.tensor([0.3, -0.7])
    for link in (Identity(), Scale(2.5), MeanLogVar()):
        sym = [float(e.subs(vals)) for e in link.sym(o)]
        assert torch.allclose(link(x), torch.tensor(sym), rtol=1e-14)
    lin = Scale(2.5)
    assert torch.equal(lin.g1(x), torch.full_like(x, 2.5)) and torch.equal(lin.g2(x), torch.zeros_like(x))
    with pytest.raises(TypeError, match="not elementwise"):
        MeanLogVar().g1(x)
    with pytest.raises(ValueError, match="unknown link"):
        families.get("bernoulli", link="probit")


def test_gaussian_mean_link_and_meanvar_link():
    fam = families.get("gaussian", sigma2=0.5, link="mean")
    mu = torch.tensor([[1.2]])
    assert torch.allclose(fam.mean(fam.natural(mu)), mu)  # E[y] = μ through h = μ/σ²
    mv = families.get("gaussian_meanvar")
    o = torch.tensor([[0.4, math.log(0.3)]])  # μ = 0.4, σ² = 0.3
    h = mv.natural(o)
    assert torch.allclose(mv.mean(h), torch.tensor([[0.4, 0.16 + 0.3]]))
    assert torch.allclose(mv.sigma(h)[0, 0, 0], torch.tensor(0.3))


def test_cli_families_prints_every_family(capsys):
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    for name in families.available():
        assert f"== {name}" in out
    assert out.count("Sigma (numeric)") == len(families.available())
    assert "kappa4(u,u,u,u) = 48*sigma**6*u_2**2" in out  # the meanvar κ₄, derived by SymPy


def test_cli_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nonsense"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cli_families_summarises_long_kappa4(capsys):
    # issue 11: the demo printed the softmax's 2,300-character κ₄; it is summarised, and --full prints it
    assert main(["families", "categorical"]) == 0
    short = [ln for ln in capsys.readouterr().out.splitlines() if "kappa4" in ln]
    assert len(short) == 1 and len(short[0]) < 250 and "--full" in short[0]
    n_terms = int(short[0].split("a polynomial of ")[1].split(" terms")[0])
    assert main(["families", "categorical", "--full"]) == 0
    full = [ln for ln in capsys.readouterr().out.splitlines() if "kappa4" in ln]
    poly = sp.sympify(full[0].split("kappa4(u,u,u,u) = ")[1])
    assert len(sp.Add.make_args(sp.expand(poly))) == n_terms > 20
