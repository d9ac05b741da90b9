"""An independent oracle for the estimator catalogue (issue 10, "Correctness"; THEORY §8, §9, §13).

Everything here is written from the *definitions* of the estimators, never from
``fishersym.estimators.moments`` or the families' closed forms (quad_forms, mquad, sigma_factor_*):

* the log-density of each family is written out here (:class:`Family`), and the per-label score
  g(y) = ∂ log p(y|x;θ)/∂θ and the per-label Hessian diagonal are computed by autograd
  (``torch.func.grad``/``hessian``, brute force over all P parameters) at every label;
* labels are enumerated exactly: categorical and Bernoulli over their support, Poisson over
  0..Y with the tail mass bounded (< 1e-25), Gaussian labels y = μ + σz by Gauss–Hermite
  quadrature in z (K nodes per dimension integrate polynomials of degree ≤ 2K − 1 per variable
  exactly: K = 3 for means and variances, whose integrands have degree ≤ 4 in each z, and K = 5
  for fourth central moments, degree ≤ 8);
* output-space probes: every Rademacher sign vector (2^C) or Gauss–Hermite nodes in ε, with the
  factor L built here (the softmax's (I − p𝟙ᵀ)diag(√p); otherwise the Cholesky factor of Σ, itself
  computed as the covariance of t(y) under the enumerated labels);
* param-space probes: every z ∈ {±1}^P (P ≤ 17), with F = Σ_m E_y[g gᵀ] from the enumerated
  scores; for the P = 21 net the pairwise-independence form Var = Σ_{j≠i} F_ij² of the same F
  (checked against the enumeration on the smaller nets);
* an estimator's exact distribution over the given inputs (scheme "all") is the product grid of the
  per-input atoms (all C^M label tuples, all probe tuples); scheme "iid" enumerates all M^M' index
  tuples, each an "all" distribution on the drawn inputs (fresh labels per drawn copy), and mixes
  them (law of total variance, written out as a mixture of the exact conditional moments).

:func:`compare_exact` and :func:`mc_check` are the comparison functions used by the correctness
tests *and* the mutation tests (tests/test_estimators_mutations.py).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, vmap

Values = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------------
# families, written from their densities
# ---------------------------------------------------------------------------------------------------
def gauss_hermite(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and probability weights of the k-point rule for z ~ N(0, 1) (exact to degree 2k − 1)."""
    z, w = np.polynomial.hermite_e.hermegauss(k)
    return torch.tensor(z, dtype=torch.float64), torch.tensor(w / w.sum(), dtype=torch.float64)


