"""Per-parameter bounds of Theorem 4.1 (THEORY §5), one definition for both engines.

For one input x, parameter θ_i with u_i = ∂h/∂θ_i and w_i = ∂²h/∂θ_i², and N
label samples:

    (7)  ‖u_i‖² λ_min(Σ)  ≤ I(θ_i|x)    ≤ ‖u_i‖² λ_max(Σ)
    (8)  ‖u_i‖⁴ λ̃_min(M) ≤ N·V₁(θ_i|x) ≤ ‖u_i‖⁴ λ̃_max(M)
    (9)  ‖w_i‖² λ_min(Σ)  ≤ N·V₂(θ_i|x) ≤ ‖w_i‖² λ_max(Σ)

The *certified* keys use constants that provably enclose the true ones
(:mod:`fishersym.families.constants`), so they always hold; the ``_opt``
keys use the optimised λ̃ of the paper (a local optimum can understate
λ̃_max, so those may fail and are reported, not trusted).  The ``_sharp``
keys (shift-invariant families only, [beyond]) use the norms of the
projections onto 𝟙^⊥ and the constants over unit vectors of 𝟙^⊥; they hold
because N·V₁, N·V₂ and I are unchanged by u ↦ u + c𝟙, w ↦ w + c𝟙.

Result key names (shared by ``fishersym.numeric`` and ``fishersym.symbolic``):
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from ..families.constants import FamilyConstants

__all__ = ["STAT_KEYS", "BOUND_KEYS", "OPT_KEYS", "SHARP_KEYS", "BOUND_CONSTANTS", "bound_name", "theorem41_bound",
           "theorem41_bounds", "theorem41_expressions", "bound_violated", "bound_pairs", "bound_violations",
           "violated_bounds"]

#: the exact quantities
STAT_KEYS = ("fisher", "var1", "var2")
#: certified Theorem 4.1 bounds (always hold)
BOUND_KEYS = ("fisher_lower", "fisher_upper", "var1_lower", "var1_upper", "var2_lower", "var2_upper")
#: the paper's optimised-λ̃ bounds on V₁ (Σ's spectrum is computed exactly, so I and V₂ need none)
OPT_KEYS = ("var1_lower_opt", "var1_upper_opt")
#: sharpened 𝟙^⊥ bounds for shift-invariant families (certified, and optimised for V₁)
SHARP_KEYS = ("fisher_lower_sharp", "fisher_upper_sharp", "var1_lower_sharp", "var1_upper_sharp",
              "var2_lower_sharp", "var2_upper_sharp", "var1_lower_sharp_opt", "var1_upper_sharp_opt")

__doc__ += "\n".join(f"    {k}" for k in STAT_KEYS + BOUND_KEYS + OPT_KEYS + SHARP_KEYS)


#: the family constant (a :class:`~fishersym.families.constants.FamilyConstants` field) of each bound
BOUND_CONSTANTS = {"fisher_lower": "sigma_min_cert", "fisher_upper": "sigma_max_cert",
                   "var1_lower": "M_min_cert", "var1_upper": "M_max_cert",
                   "var2_lower": "sigma_min_cert", "var2_upper": "sigma_max_cert",
                   "var1_lower_opt": "M_min_opt", "var1_upper_opt": "M_max_opt"}


def theorem41_bound(key: str, u_sq, w_sq, c, n_samples=1, u4=None):
    r"""Bound ``key`` of Theorem 4.1 from the squared norms and its constant ``c`` (THEORY §5).

    The one written form of (7)–(9): with u_i = ∂h/∂θ_i, w_i = ∂²h/∂θ_i² and N label samples,

    * ``fisher_*``: ‖u_i‖²·c;
    * ``var1_*``: ‖u_i‖⁴·c / N;
    * ``var2_*``: ‖w_i‖²·c / N

    (no division for N = 1: x/1 = x exactly), where c is the key's constant
    (:data:`BOUND_CONSTANTS`: a certified λ_min/λ_max of Σ, or λ̃_min/λ̃_max of M), so that

    .. math::

        \|u_i\|^2 \lambda_{\min}(\Sigma) \le I(\theta_i \mid x) \le \|u_i\|^2 \lambda_{\max}(\Sigma), \qquad
        \|u_i\|^4 \tilde\lambda_{\min}(M) \le N V_1(\theta_i \mid x) \le \|u_i\|^4 \tilde\lambda_{\max}(M),

        \|w_i\|^2 \lambda_{\min}(\Sigma) \le N V_2(\theta_i \mid x) \le \|w_i\|^2 \lambda_{\max}(\Sigma).

    Arithmetic only, so the same definition serves torch tensors (:func:`theorem41_bounds`, the
    numeric engines), SymPy expressions (:func:`theorem41_expressions`, the symbolic derivation) and
    plain numbers.

    Args:
        key: a :data:`BOUND_CONSTANTS` name (``fisher_lower``, ``var1_upper_opt``, …); only the part
            before the first ``_`` selects the formula.
        u_sq: ‖u_i‖² (a tensor, SymPy expression or number).
        w_sq: ‖w_i‖² (used by the ``var2_*`` keys).
        c: the bound's constant.
        n_samples: N, the number of label samples (default 1).
        u4: ‖u_i‖⁴ when the caller already has it (shared by the two V₁ bounds; None: u_sq·u_sq).

    Returns:
        The bound, of the type of the arguments' arithmetic (tensor, SymPy expression or number).

    Raises:
        KeyError: when ``key`` is no Theorem 4.1 bound (listing the bounds).

    Examples:
        >>> theorem41_bound("var1_upper", 2.0, 5.0, 0.25, n_samples=4)      # 2²·0.25/4
        0.25
        >>> theorem41_bound("var2_lower", 2.0, 5.0, 0.5)                      # 5·0.5
        2.5
    """
    q = key.split("_", 1)[0]
    if q == "fisher":
        return u_sq * c
    if q == "var1":
        v = (u_sq * u_sq if u4 is None else u4) * c
    elif q == "var2":
        v = w_sq * c
    else:
        raise KeyError(f"{key!r} is no Theorem 4.1 bound; the bounds are {', '.join(BOUND_CONSTANTS)}")
    return v if n_samples == 1 else v / n_samples


def theorem41_bounds(u_sq: torch.Tensor, w_sq: torch.Tensor, consts: FamilyConstants,
                     n_samples: int = 1, suffix: str = "", keys=None) -> dict[str, torch.Tensor]:
    """Theorem 4.1 bounds for squared norms ‖u_i‖², ‖w_i‖² of shape (batch, ...).

    ``consts`` are the family constants at the same inputs (batch,).  With
    ``suffix="_sharp"`` pass the 𝟙^⊥-projected norms and restricted constants.
    Returns the certified keys, and the ``_opt`` V₁ keys when ``consts`` holds
    optimised values; ``keys`` (names without the suffix, e.g. ``{"fisher_upper"}``; default all)
    restricts the work to those.  Each bound is :func:`theorem41_bound` of one norm and one
    constant (:data:`BOUND_CONSTANTS`).

    >>> import torch
    >>> from fishersym import families
    >>> from fishersym.families.constants import family_constants
    >>> c = family_constants(families.get("categorical", C=3), torch.zeros(1, 3), restricted=False, use_eig=False)
    >>> b = theorem41_bounds(torch.tensor([[2.0]]), torch.tensor([[1.0]]), c, keys={"fisher_upper"})
    >>> sorted(b), round(float(b["fisher_upper"]), 4)     # ‖u‖²·λ_max(Σ) = 2·(1/3)
    (['fisher_upper'], 0.6667)
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
    N = float(n_samples)
    want = [k for k in BOUND_CONSTANTS if (keys is None or k in keys)
            and (not k.endswith("_opt") or consts.M_min_opt is not None)]
    u4 = u_sq * u_sq if any(k.startswith("var1") for k in want) else None
    out = {}
    for k in want:
        c = getattr(consts, BOUND_CONSTANTS[k])
        c = c.reshape(c.shape + (1,) * (u_sq.dim() - c.dim()))
        out[bound_name(k, suffix)] = theorem41_bound(k, u_sq, w_sq, c, N, u4=u4)
    return out


