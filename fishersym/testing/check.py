"""``check_model``: run every applicable property of the paper on a user's model.

Hypothesis generates parameter perturbations and input perturbations around
the given model and inputs; each property runs on every generated example and
a failure is shrunk to a minimal counterexample.  The report says which
properties held, failed or do not apply, with the counterexamples, and the
V₂/V₁ ratio per parameter group (where each estimator wins, THEORY §6.7).
"""
from __future__ import annotations

import copy
import importlib
import math
import numbers
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from .. import families as _families
from ..families.base import ExponentialFamily
from .brute import BRUTE_MAX_PARAMS
from .properties import PROPERTIES, NotApplicable

__all__ = ["check_model", "Report", "PropertyResult", "resolve_factory", "preflight", "infer_input_shape",
           "progress_bar", "CANDIDATE_SHAPES"]

#: properties that take ``result=`` (their conditional_stats call) and the options they compute it with:
#: check_model hands them the baseline on unperturbed examples and a result on ``path`` otherwise
RESULT_OPTIONS = {"closed_forms": {}, "unbiased": {}, "structural": {}, "rescaling": {}, "nonnegative": {},
                  "shift_invariance": {}, "bounds": {"optimised": True}}

#: examples per property in check_model (the expensive ones get fewer)
DEFAULT_EXAMPLES = {"monte_carlo": 1, "symbolic_numeric": 2, "closed_forms": 5, "unbiased": 3, "rescaling": 3}


@dataclass(frozen=True)
class Profile:
    """How much :func:`check_model` does.

    ``"full"`` (the default): every property with :data:`DEFAULT_EXAMPLES` and the bounds property
    also checks the optimised λ̃ constants (a numerical optimisation per input: most of the time on
    large models).  ``"quick"``: the bounds property checks the certified constants only (the
    bounds every result reports), the cross-path properties (rescaling, shift invariance, fast vs
    another path) compute w on :data:`QUICK_V2_SAMPLE` entries per tensor on the reverse path
    (``v2="sample"``: V₂ compared there, I and V₁ everywhere) instead of every entry, and every
    property runs at most ``cap`` examples."""

    name: str
    options: dict                       # per property: conditional_stats / property keyword overrides
    cap: int | None                     # most examples per property (None: max_examples)


#: entries per tensor whose w the quick profile's cross-path properties compute exactly (reverse path,
#: ``v2="sample"``): V₂ is compared at those entries, I and V₁ at every entry
QUICK_V2_SAMPLE = 64

PROFILES = {"full": Profile("full", {}, None),
            "quick": Profile("quick", {"bounds": {"optimised": False},
                                       **{k: {"v2_sample": QUICK_V2_SAMPLE}
                                          for k in ("rescaling", "shift_invariance", "fast_generic")}}, 2)}


