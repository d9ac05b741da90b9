"""Large output spaces (issue 12 item 4) and the cheaper certificates of THEORY §14.

* the secular-equation brackets of Σ = diag(p) − ppᵀ against an 800-digit eigenvalue reference
  (ties, tiny, dominant and underflowed probabilities) and against eigvalsh at C = 100;
* the Gram identity on Sym² against the explicit C²×C² eigenproblem (the whole non-zero spectrum,
  C = 2..6, M and K, restricted and not; tests/test_reliability_families.py checks the certified
  extremes at C = 2, 3, 5, 10 and at saturated logits);
* the default certificate policy, the chunked Gram extremes, the O(C) last-layer forms;
* C = 1,000 on the fast and the reverse-mode path, conditional_stats and dataset_stats, with no
  basis of 𝟙^⊥ and no C² × C² matrix (each would be refused or run out of memory).
"""
from __future__ import annotations

import mpmath as mp
import pytest
import torch
from torch import nn

from fishersym import families
from fishersym.families import constants as K
from fishersym.families.categorical import Categorical
from fishersym.families.constants import (MAX_C_EIG, MAX_C_GRAM, certificate_policy, default_use_eig,
                                          family_constants, ones_perp_basis, sym_basis)
from fishersym.families.secular import secular_count, softmax_enclosure, softmax_sigma_brackets
from fishersym.numeric import conditional_stats, dataset_stats


def mp_sigma_eigs(hrow, dps=800):
    """Ascending eigenvalues of Σ at the exact softmax of the float64 logits ``hrow`` (mpmath, ``dps``
    digits; diagonal p_a·Σ_{b≠a} p_b, so 1 − p_a is never formed)."""
    with mp.workdps(dps):
        e = [mp.exp(mp.mpf(float(v))) for v in hrow]
        s = mp.fsum(e)
        p = [x / s for x in e]
        C = len(p)
        S = mp.matrix(C, C)
        for i in range(C):
            for j in range(C):
                S[i, j] = p[i] * mp.fsum(p[:i] + p[i + 1:]) if i == j else -p[i] * p[j]
        ev = mp.eigsy(S, eigvals_only=True)
        return sorted(ev[i] for i in range(C))


def adversarial_logits() -> torch.Tensor:
    """Rows of logits (C = 6): ties (at the top, at the bottom, all equal), tiny probabilities,
    one dominant class, probabilities that underflow in float64, and random spreads."""
    g = torch.Generator().manual_seed(0)
    rows = [
        [0.0] * 6,                                   # uniform: ν₂ = … = ν₆ = 1/6
        [3.0, 3.0, 0.0, -1.0, -2.0, -2.0],           # ties at the top and the bottom
        [1.0, 1.0, 1.0, 1.0, -4.0, -4.0],
        [40.0, 0.0, 0.0, -1.0, -3.0, -5.0],          # one dominant p, the others ~1e-18
        [0.0, -30.0, -60.0, -90.0, -120.0, -150.0],  # geometric tiny probabilities
        [0.0, -600.0, -650.0, -700.0, -710.0, -720.0],   # near and below the float64 normal range
        [0.0, -800.0, -800.0, -900.0, -1000.0, -1e4],    # underflowed to 0 in float64
        [5.0, 5.0 - 1e-12, 0.0, 0.0, -1e-9, 2.0],     # near-ties
    ]
    rows += (torch.randn(6, 6, generator=g) * torch.tensor([0.1, 1.0, 5.0, 20.0, 100.0, 400.0])[:, None]).tolist()
    return torch.tensor(rows, dtype=torch.float64)


def test_secular_brackets_enclose_an_800_digit_reference():
    h = adversarial_logits()
    C = h.shape[1]
    eta = Categorical.softmax_rel_error(h)
    a, b = softmax_sigma_brackets(h, [2, 3, C - 1, C], eta)
    assert torch.all(a >= 0) and torch.all(a <= b)
    for i in range(h.shape[0]):
        ev = mp_sigma_eigs(h[i])
        for j, k in enumerate([2, 3, C - 1, C]):
            assert mp.mpf(float(a[i, j])) <= ev[k - 1] <= mp.mpf(float(b[i, j])), (i, k, a[i, j], ev[k - 1], b[i, j])
            # tight: relative width ≤ 1e4·η (η = ε(spread + C + 8), the rounding of p) wherever the
            # eigenvalue is a normal float64 number
            if ev[k - 1] > mp.mpf(1e-290):
                assert float(b[i, j] - a[i, j]) <= 1e4 * float(eta[i]) * float(ev[k - 1]), (i, k)
    # exact ties: the uniform row has ν₂ = ν_C = 1/6 up to the rounding of p
    assert torch.allclose(a[0], torch.full((4,), 1 / 6, dtype=torch.float64), rtol=1e-13)