def theorem41_expressions(u_sq, w_sq, constants: Mapping[str, object], n_samples, suffix: str = "") -> dict:
    """The certified Theorem 4.1 bounds as SymPy expressions (the symbolic derivation, THEORY §5):
    :func:`theorem41_bound` with the constants ``constants`` given by name without ``_cert``
    (``sigma_min``, ``sigma_max``, ``M_min``, ``M_max``: closed forms or named symbols) and N an
    integer or a symbol.  The keys are those of :func:`theorem41_bounds` without ``_opt``.

    >>> import sympy as sp
    >>> u2, w2, N = sp.symbols("u2 w2 N", positive=True)
    >>> lam = dict(zip(("sigma_min", "sigma_max", "M_min", "M_max"), sp.symbols("s S m M")))
    >>> theorem41_expressions(u2, w2, lam, N)["var1_upper"]
    M*u2**2/N
    """
    return {bound_name(k, suffix): theorem41_bound(k, u_sq, w_sq, constants[c.removesuffix("_cert")], n_samples)
            for k, c in BOUND_CONSTANTS.items() if not k.endswith("_opt")}


def bound_name(key: str, suffix: str = "") -> str:
    """The result key of bound ``key`` (a :data:`BOUND_CONSTANTS` name) with ``suffix``:
    ``var1_upper`` + ``_sharp`` → ``var1_upper_sharp``, ``var1_upper_opt`` + ``_sharp`` → ``var1_upper_sharp_opt``."""
    return key[:-4] + suffix + "_opt" if key.endswith("_opt") else key + suffix