def _grid(nodes: torch.Tensor, weights: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Product rule in ``dim`` dimensions: points (K^dim, dim), weights (K^dim,)."""
    idx = list(itertools.product(range(len(nodes)), repeat=dim))
    pts = torch.stack([nodes[list(i)] for i in idx])
    wts = torch.stack([torch.prod(weights[list(i)]) for i in idx])
    return pts, wts


@dataclass
class Family:
    """A family given by its log-density. ``kind``: categorical, bernoulli, gaussian, poisson,
    gaussian_meanvar.  ``C``: the size of t(y) (= of the natural parameter)."""
    kind: str
    C: int
    sigma2: float = 1.0

    def natural(self, o: torch.Tensor) -> torch.Tensor:
        """h(o) for the families' default links (o = network output, one input)."""
        if self.kind == "gaussian":
            return o / self.sigma2                                    # network outputs μ, h = μ/σ²
        if self.kind == "gaussian_meanvar":
            mu, s = o[..., 0], o[..., 1]
            return torch.stack([mu * torch.exp(-s), -0.5 * torch.exp(-s)], -1)
        return o                                                      # logits / log-rate

    def log_prob(self, o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y | x) for one input's output o and one label y (written out, not the package's)."""
        k = self.kind
        if k == "categorical":
            onehot = (torch.arange(self.C, dtype=y.dtype) == y[0]).to(o.dtype)
            return (torch.log_softmax(o, -1) * onehot).sum()
        if k == "bernoulli":
            return y[0] * o[0] - nn.functional.softplus(o[0])
        if k == "poisson":
            return (y * o - torch.exp(o) - torch.lgamma(y + 1)).sum()
        if k == "gaussian":
            return (-(y - o) ** 2 / (2 * self.sigma2) - 0.5 * math.log(2 * math.pi * self.sigma2)).sum()
        if k == "gaussian_meanvar":
            mu, s = o[0], o[1]
            return -(y[0] - mu) ** 2 * torch.exp(-s) / 2 - s / 2 - 0.5 * math.log(2 * math.pi)
        raise ValueError(k)

    def statistic(self, y: torch.Tensor) -> torch.Tensor:
        """t(y) for labels y (K, ·) → (K, C)."""
        if self.kind == "categorical":
            return nn.functional.one_hot(y.long().reshape(-1), self.C).double()
        if self.kind == "gaussian_meanvar":
            return torch.cat([y, y * y], -1)
        return y

    def labels(self, o: torch.Tensor, k_nodes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """The enumerated labels (K, ·) and their probabilities (K,) for one input with output o."""
        o = o.detach()
        k = self.kind
        if k == "categorical":
            return torch.arange(self.C, dtype=torch.float64).reshape(-1, 1), torch.softmax(o, -1)
        if k == "bernoulli":
            p = torch.sigmoid(o[0])
            return torch.tensor([[0.0], [1.0]], dtype=torch.float64), torch.stack([1 - p, p])
        if k == "poisson":
            # support 0..Y with P(y > Y) ≤ 2 p(Y + 1) once Y + 2 ≥ 2λ (the ratio of successive
            # probabilities λ/(y + 1) is then ≤ ½) pushed below 1e-25
            lam = float(torch.exp(o[0]))
            Y = int(math.ceil(2 * lam))
            while 2 * math.exp((Y + 1) * float(o[0]) - lam - math.lgamma(Y + 2)) >= 1e-25:
                Y += 1
            y = torch.arange(Y + 1, dtype=torch.float64)
            logp = y * o[0] - lam - torch.lgamma(y + 1)
            return y.reshape(-1, 1), torch.exp(logp)
        z, w = gauss_hermite(k_nodes)
        if k == "gaussian":
            pts, wts = _grid(z, w, self.C)
            return o + math.sqrt(self.sigma2) * pts, wts
        if k == "gaussian_meanvar":
            return (o[0] + torch.exp(o[1] / 2) * z).reshape(-1, 1), w
        raise ValueError(k)

    def factor(self, o: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """L with LLᵀ = Σ = Cov t(y): the softmax's (I − p𝟙ᵀ)diag(√p), else the Cholesky factor of
        the covariance of the enumerated statistics (exact for the rules used)."""
        tbar = w @ t
        S = (w[:, None] * (t - tbar)).T @ (t - tbar)
        if self.kind == "categorical":
            p = torch.softmax(o.detach(), -1)
            L = ((torch.eye(self.C, dtype=p.dtype) - p[:, None] * torch.ones(1, self.C, dtype=p.dtype))
                 * p.sqrt()[None, :])
        else:
            L = torch.linalg.cholesky(S)
        assert torch.allclose(L @ L.T, S, rtol=1e-10, atol=1e-14 * float(S.abs().max()))
        return L


# ---------------------------------------------------------------------------------------------------
# per-input brute-force quantities
# ---------------------------------------------------------------------------------------------------
@dataclass
class PerInput:
    w: torch.Tensor          # (K,) label probabilities
    G: torch.Tensor          # (K, P) scores g(y) at every label
    J: torch.Tensor          # (C, P) ∂h/∂θ
    L: torch.Tensor          # (C, C) factor of Σ
    F: torch.Tensor          # (P, P) E_y[g gᵀ]
    g_obs: torch.Tensor | None = None     # (P,) score at the observed label
    labels: torch.Tensor | None = None
    _nh: torch.Tensor | None = None       # (K, P) −diag ∂² log p(y)/∂θ², lazily


class Oracle:
    """Brute-force per-input quantities of ``model`` on inputs ``x`` (observed labels ``y``
    optional) and the exact distributions of the catalogue's estimators built from them."""

    def __init__(self, model: nn.Module, x: torch.Tensor, fam: Family, y: torch.Tensor | None = None,
                 k_nodes: int = 3) -> None:
        self.model, self.x, self.fam, self.y = model, x, fam, y
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.shapes = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
        self.theta = torch.cat([p.detach().reshape(-1) for n, p in model.named_parameters() if p.requires_grad])
        self.P = self.theta.numel()
        self.M = x.shape[0]
        self.k_nodes = k_nodes
        self.inputs = [self._one(m) for m in range(self.M)]

    # -- the model as a function of the flat parameter vector -------------------------------------------
    def unflat(self, flat: torch.Tensor) -> Values:
        out, k = {}, 0
        for n in self.names:
            c = self.shapes[n].numel()
            out[n] = flat[k:k + c].reshape(self.shapes[n])
            k += c
        return out

    def output(self, theta: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.unflat(theta), (x1.unsqueeze(0),))[0]

    def _logp(self, m: int):
        x1 = self.x[m]
        return lambda theta, y: self.fam.log_prob(self.output(theta, x1), y)

    def _one(self, m: int) -> PerInput:
        o = self.output(self.theta, self.x[m]).detach()
        ys, w = self.fam.labels(o, self.k_nodes)
        G = vmap(grad(self._logp(m)), in_dims=(None, 0))(self.theta, ys)
        J = torch.autograd.functional.jacobian(lambda th: self.fam.natural(self.output(th, self.x[m])), self.theta)
        L = self.fam.factor(o, self.fam.statistic(ys), w)
        F = (w[:, None] * G).T @ G
        g_obs = None
        if self.y is not None:
            yo = self.y[m].reshape(-1).double()
            g_obs = grad(self._logp(m))(self.theta, yo)
        return PerInput(w=w, G=G, J=J, L=L, F=F, g_obs=g_obs, labels=ys)

    def neg_hess(self, m: int) -> torch.Tensor:
        pi = self.inputs[m]
        if pi._nh is None:
            H = vmap(hessian(self._logp(m)), in_dims=(None, 0))(self.theta, pi.labels)   # (K, P, P)
            pi._nh = -torch.diagonal(H, dim1=-2, dim2=-1)
        return pi._nh

    def fisher_diag(self, m: int) -> torch.Tensor:
        return torch.diagonal(self.inputs[m].F)

    # -- exact distributions -----------------------------------------------------------------------------
    def probe_atoms(self, m: int, probe: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights (K,), probed scores (K, P) = Jᵀ L ε) over all probes ε of input m."""
        pi = self.inputs[m]
        C = pi.J.shape[0]
        if probe == "rademacher":
            eps = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=C)), dtype=torch.float64)
            w = torch.full((eps.shape[0],), 2.0 ** -C, dtype=torch.float64)
        else:
            z, wz = gauss_hermite(self.k_nodes)
            eps, w = _grid(z, wz, C)
        return w, (eps @ pi.L.T) @ pi.J

    def atoms(self, est: str, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        pi = self.inputs[m]
        if est in ("squared_score", "batched_squared_gradient"):
            return pi.w, pi.G
        if est == "neg_hessian":
            return pi.w, self.neg_hess(m)
        if "output_hutchinson" in est:
            return self.probe_atoms(m, est.rsplit("_", 1)[1])
        if est in ("empirical", "batched_empirical"):
            if pi.g_obs is None:
                raise ValueError("observed labels needed")
            return torch.ones(1, dtype=torch.float64), pi.g_obs[None]
        if est == "exact_over_labels":
            return torch.ones(1, dtype=torch.float64), self.fisher_diag(m)[None]
        raise ValueError(est)

    def distribution(self, est: str, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact distribution of one draw (N = 1) over inputs ``idx`` (repeats allowed, fresh
        labels per copy): values (K, P) and probabilities (K,)."""
        if est == "param_hutchinson":
            raise ValueError("use param_hutchinson_moments")
        combine = "sqsum" if est.startswith("batched") else ("sum" if est in ("neg_hessian", "exact_over_labels")
                                                              else "sumsq")
        nM = len(idx)
        W, S = torch.ones((), dtype=torch.float64), torch.zeros(self.P, dtype=torch.float64)
        for j, m in enumerate(idx):
            w, A = self.atoms(est, m)
            shape = [1] * nM
            shape[j] = w.shape[0]
            W = W * w.reshape(shape)
            a = A.reshape(shape + [self.P])
            S = S + (a * a if combine == "sumsq" else a)
        V = S * S if combine == "sqsum" else S
        return V.reshape(-1, self.P), W.reshape(-1)

    def param_hutchinson_moments(self, idx: list[int], low_bits: int = 14,
                                 fourth: bool = True) -> dict[str, torch.Tensor]:
        """Mean, variance (and, with ``fourth``, the fourth central moment) of z ⊙ (F z) over every
        z ∈ {±1}^P (uniform), F = Σ_{m ∈ idx} E_y[g_m g_mᵀ].  z and −z give the same value
        ((−z)_i(F(−z))_i = z_i(Fz)_i), so the half with z_P = +1 is enumerated: the first
        ``low_bits`` coordinates tabulated once, the others looped over.  Sums are centred at diag F
        (shifted sums; the mean is computed, not assumed)."""
        F = sum(self.inputs[m].F for m in idx)
        P = self.P
        lo = min(P - 1, low_bits)
        c = torch.diagonal(F).clone()
        s1 = torch.zeros(P, dtype=torch.float64)
        s2, s3, s4 = s1.clone(), s1.clone(), s1.clone()
        k = torch.arange(1 << lo)
        z = torch.ones(1 << lo, P, dtype=torch.float64)
        z[:, :lo] = 1.0 - 2.0 * ((k[:, None] >> torch.arange(lo)[None, :]) & 1).double()
        zF_lo = z[:, :lo] @ F[:lo]                                                          # (2^lo, P)
        for hi in itertools.product([1.0, -1.0], repeat=P - 1 - lo):
            z_hi = torch.tensor(hi + (1.0,), dtype=torch.float64)
            z[:, lo:] = z_hi
            d = z * (zF_lo + z_hi @ F[lo:]) - c
            d2 = d * d
            s1 += d.sum(0)
            s2 += d2.sum(0)
            if fourth:
                s3 += (d2 * d).sum(0)
                s4 += (d2 * d2).sum(0)
        total = float(1 << (P - 1))
        e1, e2, e3, e4 = s1 / total, s2 / total, s3 / total, s4 / total
        out = {"mean": c + e1, "var": e2 - e1 * e1, "F": F}
        if fourth:
            out["mu4"] = e4 - 4 * e3 * e1 + 6 * e2 * e1 * e1 - 3 * e1 ** 4
        return out

    def param_hutchinson_values(self, idx: list[int]) -> torch.Tensor:
        """z ⊙ (F z) for every z ∈ {±1}^P (2^P, P): the atoms of one draw (small P only)."""
        F = sum(self.inputs[m].F for m in idx)
        k = torch.arange(1 << self.P)
        z = 1.0 - 2.0 * ((k[:, None] >> torch.arange(self.P)[None, :]) & 1).double()
        return z * (z @ F)

    def param_hutchinson_formula(self, idx: list[int]) -> dict[str, torch.Tensor]:
        """For P too large to enumerate 2^P probes: z_i(Fz)_i = F_ii + Σ_{j≠i} F_ij z_iz_j, and the
        products z_iz_j (j ≠ i) have mean 0, variance 1 and are pairwise uncorrelated, so
        E = F_ii and Var = Σ_{j≠i} F_ij² (F from the enumerated scores; the enumeration agrees with
        this on the smaller nets, see test_param_hutchinson_oracle_paths_agree)."""
        F = sum(self.inputs[m].F for m in idx)
        off = F - torch.diag(torch.diagonal(F))
        return {"mean": torch.diagonal(F).clone(), "var": (off * off).sum(1), "F": F}

    def moments(self, est: str, idx: list[int] | None = None, n_samples: int = 1) -> dict[str, torch.Tensor]:
        """{"mean", "var", "mu4"} (flat (P,)) of one draw over inputs ``idx`` (default: all, scheme
        "all") with ``n_samples`` labels per input: the average of ``n_samples`` independent N = 1
        draws, enumerated over all of their tuples (n_samples ≤ 2 for the distributional forms)."""
        idx = list(range(self.M)) if idx is None else list(idx)
        if est == "param_hutchinson":
            r = (self.param_hutchinson_moments(idx, fourth=self.P <= 14) if self.P <= 17
                 else self.param_hutchinson_formula(idx))
            if n_samples != 1:
                raise ValueError("param_hutchinson: n_samples = 1 only in the oracle")
            return r
        V, W = self.distribution(est, idx)
        if n_samples == 2:
            V = ((V[:, None] + V[None, :]) / 2).reshape(-1, self.P)
            W = (W[:, None] * W[None, :]).reshape(-1)
        elif n_samples != 1:
            raise ValueError("oracle enumerates n_samples ∈ {1, 2}")
        mean = W @ V
        D = V - mean
        D2 = D * D
        return {"mean": mean, "var": W @ D2, "mu4": W @ (D2 * D2), "values": V, "weights": W}

    def iid_moments(self, est: str, m_inputs: int, n_samples: int = 1) -> dict[str, torch.Tensor]:
        """Mean and variance of (1/M')·(one draw over M' inputs drawn i.i.d. uniformly from the M,
        with replacement): a uniform mixture over all M^M' index tuples of the exact "all" moments
        (Var = E[Var(·|tuple)] + Var[E(·|tuple)])."""
        means, vars_ = [], []
        for tup in itertools.product(range(self.M), repeat=m_inputs):
            r = self.moments(est, list(tup), n_samples)
            means.append(r["mean"])
            vars_.append(r["var"])
        means, vars_ = torch.stack(means), torch.stack(vars_)
        mbar = means.mean(0)
        var = vars_.mean(0) + ((means - mbar) ** 2).mean(0)
        return {"mean": mbar / m_inputs, "var": var / m_inputs ** 2}

    def target(self) -> torch.Tensor:
        """Σ_m I(θ_i|x_m) = Σ_m E_y[g_m(y)²] (flat)."""
        return sum(self.fisher_diag(m) for m in range(self.M))

    def flat(self, values: Values) -> torch.Tensor:
        return torch.cat([values[n].reshape(-1) for n in self.names])