@dataclass
class PropertyResult:
    """One property's outcome in a :class:`Report`: status, examples run, seconds, the counterexample
    (``message``, or why it does not apply) and up to 3 non-failure reports."""

    name: str
    status: str  # "passed" | "failed" | "not applicable"
    examples: int = 0
    seconds: float = 0.0
    message: str = ""
    reports: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Result of :func:`check_model`; ``str(report)`` is the printable report."""

    model: str
    family: str
    path: str
    n_samples: int
    results: list[PropertyResult]
    ratios: dict[str, dict[str, float]]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no property failed (passed or not applicable)."""
        return all(r.status != "failed" for r in self.results)

    @property
    def failed(self) -> list[PropertyResult]:
        """The results whose status is "failed"."""
        return [r for r in self.results if r.status == "failed"]

    def raise_on_failure(self) -> None:
        """Raise AssertionError with the printed report when a property failed."""
        if not self.ok:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        lines = [f"fishersym check: {self.model}", f"  family {self.family}, N = {self.n_samples}, "
                 f"exact path: {self.path}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("")
        w = max(len(r.name) for r in self.results)
        for r in self.results:
            extra = f"{r.examples} examples, {r.seconds:.1f}s" if r.status != "not applicable" else r.message
            lines.append(f"  {r.name.ljust(w)}  {r.status.upper():<15} {extra}")
        for r in self.results:
            if r.status == "failed":
                lines += ["", f"  counterexample for {r.name}:"] + ["    " + s for s in r.message.splitlines()]
            for rep in r.reports:
                lines += ["", f"  reported for {r.name} (not a failure):"] + ["    " + s for s in rep.splitlines()[:6]]
        lines += ["", "  V2/V1 per parameter group (sum over the group, mean over inputs; < 1: I2 has lower variance):"]
        for g, d in self.ratios.items():
            ratio = d["ratio"]
            win = "I2 (negative Hessian)" if ratio < 1 else ("I1 (squared score)" if ratio > 1 else "tie")
            lines.append(f"    {g:<24} V1={d['var1']:.4g}  V2={d['var2']:.4g}  V2/V1={ratio:.4g}  -> {win}")
        n_fail = len(self.failed)
        lines += ["", f"  {'ALL APPLICABLE PROPERTIES HELD' if self.ok else f'{n_fail} PROPERTY(IES) FAILED'}"]
        return "\n".join(lines)


def resolve_factory(spec: str):
    """'package.module:factory' → what the factory returns (a module, (module, inputs) or a dict)."""
    if ":" not in spec:
        raise ValueError(f"model spec {spec!r} must look like 'package.module:factory'")
    mod_name, attr = spec.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {mod_name!r} (from {spec!r}): {exc}") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {mod_name!r} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise ValueError(f"{spec!r} is neither an nn.Module nor a callable factory")
    return obj()


def _unpack(made, inputs):
    family = None
    if isinstance(made, dict):
        model, inputs, family = made["model"], made.get("inputs", inputs), made.get("family")
    elif isinstance(made, (tuple, list)):
        model, inputs = made[0], (made[1] if len(made) > 1 else inputs)
    else:
        model = made
    return model, inputs, family


def preflight(model: nn.Module, family: ExponentialFamily, x: torch.Tensor) -> None:
    """Errors that must come before any hypothesis run: output size, differentiability."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: nothing to analyse")
    with torch.enable_grad():
        out = model(x[:1])
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, expected a tensor of raw outputs")
    if not out.is_floating_point():
        raise ValueError(f"the model is not differentiable: its output has dtype {out.dtype} (integer outputs)")
    if not out.requires_grad:
        raise ValueError("the model is not differentiable: its output does not depend on the parameters "
                         "through autograd (detached graph, torch.no_grad or .detach() in forward)")
    family.check_output(out.detach())


#: per-input shapes tried, in order, when a model's input shape cannot be read off its first layer
#: (:func:`infer_input_shape`): flat vectors of the digits / MNIST sizes, the digits' 8 rows of 8,
#: then images with 1 or 3 channels at the digits, MNIST and CIFAR sizes
CANDIDATE_SHAPES: tuple[tuple[int, ...], ...] = (
    (64,), (784,), (8, 8), (28, 28), (1, 8, 8), (1, 28, 28), (1, 32, 32), (1, 16, 16),
    (3, 8, 8), (3, 32, 32), (3, 28, 28), (3, 16, 16))


def _runs_on(model: nn.Module, shape: tuple[int, ...]) -> bool:
    """True when ``model`` maps a (2, *shape) batch to a (2, C) float output (C ≥ 1)."""
    p = next((q for q in model.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.get_default_dtype()
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *shape), dtype=dtype))
    except Exception:  # noqa: BLE001 - the probe: any failure means "not this shape"
        return False
    return isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 2 and out.is_floating_point()


def infer_input_shape(model: nn.Module, candidates=CANDIDATE_SHAPES) -> tuple[int, ...]:
    """The shape of one input of ``model`` (without the batch dimension).

    An ``nn.Linear`` or a ``Conv1d``/``Conv2d`` seen first among the modules gives the feature or
    channel count; the result is then the first of ``candidates`` that agrees with it and on which
    the model maps a batch of 2 to a (2, C) output (one forward pass of zeros per candidate tried).
    For a model whose first module is a Linear, its (in_features,) is returned when the model runs
    on it.  Raises ``ValueError`` naming ``inputs=``/``input_shape=`` when no candidate runs.

    >>> infer_input_shape(nn.Sequential(nn.Linear(5, 2)))
    (5,)
    >>> infer_input_shape(nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)))
    (3, 8, 8)
    """
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding))), None)
    cands = list(candidates)
    if isinstance(first, nn.Linear):
        cands = [(first.in_features,)] + [c for c in cands if c[-1] == first.in_features]
    elif isinstance(first, nn.Conv2d):
        cands = [c for c in cands if len(c) == 3 and c[0] == first.in_channels]
    elif isinstance(first, nn.Conv1d):
        cands = [(first.in_channels, n) for n in (8, 16, 28, 32, 64)]
    elif isinstance(first, nn.Embedding):
        cands = []  # token ids: no float shape to guess
    for c in cands:
        if _runs_on(model, c):
            return tuple(c)
    tried = ", ".join(str(tuple(c)) for c in cands[:6]) + (", ..." if len(cands) > 6 else "")
    raise ValueError(f"cannot infer the input shape of this {type(model).__name__} (tried {tried or 'nothing'}): "
                     "pass inputs= or input_shape= (the shape of one input, without the batch dimension)")


def _infer_input_shape(model: nn.Module) -> tuple[int, ...]:
    """Backwards-compatible name of :func:`infer_input_shape`."""
    return infer_input_shape(model)


def progress_bar(iterable=None, progress: bool | None = None, **kw):
    """A tqdm bar on stderr, shown only when stderr is a terminal and ``progress`` is not False."""
    from tqdm.auto import tqdm
    disable = progress is False or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return tqdm(iterable, file=sys.stderr, disable=disable, leave=False, **kw)


def _perturbed(model: nn.Module, seed: int, eps: float) -> nn.Module:
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(eps * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _check_run_settings(max_examples, perturb) -> None:
    """Validate the hypothesis settings of :func:`check_model` before anything runs: ``max_examples``
    a positive integer, ``perturb`` (the largest relative perturbation, drawn from [0, perturb]) a
    finite number ≥ 0.  Hypothesis' own errors for these are about its internals, not the call."""
    if isinstance(max_examples, bool) or not isinstance(max_examples, numbers.Integral):
        raise TypeError(f"max_examples must be a positive integer, got {max_examples!r}")
    if max_examples < 1:
        raise ValueError(f"max_examples must be a positive integer (examples per property), got {max_examples}; "
                         "use properties=[...] to skip properties")
    if isinstance(perturb, bool) or not isinstance(perturb, numbers.Real):
        raise TypeError(f"perturb must be a number >= 0, got {perturb!r}")
    if not math.isfinite(float(perturb)) or perturb < 0:
        raise ValueError(f"perturb must be a finite number >= 0 (the largest relative perturbation of the "
                         f"parameters and inputs; 0 checks the model as given), got {perturb!r}")