def test_secular_brackets_match_eigvalsh_at_c100():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(6, 100, generator=g, dtype=torch.float64) * torch.tensor([0.5, 2.0, 5.0, 10.0, 3.0, 3.0])[:, None]
    h[4, :50] = h[4, 0]          # 50-fold tie
    h[5, 1] = h[5, 0] + 30.0     # dominant class
    a, b = softmax_sigma_brackets(h, [2, 100], Categorical.softmax_rel_error(h))
    S = Categorical(100).sigma(h)
    ev = torch.linalg.eigvalsh(S)
    tol = 1e-14 * torch.linalg.matrix_norm(S)           # eigvalsh's own (absolute) error
    for j, k in enumerate([2, 100]):
        assert torch.all(a[:, j] <= ev[:, k - 1] + tol) and torch.all(ev[:, k - 1] <= b[:, j] + tol)
    assert torch.all(b[:, 1] - a[:, 1] <= 1e-9 * b[:, 1])


def test_secular_count_is_the_inertia():
    # the certified count N(λ) = #{eigenvalues < λ} against eigvalsh at points away from the spectrum
    g = torch.Generator().manual_seed(2)
    h = torch.randn(20, 7, generator=g, dtype=torch.float64) * 2
    _, lo, hi = softmax_enclosure(h, Categorical.softmax_rel_error(h))
    ev = torch.linalg.eigvalsh(Categorical(7).sigma(h))
    lam = torch.rand(20, 30, generator=g, dtype=torch.float64) * ev[:, -1:] * 1.2 + 1e-6
    count, certain = secular_count(lo, hi, lam)
    ref = (ev.unsqueeze(-2) < lam.unsqueeze(-1)).sum(-1)
    gap = (ev.unsqueeze(-2) - lam.unsqueeze(-1)).abs().amin(-1)
    far = gap > 1e-9
    assert bool(certain[far].all()) and torch.equal(count[certain], ref[certain])