# ---------------------------------------------------------------------------------------------------
# comparisons (shared by the correctness and the mutation tests)
# ---------------------------------------------------------------------------------------------------
def gaussian_probe_draws(o, idx: list[int], R: int, seed: int, batched: bool) -> torch.Tensor:
    """R draws of the (batched) Gaussian output-space Hutchinson estimator over inputs ``idx``:
    ε ~ N(0, I) drawn here, probed scores Jᵀ L ε with J, L from the oracle."""
    g = torch.Generator().manual_seed(seed)
    S = []
    for m in idx:
        pi = o.inputs[m]
        eps = torch.randn(R, pi.L.shape[0], generator=g, dtype=torch.float64)
        S.append((eps @ pi.L.T) @ pi.J)
    S = torch.stack(S)
    return S.sum(0) ** 2 if batched else (S * S).sum(0)


def compare_exact(got: torch.Tensor, want: torch.Tensor, what: str, rtol: float = 1e-10,
                  scale: float = 0.0) -> list[str]:
    """Entries where ``got`` differs from the exact ``want`` by more than rtol·|want| + rtol·S with
    S = max(max|want|, ``scale``) (the second term covers entries that are 0 up to rounding; pass
    ``scale`` = (max |mean|)² for variances, the size of their rounding).  Returns failure messages."""
    got, want = got.reshape(-1), want.reshape(-1)
    if got.shape != want.shape:
        return [f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"]
    scale = max(float(want.abs().max()) if want.numel() else 0.0, scale)
    err = (got - want).abs()
    bad = err > rtol * want.abs() + rtol * scale + 1e-300
    if not bool(torch.isfinite(got).all()):
        return [f"{what}: non-finite values"]
    if bool(bad.any()):
        i = int(torch.argmax(err / (want.abs() + scale + 1e-300)))
        return [f"{what}: {int(bad.sum())}/{got.numel()} entries off, worst #{i}: got {float(got[i]):.12g}, "
                f"want {float(want[i]):.12g}"]
    return []


def z_for(alpha: float, n_tests: int) -> float:
    """Two-sided normal quantile with Bonferroni over ``n_tests`` statistics: the family-wise
    false-alarm probability is ≤ alpha under the normal approximation of each statistic."""
    return NormalDist().inv_cdf(1 - alpha / (2 * n_tests))


def mc_check(draws: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, mu4: torch.Tensor, what: str,
             alpha: float = 1e-6) -> list[str]:
    """Test R i.i.d. draws (R, P) against the exact mean, variance and fourth central moment.

    Per entry two statistics, both sample means of R i.i.d. terms with *exactly known* variance:
    the mean x̄ (s.e. √(v/R)) and the mean of (X − μ)² with the exact μ (expectation v, s.e.
    √((μ₄ − v²)/R); the fourth moment is exact, from the oracle).  Each is compared at z·s.e. with
    z = Φ⁻¹(1 − α/(2·2P)) (Bonferroni over the 2P statistics), so the probability of a false alarm
    of the whole check is ≤ α = 1e-6 under the normal approximation of the two sample means
    (R ≥ 200 draws in every use).  Entries whose exact variance is 0 must equal the mean up to
    rounding.  Returns failure messages (empty: pass)."""
    R, P = draws.shape
    z = z_for(alpha, 2 * P)
    scale = float(mean.abs().max()) + 1e-300
    xbar = draws.mean(0)
    d2 = ((draws - mean) ** 2).mean(0)
    out = []
    se_m = (var.clamp_min(0) / R).sqrt()
    se_v = ((mu4 - var * var).clamp_min(0) / R).sqrt()
    tol_round = 1e-9 * scale
    bad_m = (xbar - mean).abs() > z * se_m + tol_round
    bad_v = (d2 - var).abs() > z * se_v + tol_round ** 2 + 1e-9 * var.abs()
    if bool(bad_m.any()):
        i = int(torch.argmax((xbar - mean).abs() / (se_m + tol_round)))
        out.append(f"{what}: mean off at {int(bad_m.sum())} entries; #{i}: {float(xbar[i]):.6g} vs exact "
                   f"{float(mean[i]):.6g} (s.e. {float(se_m[i]):.3g}, z = {z:.2f})")
    if bool(bad_v.any()):
        i = int(torch.argmax((d2 - var).abs() / (se_v + tol_round ** 2)))
        out.append(f"{what}: variance off at {int(bad_v.sum())} entries; #{i}: {float(d2[i]):.6g} vs exact "
                   f"{float(var[i]):.6g} (s.e. {float(se_v[i]):.3g}, z = {z:.2f})")
    return out


def support_check(draw: torch.Tensor, values: torch.Tensor, what: str, rtol: float = 1e-9) -> list[str]:
    """A draw of a discrete estimator must be one of the exact atoms (up to rounding)."""
    scale = float(values.abs().max()) + 1e-300
    dist = (values - draw.reshape(1, -1)).abs().amax(1)
    if float(dist.min()) > rtol * scale:
        return [f"{what}: the draw is not an atom of the exact distribution (nearest at {float(dist.min()):.3g}, "
                f"scale {scale:.3g})"]
    return []


# ---------------------------------------------------------------------------------------------------
# the test problems (shared by tests/test_estimators.py and tests/test_estimators_mutations.py)
# ---------------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    family: object            # the package's family instance
    fam: Family               # this module's family
    oracle: Oracle = field(repr=False, default=None)

    @property
    def data(self):
        return (self.x, self.y)


def _net(d_in: int, width: int, d_out: int, seed: int, bias_out: bool = True, scale: float = 1.0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, d_out, bias=bias_out)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return net


_CASES: dict[tuple[str, int], Case] = {}


def make_case(name: str, k_nodes: int = 3) -> Case:
    """The problems, cached: ``cat3`` (categorical C = 3, Linear(2,3)-Tanh-Linear(3,3), P = 21,
    M = 3 inputs), ``small`` (categorical C = 3, Linear(2,2)-Tanh-Linear(2,3, no bias), P = 12),
    ``bernoulli``, ``gaussian`` (C = 2, σ² = 0.5), ``poisson``, ``meanvar`` (Gaussian with learned
    variance: a non-diagonal Σ, so the Cholesky factor is a genuine choice)."""
    from fishersym import families
    key = (name, k_nodes)
    if key in _CASES:
        return _CASES[key]
    if name == "meanvar":
        k_nodes = max(k_nodes, 5)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 2, generator=g, dtype=torch.float64)
    if name == "cat3":
        net, pkg, fam = _net(2, 3, 3, 1), families.get("categorical", C=3), Family("categorical", 3)
        y = torch.tensor([0, 2, 1])
    elif name == "small":
        net, pkg, fam = _net(2, 2, 3, 2, bias_out=False), families.get("categorical", C=3), Family("categorical", 3)
        y = torch.tensor([1, 0, 2])
    elif name == "bernoulli":
        net, pkg, fam = _net(2, 3, 1, 3), families.get("bernoulli"), Family("bernoulli", 1)
        y = torch.tensor([1.0, 0.0, 1.0])
    elif name == "gaussian":
        net, pkg, fam = _net(2, 3, 2, 4), families.get("gaussian", C=2, sigma2=0.5), Family("gaussian", 2, 0.5)
        y = torch.randn(3, 2, generator=g, dtype=torch.float64)
    elif name == "poisson":
        net, pkg, fam = _net(2, 3, 1, 5, scale=0.5), families.get("poisson"), Family("poisson", 1)
        y = torch.tensor([0.0, 2.0, 1.0])
    elif name == "meanvar":
        # scores are quadratic in z here: variances have degree 8 in z, so K = 5 nodes (see above)
        net, pkg, fam = _net(2, 3, 2, 6, scale=0.5), families.get("gaussian_meanvar"), Family("gaussian_meanvar", 2)
        y = torch.randn(3, generator=g, dtype=torch.float64)
    else:
        raise ValueError(name)
    case = Case(name, net, x, y, pkg, fam)
    case.oracle = Oracle(net, x, fam, y, k_nodes=k_nodes)
    _CASES[key] = case
    return case
