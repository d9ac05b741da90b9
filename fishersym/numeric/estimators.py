"""The Monte Carlo estimators themselves: Î₁, Î₂ and the empirical Fisher (THEORY §2, §9).

For each input x_m and labels y_{m,1..N}:

    Î₁(θ_i|x) = (1/N) Σ_k (∂ℓ(y_k)/∂θ_i)²,        Î₂(θ_i|x) = −(1/N) Σ_k ∂²ℓ(y_k)/∂θ_i²,
    Î_e(θ_i|x_m) = (∂ℓ(y_m)/∂θ_i)²  with the *observed* label y_m (THEORY §9),

ℓ = log p(y|x;θ), and the data-set estimate is the average over inputs.  The catalogue of every
estimator practitioners use, with exact means and variances, is :mod:`fishersym.estimators`
(THEORY §13); this module streams the three of the paper over large data sets.  The
generic path differentiates ``family.log_prob`` directly (nested forward mode
along e_i gives the score and the diagonal second derivative per label), so
it is independent of the closed forms; the fast path uses the factors of
THEORY §7: ∂ℓ/∂W_jk = (G_jᵀr)a_k and −∂²ℓ/∂W_jk² = (G_jᵀΣG_j − D_jᵀr)a_k².
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from ..families.base import ExponentialFamily
from .checks import GENERIC_MAX_PARAMS, check_inputs
from .conditional import _check_n, check_fast_inputs, check_sizes, probe_outputs, resolve_family, select_engine
from .dataset import iter_data
from .generic import _auto_chunk, directions
from .guard import check_budget, guarded
from .parts import Part

__all__ = ["estimate", "statistic", "Estimate"]

ESTIMATORS = ("I1", "I2", "empirical")


def statistic(family: ExponentialFamily, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t(y) (B, C) of observed labels, in ``dtype``: the family's :meth:`statistic` (class indices →
    one-hot for the categorical, y → (y, y²) for the Gaussian with learned variance, scalars → (B, 1)),
    validated against its support (:meth:`check_statistic`)."""
    return family.check_statistic(family.statistic(y, dtype))


class Estimate(dict):
    """{parameter name: estimate}; attributes ``estimator``, ``path``, ``n_inputs``, ``n_samples``."""

    def __init__(self, values, estimator, path, n_inputs, n_samples):
        super().__init__(values)
        self.estimator, self.path, self.n_inputs, self.n_samples = estimator, path, n_inputs, n_samples


def _generic(model, x, family, params, T, chunk_size):
    """Per-input Î₁, Î₂ parts (T: (N, B, C) sampled statistics) from u_i, w_i of
    :func:`.generic.directions` (nested forward mode, checked entry by entry against reverse mode):
    for ℓ = tᵀh − F(h) (THEORY §1–§2), ∂ℓ/∂θ_i = (t − η)ᵀu_i and −∂²ℓ/∂θ_i² = u_iᵀΣu_i − (t − η)ᵀw_i."""
    with torch.no_grad():
        h = family.natural(model(x))
    r = T - family.mean(h).unsqueeze(0)                       # (N, B, C)
    out1, out2 = {}, {}
    for name, p0 in params.items():
        n = p0.numel()
        k = chunk_size or _auto_chunk(x, n)
        s1, s2 = [], []
        for start in range(0, n, k):
            idx = torch.arange(start, min(n, start + k), device=p0.device)
            U, W = directions(model, x, family, name, idx)    # (B, K, C)
            score = torch.einsum("nbc,bkc->nbk", r, U)
            s1.append((score * score).mean(0))
            s2.append(family.sigma_quad(h, U) - torch.einsum("nbc,bkc->nbk", r, W).mean(0))
        out1[name] = Part(torch.cat(s1, 1).reshape(x.shape[0], *p0.shape))
        out2[name] = Part(torch.cat(s2, 1).reshape(x.shape[0], *p0.shape))
    return out1, out2


def _fast(eng, family, params, T, estimator):
    """Per-input parts of the requested estimator from the MLP factors (THEORY §7): the score
    ∂ℓ/∂W_jk = (G_jᵀr)a_k and −∂²ℓ/∂W_jk² = (G_jᵀΣG_j − D_jᵀr)a_k², computed once per layer
    (shared by its weight and bias) and only for the estimator asked for."""
    h = eng.h
    r = T - family.mean(h).unsqueeze(0)                     # (N, B, C)
    per_layer: dict[int, torch.Tensor] = {}
    out = {}
    for name in params:
        l, kind = eng.info["layer_of"][name]
        if l not in per_layer:
            G, D = eng.info["G"][l], eng.info["D"][l]       # (B, C, n_l)
            if G is None:                                   # the last layer kept as its diagonal (mlp.py)
                G = torch.diag_embed(eng.info["d1"][l])
            if estimator == "I2":
                fI = family.quad_forms(h, G, cdim=1, moments=False)[0]
                per_layer[l] = fI if D is None else fI - torch.einsum("nbc,bcj->nbj", r, D).mean(0)
            else:                                           # I1 and the empirical Fisher: squared score
                score = torch.einsum("nbc,bcj->nbj", r, G)
                per_layer[l] = (score * score).mean(0)
        f = per_layer[l]
        out[name] = Part(f, eng.info["a_in"][l], 2) if kind == "weight" else Part(f)
    return out