def bound_violated(value: torch.Tensor, bound: torch.Tensor, side: str, rtol: float = 1e-9,
                   atol: float | torch.Tensor = 0.0, nan_ok: bool = False) -> torch.Tensor:
    """Bool mask of the entries where a bound of ``value`` fails beyond the tolerance: the one
    definition of "a Theorem 4.1 bound holds" (THEORY §5) for every checker in the package.

    ``side="lower"``: bound > value + tol; ``side="upper"``: value > bound + tol, with
    tol = rtol·max(|value|, |bound|) + atol (relative to the larger of the two, so neither a tiny
    value nor a tiny bound makes the test stricter than rounding).  A NaN in either counts as a
    violation unless ``nan_ok`` (entries that were not computed, such as the unsampled entries of a
    sampled V₂, ``numeric.stats.W_KEYS``).

    >>> bound_violated(torch.tensor([1.0, 2.0, float("nan")]), torch.tensor([1.0 + 1e-12, 1.5, 1.0]), "upper").tolist()
    [False, True, True]
    """
    if side not in ("lower", "upper"):
        raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")
    tol = rtol * torch.maximum(value.abs(), bound.abs()) + atol
    gap = (bound - value) if side == "lower" else (value - bound)
    bad = gap > tol
    if not nan_ok:
        bad = bad | torch.isnan(value) | torch.isnan(bound)
    return bad


def bound_pairs(suffixes: tuple[str, ...] = ("", "_sharp")) -> list[tuple[str, str, str]]:
    """(quantity, bound key, side) of every Theorem 4.1 bound with the given suffixes: ``""`` (the
    certified bounds), ``"_sharp"`` (certified, 𝟙^⊥), ``"_opt"`` / ``"_sharp_opt"`` (optimised λ̃,
    which a local optimum may understate: report, do not trust).

    >>> bound_pairs(("",))[:2]
    [('fisher', 'fisher_lower', 'lower'), ('fisher', 'fisher_upper', 'upper')]
    """
    return [(q, f"{q}_{side}{sfx}", side) for sfx in suffixes for q in STAT_KEYS for side in ("lower", "upper")]


def bound_violations(values: Mapping, params=None, rtol: float = 1e-9, atol: float = 0.0,
                     suffixes: tuple[str, ...] = ("", "_sharp"), nan_ok: bool = False) -> dict[str, int]:
    """bound key → number of entries (inputs × parameter entries) where it fails (:func:`bound_violated`),
    for every bound of ``suffixes`` present in ``values``.

    ``values`` is a result mapping, either key → tensor (one parameter) or key → {parameter name →
    tensor} (``conditional_stats``, ``dataset_stats``, ``Derivation.evaluate``); ``params`` restricts
    the latter to some parameters (default all).  Bounds absent from ``values`` are not counted."""
    out: dict[str, int] = {}
    for q, bk, side in bound_pairs(suffixes):
        if bk not in values:
            continue
        vq, vb = values[q], values[bk]
        if isinstance(vq, Mapping):
            names = list(vq) if params is None else list(params)
            pairs = [(vq[n], vb[n]) for n in names]
        else:
            pairs = [(vq, vb)]
        out[bk] = sum(int(bound_violated(v, b, side, rtol, atol, nan_ok).sum()) for v, b in pairs)
    return out


def violated_bounds(values: Mapping, params=None, rtol: float = 1e-9, atol: float = 0.0,
                    suffixes: tuple[str, ...] = ("", "_sharp"), nan_ok: bool = False) -> list[str]:
    r"""Names of the bounds of ``suffixes`` that fail somewhere in a result mapping (empty when all hold).

    The arguments are those of :func:`bound_violations`, which counts the failing entries with
    :func:`bound_violated`: the lower bound b of a value v fails where b − v > tol and the upper
    bound where v − b > tol (THEORY §5), with

    .. math::

        \mathrm{tol} = \mathrm{rtol} \cdot \max(|v|, |b|) + \mathrm{atol}.

    Args:
        values: a result mapping, either key → tensor (one parameter) or key → {parameter name →
            tensor} (``conditional_stats``, ``dataset_stats``, ``Derivation.evaluate``).  Bounds absent
            from ``values`` are not checked.
        params: restricts a mapping per parameter to these parameter names (default all).
        rtol: the relative tolerance (default 1e-9).
        atol: the absolute tolerance (default 0).
        suffixes: which bounds: ``""`` (the certified bounds), ``"_sharp"`` (certified, 𝟙^⊥),
            ``"_opt"`` / ``"_sharp_opt"`` (optimised λ̃, which a local optimum may understate).
        nan_ok: whether a NaN (an entry not computed, such as an unsampled entry of a sampled V₂) is
            accepted; by default it counts as a violation.

    Returns:
        list[str]: the bound keys that fail for at least one entry, in the order of
        :func:`bound_pairs`.

    Examples:
        >>> violated_bounds({"fisher": torch.tensor([1.0]), "fisher_lower": torch.tensor([0.5]),
        ...                  "fisher_upper": torch.tensor([0.9])})
        ['fisher_upper']
    """
    return [k for k, n in bound_violations(values, params, rtol, atol, suffixes, nan_ok).items() if n]
