"""Many-input statistics: ``dataset_stats`` (THEORY.md §8, paper Theorem 4.7).

Write v_k(θ_i|x) = N·V_k(θ_i|x) (one label sample) and I(θ_i) = E_q I(θ_i|x)
with q the empirical distribution of the data set (M inputs).

* scheme ``"all"``: every input of the set, N labels each:
      Var Î_k(θ_i) = (1/M²) Σ_m v_k(θ_i|x_m)/N;
* scheme ``"iid"``: M' (``m_inputs``, default M) inputs drawn i.i.d. from q,
  N labels each (law of total variance):
      Var Î_k(θ_i) = (1/M') [ Var_q I(θ_i|x) + E_q v_k(θ_i|x)/N ].

Bounds are summed the same way: for "all" the per-input Theorem 4.1 bounds
are averaged and divided by M; for "iid" the exact input term Var_q I is
kept and the per-input bound replaces E_q v_k/N.  ``input_var`` is Var_q I
and ``input_var_upper`` Lemma 4.8's E_q[‖u_i‖⁴λ_max(Σ)²] ≥ Var_q I.

Inputs are streamed batch by batch; per-parameter sums over inputs are one
matrix product per layer on the fast path (THEORY §7).
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..bounds.lemma48 import lemma48_bound
from ..families.base import ExponentialFamily
from .checks import GENERIC_MAX_PARAMS
from .conditional import _check_n, analyse_batch, group_trace_bounds, resolve_family, select_engine
from .core import mquad_cancels
from .parts import batch_sums
from .stats import StatsResult, add_derived, cancellation_ratio, resolve_groups

__all__ = ["dataset_stats", "iter_batches"]


def iter_batches(data, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Input batches from a tensor (split along dim 0) or an iterable of tensors / (x, y, …) tuples."""
    if isinstance(data, torch.Tensor):
        if data.dim() == 0:
            raise ValueError("data needs a leading batch dimension")
        yield from torch.split(data, batch_size)
        return
    for item in data:
        if isinstance(item, (tuple, list)):
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"each batch must be a tensor or an (x, y, ...) tuple of tensors, got {type(item).__name__}")
        yield item