def test_sigma_extremes_without_a_basis_at_c1000(monkeypatch):
    # no C × (C − 1) basis of 𝟙^⊥ on the softmax path: the constants must not call ones_perp_basis
    def refuse(*a, **k):
        raise AssertionError("ones_perp_basis called on the softmax path")
    monkeypatch.setattr(K, "ones_perp_basis", refuse)
    fam = families.get("categorical", C=1000)
    h = 4 * torch.randn(3, 1000, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    for restricted in (False, True):
        c = family_constants(fam, h, restricted=restricted, optimised=False)
        assert "secular equation" in c.sources["sigma_max"]
        assert c.M_max_cert.dtype == torch.float32
        assert torch.all(c.sigma_max_cert.double() <= c.K_max_cert.double())   # Corollary R.1 ≥ λ_max
    monkeypatch.undo()
    S = fam.sigma(h.double())
    ev = torch.linalg.eigvalsh(S)
    c = family_constants(fam, h.double(), restricted=True, optimised=False)
    assert torch.all(c.sigma_max_cert >= ev[:, -1]) and torch.all(c.sigma_min_cert <= ev[:, 1])
    assert torch.allclose(c.sigma_max_cert, ev[:, -1], rtol=1e-9)     # float64: widened by 4(C + 8)ε only


@pytest.mark.parametrize("C", [2, 3, 4, 5, 6])
def test_gram_spectrum_equals_the_sym2_eigenproblem(C):
    # THEORY §14 / docs/math/certificates.md Lemmas 1–2: the non-zero eigenvalues of mat(K) and M̄ on
    # Sym² (and Sym²(𝟙^⊥)) are those of the C × C Gram matrices, plus D − rank zeros
    fam = families.get("categorical", C=C)
    g = torch.Generator().manual_seed(10 + C)
    h = 2 * torch.randn(4, C, generator=g, dtype=torch.float64)
    S, _, m4 = fam.moment_tensors(h)
    p = torch.softmax(h, -1)
    r = torch.eye(C, dtype=h.dtype) - p.unsqueeze(-2)                 # rows r_y = e_y − p
    T2 = (r @ r.transpose(-1, -2)) ** 2
    w = (p.unsqueeze(-1) * p.unsqueeze(-2)).sqrt()
    v = T2 @ p.unsqueeze(-1)
    F = (p.unsqueeze(-1) * v).sum((-1, -2), keepdim=True)
    grams = {"K": w * T2, "M": w * (T2 - v - v.transpose(-1, -2) + F)}
    for restricted in (False, True):
        W = sym_basis(C) if not restricted else torch.kron(ones_perp_basis(C), ones_perp_basis(C)) @ sym_basis(C - 1)
        D = W.shape[1]
        for t in ("M", "K"):
            mat = fam.mbar_from(S, m4) if t == "M" else m4.reshape(4, C * C, C * C)
            ev = torch.linalg.eigvalsh(W.T @ mat @ W)
            gev = torch.linalg.eigvalsh(grams[t])
            scale = float(ev.abs().max())
            nz = min(D, C)
            # the top min(D, C) eigenvalues agree; the remaining D − C eigenvalues of the big problem are 0
            assert torch.allclose(ev[:, D - nz:], gev[:, C - nz:], atol=1e-12 * scale), (t, restricted)
            assert torch.all(ev[:, : D - nz].abs() <= 1e-12 * scale)
            assert torch.all(gev[:, : C - nz].abs() <= 1e-12 * scale)
            lo, hi = fam.sym2_extremes(h, t, restricted)
            assert torch.all(lo <= ev[:, 0] + 1e-12 * scale) and torch.all(hi >= ev[:, -1])
            assert torch.allclose(hi, ev[:, -1], rtol=1e-10)


def test_sym2_extremes_chunked_equals_one_chunk(monkeypatch):
    fam = families.get("categorical", C=12)
    h = 3 * torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    one = {t: fam.sym2_extremes(h, t) for t in ("M", "K")}
    monkeypatch.setattr(Categorical, "GRAM_CHUNK_ELEMENTS", 3 * 144)    # three inputs per chunk
    for t in ("M", "K"):
        lo, hi = fam.sym2_extremes(h, t)
        assert lo.shape == (2, 5) and torch.equal(lo, one[t][0]) and torch.equal(hi, one[t][1])


def test_default_use_eig_policy():
    assert default_use_eig(families.get("categorical", C=10))[0] is True
    use, why = default_use_eig(families.get("categorical", C=MAX_C_GRAM + 1))
    assert use is False and why.startswith("closed forms") and str(MAX_C_GRAM + 1) in why
    assert default_use_eig(families.get("categorical", C=1000)) == (
        False, "closed forms (C = 1000 > MAX_C_GRAM = 24: the C × C Gram eigenproblem costs O(C³) per input)")
    assert default_use_eig(families.get("gaussian", C=MAX_C_EIG))[0] is True
    use, why = default_use_eig(families.get("gaussian", C=MAX_C_EIG + 1))
    assert use is False and "MAX_C_EIG" in why
    big = families.get("categorical", C=1000)
    assert certificate_policy(big, None) == default_use_eig(big)
    assert certificate_policy(big, True) == (
        True, "Sym² eigenvalues of C × C Gram matrices and closed forms (use_eig=True)")
    assert certificate_policy(families.get("poisson", C=2), True)[1].startswith("Sym² eigenvalues of C⁴ moment tensors")
    assert certificate_policy(big, False) == (False, "closed forms (use_eig=False)")
    # family_constants applies it: at C = 1000 the default is the closed forms, use_eig=True the Gram form
    fam = families.get("categorical", C=40)
    h = torch.randn(2, 40, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert "Sym² eig" not in family_constants(fam, h, optimised=False).sources["M_max"]
    assert "Sym² eig" in family_constants(fam, h, optimised=False, use_eig=True).sources["M_max"]


@pytest.mark.parametrize("dt", [torch.float32, torch.float64])
def test_axis_forms_match_quad_forms_and_bound_their_error(dt):
    fam = families.get("categorical", C=9)
    g = torch.Generator().manual_seed(6)
    h = (torch.randn(5, 9, generator=g, dtype=torch.float64) * torch.tensor([0.1, 1.0, 5.0, 30.0, 80.0])[:, None])
    s = torch.randn(5, 9, generator=g, dtype=torch.float64)
    fi, nv1, err = fam.axis_forms(h.to(dt), s.to(dt), error=True)
    fi_ref, nv1_ref = fam.quad_forms(h, torch.diag_embed(s), cdim=1)
    assert torch.allclose(fi.double(), fi_ref, rtol=1e-4 if dt == torch.float32 else 1e-12, atol=1e-30)
    # the error bound covers the float32 (or float64) computation against the float64 quad_forms, whose
    # own rounding is bounded by its error bound
    _, _, err_ref = fam.quad_forms(h, torch.diag_embed(s), cdim=1, error=True)
    assert torch.all((nv1.double() - nv1_ref).abs() <= err.double() + err_ref)


def _mlp(C):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, C)).double()