@guarded
def estimate(model: nn.Module, data, family: str | ExponentialFamily, estimator: str = "I1",
             n_samples: int = 1, generator: torch.Generator | None = None, *, path: str = "auto",
             per_input: bool = False, batch_size: int = 256, progress: bool | None = None,
             chunk_size: int | None = None, max_params: int = GENERIC_MAX_PARAMS,
             memory_budget: int | str | None = None,
             family_params: dict | None = None) -> Estimate:
    """Monte Carlo estimate of the Fisher diagonal per parameter (THEORY §2, §9).

    ``estimator``: "I1" (squared score) or "I2" (negative Hessian) with N =
    ``n_samples`` labels drawn from the model per input (``generator`` for
    reproducibility; without one a private generator with a fresh seed is used, so the
    global RNG is never consumed), or "empirical" with the observed labels (``data`` must
    carry labels: a tuple (x, y) or (x, y) batches).  ``data`` is read as in
    :func:`.dataset.iter_data`.  Returns {name: tensor param.shape} averaged over all
    inputs, or (n_inputs, *param.shape) with ``per_input=True``.  The sampled labels
    (N, batch, C) are sized against ``memory_budget`` (:func:`.guard.check_budget`).
    """
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    family = resolve_family(family, family_params, model=model, data=data)
    if estimator == "empirical" and not (not isinstance(n_samples, bool) and n_samples == 1):
        raise ValueError("the empirical Fisher uses the one observed label per input; n_samples must be 1 "
                         f"(got {n_samples!r}); use estimator='I1' or 'I2' for sampled labels")
    n_samples = _check_n(n_samples)
    chunk_size, max_params = check_sizes(chunk_size, max_params)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    batches, n_batches = iter_data(data, batch_size)
    engine = select_engine(model, family, path, max_params)
    dtype = next(iter(engine.params.values())).dtype
    if generator is None and estimator != "empirical":
        # a private generator with a fresh nondeterministic seed: the global RNG is left alone
        device = next(iter(engine.params.values())).device
        generator = torch.Generator(device=device)
        generator.seed()
    acc: dict[str, torch.Tensor] = {}
    per: dict[str, list[torch.Tensor]] = {}
    M = 0
    item = torch.finfo(dtype).bits // 8
    for xb, yb in tqdm(batches, total=n_batches, disable=progress is False if progress is not None else None,
                       desc="estimate", leave=False):
        xb = check_inputs(xb, dtype)
        if estimator == "empirical" and yb is None:
            raise ValueError("the empirical Fisher needs observed labels: pass a tuple (x, y) or (x, y) batches")
        if engine.mlp_plan is None or xb.dim() != 2:
            probe_outputs(model, xb)
        if engine.mlp_plan is not None and xb.dim() == 2:
            check_fast_inputs(engine, xb)
        if estimator != "empirical":
            B, C = xb.shape[0], family.C
            check_budget(3 * n_samples * B * C * item,
                         f"estimate with n_samples={n_samples} (labels and residuals of shape (N, B={B}, C={C}))",
                         ["fewer labels per input (n_samples=)", "smaller batches (batch_size=)"], memory_budget)
        if engine.mlp_plan is not None:     # THEORY §7's factors (layer_of, G, D, a_in) of the MLP route
            eng = engine.run(model, xb, family)
            h = eng.h
        else:
            with torch.no_grad():
                h = family.natural(model(xb))
        if estimator == "empirical":
            T = statistic(family, yb, dtype).unsqueeze(0)
        else:
            T = family.sample(h, n_samples, generator)
        if engine.mlp_plan is not None:
            parts = _fast(eng, family, engine.params, T, estimator)
        else:
            p1, p2 = _generic(model, xb, family, engine.params, T, chunk_size)  # one pass of directions() gives both
            parts = p2 if estimator == "I2" else p1
        M += h.shape[0]
        for n, part in parts.items():
            if per_input:
                per.setdefault(n, []).append(part.materialize())
            else:
                s = part.batch_sum()
                acc[n] = acc[n] + s if n in acc else s
    if M == 0:
        raise ValueError("the data contained no inputs")
    values = {n: torch.cat(v, 0) for n, v in per.items()} if per_input else {n: v / M for n, v in acc.items()}
    return Estimate(values, estimator, engine.path, M, n_samples)