def check_model(model: nn.Module | str, family: str | ExponentialFamily | None = None,
                inputs: torch.Tensor | None = None, *, input_shape: Sequence[int] | None = None,
                n_samples: int = 1, max_examples: int = 5, perturb: float = 0.3,
                properties: Iterable[str] | None = None, groups=None, seed: int = 0,
                family_params: dict | None = None, path: str = "auto",
                progress: bool | None = None, profile: str = "full") -> Report:
    r"""Run the applicable properties of :mod:`fishersym.testing.properties` on ``model``.

    Hypothesis perturbs the parameters (relative scale ``perturb``) and the inputs around the given
    ones, and each property compares the exact results of :func:`fishersym.numeric.conditional_stats`
    with an independent computation: for example the closed forms and unbiasedness against label
    enumeration or quadrature (THEORY §2, §3), the certified bounds of THEORY §5, and agreement across
    exact paths.  The model is analysed in float64 (a copy, in eval mode).  The report also gives, per
    group g, the ratio of the baseline call's mean V₂ to its mean V₁:

    .. math::

        \mathbb{E}_y\bigl[\hat I_1(\theta_i \mid x)\bigr] = \mathbb{E}_y\bigl[\hat I_2(\theta_i \mid x)\bigr]
        = u_i^\top \Sigma u_i, \qquad
        \Var_y \hat I_2(\theta_i \mid x) = \frac{1}{N}\, w_i^\top \Sigma w_i, \qquad
        \rho_g = \frac{\operatorname{mean}_{i \in g} V_2(\theta_i \mid x)}
                      {\operatorname{mean}_{i \in g} V_1(\theta_i \mid x)}.

    Args:
        model: an ``nn.Module`` or a 'package.module:factory' string (the factory may also return the
            inputs and the family).
        family: a name or :class:`~fishersym.families.ExponentialFamily`; by name it takes its size C
            from the model's outputs where C is a free parameter (:func:`fishersym.families.resolve`).
        inputs: a tensor (batch, …) fixing where the model is checked.
        input_shape: the shape of one input (without the batch dimension), used when ``inputs`` is
            None: two seeded random inputs (default: inferred, :func:`infer_input_shape`).
        n_samples: N, the number of label samples (default 1).
        max_examples: hypothesis examples per property (default 5; :data:`DEFAULT_EXAMPLES` per
            property where smaller).
        perturb: the largest relative perturbation of the parameters and inputs (drawn from
            [0, perturb]; 0 checks the model as given).
        properties: the names of the properties to run (default: all of :data:`PROPERTIES`).
        groups: user parameter groups, as in :func:`~fishersym.numeric.conditional_stats`.
        seed: the seed of the random inputs drawn from ``input_shape`` (default 0; hypothesis itself is
            derandomised).
        family_params: parameters of a family given by name; given explicitly, they win.
        path: the exact path of the baseline ``conditional_stats`` call (the V₂/V₁ ratios; "auto",
            "fast", "generic", "reverse", …).
        progress: a tqdm bar on stderr over the properties, with the current example count (None: when
            stderr is a terminal; False: never); True also prints one line per finished property
            (name, status, examples, seconds) to stderr when stderr is not a terminal (logs, CI).
        profile: "full" or "quick" (:class:`Profile`: certified constants only and at most 2 examples
            per property; every property's time is in the report either way).

    Returns:
        Report: the outcome of each property (status, examples run, seconds, the counterexample),
        the V₂/V₁ ratios per group and notes; ``report.ok`` is True when no property failed, and
        ``str(report)`` is the printable report.

    Raises:
        ValueError: without a family, for an unknown ``profile`` or property name, ``inputs`` without a
            batch dimension, a ``max_examples`` below 1 or a negative or infinite ``perturb``.
        TypeError: when ``model`` is not an ``nn.Module`` (nor a factory string returning one), or
            ``max_examples`` or ``perturb`` is not a number.

    Examples:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        >>> rep = check_model(net, "categorical", family_params={"C": 2}, input_shape=(3,), profile="quick",
        ...                   properties=["closed_forms", "bounds"], progress=False)
        >>> rep.ok, [r.examples <= 2 for r in rep.results]
        (True, [True, True])
    """
    _check_run_settings(max_examples, perturb)
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(map(repr, PROFILES))}, got {profile!r}")
    prof = PROFILES[profile]
    notes_profile = (f"profile {prof.name!r}: certified constants only, at most {prof.cap} examples per property, "
                     f"cross-path V₂ compared on {QUICK_V2_SAMPLE} sampled entries per tensor" if prof.cap else None)
    notes = []
    if isinstance(model, str):
        label = model
        model, inputs, fam_from = _unpack(resolve_factory(model), inputs)
        family = family or fam_from
    else:
        label = type(model).__name__
    if family is None:
        raise ValueError("no family given: pass family= (one of " + ", ".join(_families.available()) + ")")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model).to(torch.float64)
    model.eval()
    notes.append("analysed a float64 copy in eval mode")
    if notes_profile:
        notes.append(notes_profile)
    if inputs is None:
        shape = tuple(input_shape) if input_shape is not None else infer_input_shape(model)
        inputs = torch.randn((2, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
        raise ValueError("inputs must be a tensor with a batch dimension (batch, ...)")
    x0 = inputs.to(torch.float64)
    # a family by name takes its size from the model (issue 11 item 6); explicit family_params win
    from ..numeric.conditional import resolve_family
    family = resolve_family(family, family_params, model=model, data=x0)
    preflight(model, family, x0)

    from ..numeric import conditional_stats
    base = conditional_stats(model, x0, family, n_samples, groups=groups, path=path)
    ratios = {}
    for g, d in base.groups.items():
        v1, v2 = float(d["var1"].mean()), float(d["var2"].mean())
        ratios[g] = {"var1": v1, "var2": v2, "ratio": v2 / v1 if v1 > 0 else (math.inf if v2 > 0 else 1.0)}
    names = list(properties) if properties is not None else list(PROPERTIES)
    unknown = set(names) - set(PROPERTIES)
    if unknown:
        raise ValueError(f"unknown properties {sorted(unknown)}; available: {', '.join(PROPERTIES)}")

    too_big = sum(p.numel() for p in model.parameters() if p.requires_grad) > BRUTE_MAX_PARAMS
    results = []
    bar = progress_bar(names, progress, desc="fishersym check", unit="property")

    def property_run(name: str, fn, count: dict[str, int], reports: list[str], n_ex: int, overrides: dict):
        """The hypothesis test of property ``name`` (calling it runs the examples), built here so that
        it binds this property's values, not the loop's variables (its source, and with it hypothesis'
        derandomised seed, is the same as when it was defined in the loop)."""

        @settings(max_examples=n_ex, derandomize=True, database=None, deadline=None, print_blob=False,
                  phases=[Phase.explicit, Phase.generate, Phase.shrink],
                  suppress_health_check=list(HealthCheck))
        @given(st.integers(0, 2 ** 31 - 1), st.floats(0.0, float(perturb)), st.floats(0.0, float(perturb)))
        def run(s, eps_p, eps_x):
            count["n"] += 1
            bar.set_postfix_str(f"{name}: example {count['n']}", refresh=True)
            m = _perturbed(model, s, eps_p) if eps_p > 0 else model
            g = torch.Generator().manual_seed(s + 1)
            x = x0 + eps_x * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
            kw = {}
            if name in RESULT_OPTIONS and not (name in ("closed_forms", "unbiased") and too_big):
                # the property's own conditional_stats call: the baseline when unperturbed, else on ``path``
                opts = {**RESULT_OPTIONS[name], **{k: v for k, v in overrides.items() if k == "optimised"}}
                if not opts.get("optimised") and eps_p == 0 and eps_x == 0:
                    kw["result"] = base
                elif path != "auto":
                    kw["result"] = conditional_stats(m, x, family, n_samples, path=path, **opts)
            kw.update(overrides)
            out = fn(m, family, x, n_samples=n_samples, **kw) if name != "n_scaling" else fn(m, family, x)
            if isinstance(out, list):
                reports.extend(out)
        return run

    for name in bar:
        fn = PROPERTIES[name]
        count = {"n": 0}
        reports: list[str] = []
        n_ex = int(min(max_examples, DEFAULT_EXAMPLES.get(name, max_examples), prof.cap or max_examples))
        overrides = prof.options.get(name, {})

        run = property_run(name, fn, count, reports, n_ex, overrides)
        t0 = time.time()
        try:
            run()
            res = PropertyResult(name, "passed", count["n"], time.time() - t0, reports=reports[:3])
        except NotApplicable as exc:
            res = PropertyResult(name, "not applicable", 0, time.time() - t0, str(exc))
        except AssertionError as exc:
            res = PropertyResult(name, "failed", count["n"], time.time() - t0, str(exc))
        results.append(res)
        if progress and bar.disable:
            print(f"fishersym check: [{len(results)}/{len(names)}] {name}: {res.status} "
                  f"({res.examples} examples, {res.seconds:.1f} s)", file=sys.stderr, flush=True)
    bar.close()
    return Report(label, repr(family), base.path, n_samples, results, ratios, notes)