def _conv(C):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(2, C)).double()


@pytest.mark.parametrize("C", [100, 1000])
def test_large_c_fast_and_reverse_paths(C):
    fam = families.get("categorical", C=C)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    m = _mlp(C)
    fast = conditional_stats(m, x, fam)
    rev = conditional_stats(m, x, fam, path="reverse")
    assert fast.path == "fast" and rev.path == "reverse"
    for k in ("fisher", "var1", "var2"):
        for n in fast[k]:
            assert torch.allclose(fast[k][n], rev[k][n], rtol=1e-9, atol=1e-15 * float(rev[k][n].abs().max())), (k, n)
    for res in (fast, rev):
        for n in res["fisher"]:
            for k in ("fisher", "var1", "var2"):
                v = res[k][n]
                assert torch.all(res[f"{k}_lower"][n] <= v * (1 + 1e-12) + 1e-300)
                assert torch.all(v <= res[f"{k}_upper"][n] * (1 + 1e-12))
                assert torch.all(v <= res[f"{k}_upper_sharp"][n] * (1 + 1e-12))
    ds = dataset_stats(m, x, fam, progress=False)
    for n in ds["fisher"]:
        assert torch.allclose(ds["fisher"][n], fast["fisher"][n].mean(0), rtol=1e-10)
    xc = torch.randn(3, 1, 6, 6, generator=g, dtype=torch.float64)
    conv = _conv(C)
    rc = dataset_stats(conv, xc, fam, path="reverse", progress=False)
    assert rc.path == "reverse"
    for n in rc["fisher"]:
        assert torch.all(rc["fisher"][n] <= rc["fisher_upper"][n] * (1 + 1e-12))
        assert torch.all(rc["var1"][n] <= rc["var1_upper"][n] * (1 + 1e-12))


@pytest.mark.parametrize("curved", [False, True])
def test_axis_base_equals_base_quantities_on_the_diagonal(curved):
    # the MLP's last layer is analysed from its diagonal (numeric/mlp.py::_axis_base): every base key,
    # the rounding bound nv1_err included, equals base_quantities on the explicit (B, C, C) diagonals
    from fishersym.numeric.core import BASE_KEYS, base_quantities
    from fishersym.numeric.mlp import _axis_base
    fam = families.get("categorical", C=7)
    g = torch.Generator().manual_seed(3)
    h = 3 * torch.randn(4, 7, generator=g, dtype=torch.float64)
    s = torch.randn(4, 7, generator=g, dtype=torch.float64)
    t = torch.randn(4, 7, generator=g, dtype=torch.float64) if curved else None
    got = _axis_base(fam, h, s, t, None)
    ref = base_quantities(fam, h, torch.diag_embed(s), None if t is None else torch.diag_embed(t), cdim=1)
    assert set(got) == set(ref) == set(BASE_KEYS)
    for k in BASE_KEYS:
        if k != "nv1_err":      # the two rounding bounds are different valid bounds: checked below
            torch.testing.assert_close(got[k], ref[k], rtol=1e-13, atol=0.0)
    # nv1_err bounds the actual rounding error of the axis form's nv1: N·V₁ = s⁴ p_c q_c (q_c − p_c)²
    # (u = s·e_c) at 50 digits from the exact softmax
    with mp.workdps(50):
        for b in range(h.shape[0]):
            e = [mp.exp(mp.mpf(float(v))) for v in h[b]]
            Z = mp.fsum(e)
            for c in range(7):
                p = e[c] / Z
                q = 1 - p
                exact = mp.mpf(float(s[b, c])) ** 4 * p * q * (q - p) ** 2
                assert abs(mp.mpf(float(got["nv1"][b, c])) - exact) <= mp.mpf(float(got["nv1_err"][b, c])), (b, c)
    part = _axis_base(fam, h, s, t, ("fisher", "u2"))
    assert set(part) == {"fisher", "u2"} and torch.equal(part["u2"], got["u2"])