def _n_batches(data, batch_size: int) -> int | None:
    if isinstance(data, torch.Tensor):
        return -(-data.shape[0] // batch_size)
    try:
        return len(data)
    except TypeError:
        return None


def dataset_stats(model: nn.Module, data: torch.Tensor | Iterable, family: str | ExponentialFamily,
                  n_samples: int = 1, scheme: str = "all", *, m_inputs: int | None = None, path: str = "auto",
                  optimised: bool = False, use_eig: bool | None = None,
                  groups: Mapping[str, Iterable[str] | str] | None = None, group_bounds: bool = False,
                  batch_size: int = 256, progress: bool | None = None, chunk_size: int | None = None,
                  max_params: int = GENERIC_MAX_PARAMS, sharpened: bool = True) -> StatsResult:
    """Many-input I(θ_i), Var Î₁, Var Î₂ and bounds per parameter (shape param.shape), THEORY §8.

    ``data``: a tensor of inputs or an iterable of batches (a DataLoader yielding
    tensors or (x, y) tuples), streamed with a tqdm bar (``progress``).  Keys as
    in :func:`conditional_stats` (no exact ``prob_neg2``; Cantelli's
    ``prob_neg2_upper`` is given) plus ``input_var`` and ``input_var_upper``
    (``input_var`` = E[I²] − (E I)² is accurate to about ε·E[I²] in absolute terms).
    ``result.groups`` sums every key over each module's parameters and over
    user ``groups``; ``group_bounds=True`` adds Theorem D.1 / Corollary 4.6;
    ``sharpened=False`` skips the 𝟙^⊥ keys (THEORY §5 [beyond]).

    Certification cost (``use_eig``): the default (None: True when C ≤ 24) also certifies
    λ̃(M), λ̃(K) by the extreme eigenvalues on Sym²(ℝ^C), a batched eigendecomposition of
    C(C+1)/2-dimensional matrices per input; for the softmax with C = 10 this makes the call
    about 10× slower than ``use_eig=False``, which certifies by closed forms only (Theorem 5.2,
    Corollary R.1, exact zeros) and gives V₁ upper bounds about 2× wider on an MNIST-sized
    MLP (the Fisher and V₂ bounds are unchanged).  Every bound is certified either way.
    """
    if scheme not in ("all", "iid"):
        raise ValueError(f"scheme must be 'all' or 'iid', got {scheme!r}")
    if m_inputs is not None:
        if scheme == "all":
            raise ValueError("m_inputs applies to scheme='iid' (M inputs drawn from the data); "
                             "scheme='all' uses every input of the data")
        if isinstance(m_inputs, bool) or not isinstance(m_inputs, int) or m_inputs < 1:
            raise ValueError(f"m_inputs must be a positive integer, got {m_inputs!r}")
    family = resolve_family(family)
    n_samples = _check_n(n_samples)
    engine = select_engine(model, family, path)
    members = None
    sums: dict[str, dict[str, torch.Tensor]] = {}
    gsums: dict[str, dict[str, torch.Tensor]] = {}
    M, canc = 0, 1.0
    bar = tqdm(iter_batches(data, batch_size), total=_n_batches(data, batch_size), disable=progress is False
               if progress is not None else None, desc="dataset_stats", unit="batch", leave=False)
    for x in bar:
        ba = analyse_batch(engine, model, x, family, n_samples, optimised=optimised, use_eig=use_eig,
                           grams=group_bounds, chunk_size=chunk_size, max_params=max_params, sharpened=sharpened)
        M += ba.eng.h.shape[0]
        if mquad_cancels(family):
            canc = max(canc, cancellation_ratio(ba.eng))
        smax2 = ba.consts.sigma_max_cert ** 2
        memo: dict[tuple, dict[str, torch.Tensor]] = {}   # weight and bias of a layer share their rows
        for name, d in ba.keys.items():
            fi, u2 = d["fisher"], ba.eng.parts[name]["u2"]
            ex = memo.get((id(fi.f), id(u2.f)))
            if ex is None:
                ex = memo[(id(fi.f), id(u2.f))] = {"fisher_sq": fi.f * fi.f,
                                                    "input_var_upper": u2.square().scale(smax2).f}
            extra = {"fisher_sq": fi.with_f(ex["fisher_sq"], 2 * fi.p),
                     "input_var_upper": u2.with_f(ex["input_var_upper"], 2 * u2.p)}
            for k, s in batch_sums({**d, **extra}).items():
                acc = sums.setdefault(k, {})
                acc[name] = acc[name] + s if name in acc else s
        if members is None:
            members = resolve_groups(model, list(ba.keys), groups)
        if group_bounds:
            for g, names in members.items():
                tb = group_trace_bounds(ba, family, names, n_samples, optimised)
                acc = gsums.setdefault(g, {})
                for k, v in tb.items():
                    acc[k] = acc.get(k, 0) + v.sum()
    if M == 0:
        raise ValueError("the data contained no inputs")
    Mi = M if m_inputs is None else m_inputs
    # the sums are fresh tensors owned here: divide in place (same operations, no new arrays)
    mean = {k: {n: v.div_(M) for n, v in d.items()} for k, d in sums.items()}
    # Var_q I = E[I²] − (E I)² cancels: it is accurate to about ε·E[I²] in absolute terms
    # (documented in the docstring); values within that rounding of 0 are set to 0, and a larger
    # negative value is an error rather than silently clamped
    eps = torch.finfo(mean["fisher"][next(iter(mean["fisher"]))].dtype).eps
    input_var = {}
    for n in mean["fisher"]:
        e2, e1 = mean["fisher_sq"][n], mean["fisher"][n]
        v = e2 - e1 ** 2
        if bool((v < -8 * eps * e2).any()):
            raise FloatingPointError(f"Var_q I(θ|x) of {n!r} came out negative beyond rounding; use float64")
        input_var[n] = v.clamp_min_(0)
    values: dict[str, dict[str, torch.Tensor]] = {}
    for k, d in mean.items():
        if k == "fisher_sq":
            continue
        if k.startswith("var"):
            values[k] = ({n: v.div_(M) for n, v in d.items()} if scheme == "all"
                         else {n: v.add_(input_var[n]).div_(Mi) for n, v in d.items()})
        else:
            values[k] = d
    values["input_var"] = input_var
    add_derived(values)
    gsum = {}
    for g, names in (members or {}).items():
        d = {"n_params": torch.tensor(sum(values["fisher"][n].numel() for n in names))}
        for k, per in values.items():
            if not k.startswith(("rel_sd", "prob_neg")):
                d[k] = sum(per[n].sum() for n in names)
        d["rel_sd1"], d["rel_sd2"] = d["var1"].sqrt() / d["fisher"], d["var2"].sqrt() / d["fisher"]
        if group_bounds:
            tv = gsums[g]
            in_var = d["input_var"]  # Σ_i Var_q I(θ_i|x): the input term of the trace variance
            for k, v in tv.items():
                if k.startswith("trace_fisher"):
                    d[k] = v / M
                else:
                    d[k] = v / M / M if scheme == "all" else (in_var + v / M) / Mi
        gsum[g] = d
    return StatsResult(values, kind="dataset", path=engine.path, n_samples=n_samples,
                       dtype=next(iter(engine.params.values())).dtype, cancellation=canc, groups=gsum,
                       group_members=members or {},
                       info={"path_reason": engine.reason, "n_inputs": M, "m_inputs": Mi, "scheme": scheme})
