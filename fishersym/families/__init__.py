"""Output distributions: exponential families defined by their log-partition F(h).

THEORY §1 (setting), §3 (cumulants), §4 (closed forms), §5 (constants).

Adding a family is one file (``tests/test_family_plugin.py`` defines a Gamma family that way): subclass
:class:`ExponentialFamily` with its own ``name`` (the class statement registers it, so :func:`get` finds
it) and define F twice, ``log_partition_sym`` (SymPy) and ``log_partition`` (torch), plus
``log_base_measure`` and ``sample``; ``_check_domain`` where h is restricted.  Everything else has a
generic default that a family overrides only where it has something better: closed-form cumulants
(``sigma_quad``, ``kappa4``, ``quad_forms``, ``closed_form_constants``); the label space for the
oracle (``support`` for discrete families, ``label_nodes`` — a quadrature rule — for continuous ones);
display coordinates (``mean_params_sym``, ``display_coordinates``, ``display_domain``,
``display_positivity_subs``, ``display_sigma``, ``sigma_factor_sym``, ``output_probe_forms_sym``,
``readable_forms_sym``) and the derived documents' text (``display_probabilities``,
``latex_constants_note``, ``latex_conclusions``, ``symbolic_theorems``); ``statistic`` /
``check_statistic`` for observed labels; ``sample_point``, ``example_params`` and ``summary`` for the CLI;
``param_strategy``, ``fuzz_param_strategy`` and ``fuzz_output_cap`` for the property suite;
``class_prediction`` for classifiers.

>>> import torch
>>> from fishersym import families
>>> fam = families.get("categorical", C=3)
>>> fam.sigma_sym.shape               # Σ = ∇²F, derived by SymPy
(3, 3)
>>> h, u = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
>>> round(float(fam.mquad(h, u)), 6)  # N·V₁ = Σ_a p_a (d_a² − s)² with p = ⅓, d = (⅔, −⅓, −⅓): 6/243
0.024691
"""
from __future__ import annotations

import inspect

from .base import REGISTRY, ExponentialFamily, Support, register, unregister
from .bernoulli import Bernoulli
from .categorical import Categorical
from .gaussian import Gaussian
from .gaussian_meanvar import GaussianMeanVar
from .links import Identity, Link, MeanLogVar, Scale
from .poisson import Poisson

__all__ = ["ExponentialFamily", "Support", "Gaussian", "Bernoulli", "Categorical", "Poisson",
           "GaussianMeanVar", "Link", "Identity", "Scale", "MeanLogVar", "get", "resolve", "takes_size",
           "available", "REGISTRY", "register", "unregister"]

# REGISTRY (name → family class) is filled by the class statements themselves
# (ExponentialFamily.__init_subclass__): importing the five modules above registers the built-in
# families, and a family defined anywhere else — a user's module, a test file — registers itself
# the same way, so adding a family is one file (issue 11 item 4).


def available() -> list[str]:
    """Names accepted by :func:`get`."""
    return sorted(REGISTRY)


def get(name: str | ExponentialFamily, **params) -> ExponentialFamily:
    """Build a family by name, e.g. ``get("categorical", C=10)``, ``get("gaussian", sigma2=0.5)``.

    An :class:`ExponentialFamily` instance is returned unchanged (params must then be empty).
    Entry points that take a model with a family name take its size C from the model's outputs
    instead of the default here (:func:`resolve`).
    Anything else (a list, a class, None, …) is refused with a TypeError naming its type.
    """
    if isinstance(name, ExponentialFamily):
        if params:
            raise ValueError("parameters given together with a family instance; pass one or the other")
        return name
    if not isinstance(name, str):
        raise TypeError(f"family must be a name (str) or an ExponentialFamily instance, got "
                        f"{type(name).__name__} ({name!r:.80}); available names: {', '.join(available())}")
    if name not in REGISTRY:
        raise ValueError(f"unknown family {name!r}; available: {', '.join(available())}")
    try:
        return REGISTRY[name](**params)
    except TypeError as exc:
        if "keyword argument" not in str(exc):  # a parameter of the wrong type: the family's own message
            raise
        raise ValueError(f"invalid parameters {params} for family {name!r}: {exc}") from None


def takes_size(name: str) -> bool:
    """Whether the family registered as ``name`` has its size C as a free parameter (a ``C`` keyword
    of its constructor: categorical, gaussian, poisson), which :func:`resolve` infers from the model."""
    if name not in REGISTRY:
        raise ValueError(f"unknown family {name!r}; available: {', '.join(available())}")
    try:
        return "C" in inspect.signature(REGISTRY[name]).parameters
    except (TypeError, ValueError):  # a builtin or C-implemented factory: no introspectable size
        return False


def resolve(family: str | ExponentialFamily, family_params: dict | None = None,
            out_dim: int | None = None) -> ExponentialFamily:
    """The family of an analysis: the one definition of "a family by name takes its size from the
    model" (issue 11 item 6), used by every entry point that takes a family together with a model.

    - An :class:`ExponentialFamily` instance is returned unchanged (``family_params`` must be empty);
      with ``out_dim`` it must expect that many outputs, else a ValueError names both sizes.
    - A name builds the family with ``family_params``; where the family's size C is a free parameter
      (:func:`takes_size`) and ``family_params`` has no ``C``, C = ``out_dim``, the number of the
      model's outputs (the family's own default when ``out_dim`` is None).  Explicit parameters win:
      a family whose output size differs from ``out_dim`` is refused, naming both sizes and the fix.

    >>> resolve("categorical", out_dim=3).C, resolve("poisson", out_dim=2).C, resolve("bernoulli", out_dim=1).C
    (3, 2, 1)
    >>> resolve("categorical", {"C": 10}, out_dim=3)
    Traceback (most recent call last):
    ...
    ValueError: categorical: the model has 3 outputs but the family expects 10 (C=10 given); drop C to take it from the model, or pass families.get('categorical', C=3)
    """  # noqa: E501  (a doctest's expected exception message is one line)
    if out_dim is not None and (isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1):
        raise ValueError(f"out_dim must be a positive int (the model's number of outputs), got {out_dim!r}")
    if family_params is not None and not isinstance(family_params, dict):
        raise TypeError(f"family_params must be a dict of the family's parameters, e.g. {{'C': 3}}, got "
                        f"{type(family_params).__name__}")
    params = dict(family_params or {})
    if isinstance(family, ExponentialFamily):
        fam = get(family, **params)
        if out_dim is not None and fam.out_dim != out_dim:
            raise ValueError(f"{fam.name}: the model has {out_dim} outputs but the family object expects "
                             f"{fam.out_dim}; build it for the model, e.g. families.get({fam.name!r}, C={out_dim}), "
                             f"or pass the name {fam.name!r} alone to take the size from the model")
        return fam
    inferred = False
    if isinstance(family, str) and out_dim is not None and takes_size(family) and "C" not in params:
        params["C"] = out_dim
        inferred = True
    fam = get(family, **params)
    if out_dim is not None and fam.out_dim != out_dim:
        given = ", ".join(f"{k}={v!r}" for k, v in params.items())
        if inferred or not takes_size(family):
            raise ValueError(f"{family}: the model has {out_dim} outputs but the family has a fixed output size "
                             f"{fam.out_dim}; use a family of {out_dim} outputs (available: {', '.join(available())})")
        raise ValueError(f"{family}: the model has {out_dim} outputs but the family expects {fam.out_dim} "
                         f"({given} given); drop C to take it from the model, or pass "
                         f"families.get({family!r}, C={out_dim})")
    return fam
