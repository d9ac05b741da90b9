"""Hypothesis strategies for the property suite (composable, shrinkable).

    from hypothesis import given
    from fishersym.testing import strategies as fst

    @given(fst.cases(depth=(1, 3), widths=(1, 5)))
    def test_mine(case):
        model, family, x = case.model, case.family, case.inputs

Families come with valid parameters; architectures are MLPs (depth, widths,
per-layer activations) of the fast path's layer types (THEORY §7); parameter
values and inputs are bounded, finite float64 arrays drawn element by
element (so hypothesis shrinks them towards 0).  Entries are 0 or of
magnitude ≥ ``TINY`` = 1e-4: products of subnormal-scale values underflow
float64, where quantities that are exactly scale-free (the sign of Î₂ for a
weight does not depend on a_k) and a brute-force recomputation part ways for
numerical, not mathematical, reasons.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from .. import activations as _act_registry
from .. import families as _families
from ..families.base import ExponentialFamily

__all__ = ["TINY", "elements", "EXAMPLE_ACTIVATIONS", "SMOOTH", "PIECEWISE_LINEAR", "family_specs", "families",
           "activations", "Architecture", "architectures", "parameter_values", "inputs", "n_samples", "ModelCase",
           "cases", "architecture_module"]

#: activation name → module factory: every entry of the registry :mod:`fishersym.activations`
#: with its strategy hyper-parameters (``ActivationSpec.example``, e.g. a leaky slope 0.1)
EXAMPLE_ACTIVATIONS = _act_registry.constructors(example=True)
#: activations with σ'' ≠ 0 somewhere (V₂ > 0 in hidden layers in general, THEORY §6.3)
SMOOTH = _act_registry.smooth_names()
#: piecewise-linear activations: every diagonal second derivative vanishes a.e. (THEORY §6.3)
PIECEWISE_LINEAR = _act_registry.piecewise_linear_names()


def family_specs(names: Sequence[str] | None = None, max_classes: int = 5) -> st.SearchStrategy[tuple[str, dict]]:
    """(name, params) of a registered family with valid parameters, drawn by each family's own
    :meth:`~fishersym.families.base.ExponentialFamily.param_strategy` (a family defined in any module,
    once registered, is drawn too)."""
    reg = _families.REGISTRY
    names = list(names) if names is not None else _families.available()
    unknown = set(names) - set(reg)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; available: {_families.available()}")
    specs = {n: reg[n].param_strategy(max_classes) for n in names}
    return st.sampled_from(names).flatmap(lambda n: specs[n].map(lambda p: (n, p)))


def families(names: Sequence[str] | None = None, max_classes: int = 5) -> st.SearchStrategy[ExponentialFamily]:
    """Family instances (see :func:`family_specs`)."""
    return family_specs(names, max_classes).map(lambda s: _families.get(s[0], **s[1]))


def activations(names: Sequence[str] | None = None) -> st.SearchStrategy[str]:
    """Activation names of :data:`EXAMPLE_ACTIVATIONS` (all of them, or ``names`` after checking each is known)."""
    names = list(names) if names is not None else list(EXAMPLE_ACTIVATIONS)
    unknown = set(names) - set(EXAMPLE_ACTIVATIONS)
    if unknown:
        raise ValueError(f"unknown activations {sorted(unknown)}; available: {sorted(EXAMPLE_ACTIVATIONS)}")
    return st.sampled_from(names)


@dataclass(frozen=True)
class Architecture:
    """An MLP in_dim → widths… → out_dim with one activation after every hidden Linear."""

    in_dim: int
    widths: tuple[int, ...]
    out_dim: int
    activations: tuple[str, ...] = field(default=())

    @property
    def n_params(self) -> int:
        """Parameter count Σ_i (d_i·d_{i+1} + d_{i+1}) over the dims (in_dim, *widths, out_dim)."""
        dims = (self.in_dim, *self.widths, self.out_dim)
        return sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(len(dims) - 1))

    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every parameter as ``nn.Sequential`` names them: ``{2i}.weight`` of shape
        (d_{i+1}, d_i) and ``{2i}.bias`` of shape (d_{i+1},)."""
        dims = (self.in_dim, *self.widths, self.out_dim)
        out = []
        for i in range(len(dims) - 1):
            idx = 2 * i
            out += [(f"{idx}.weight", (dims[i + 1], dims[i])), (f"{idx}.bias", (dims[i + 1],))]
        return out


#: the default input width of :func:`architectures` (one strategy object, shared by every call)
_IN_DIMS = st.integers(1, 4)


def architectures(in_dim: int | st.SearchStrategy[int] = _IN_DIMS, out_dim: int = 1,
                  depth: tuple[int, int] = (1, 4), widths: tuple[int, int] = (1, 6),
                  activation_names: Sequence[str] | None = None) -> st.SearchStrategy[Architecture]:
    """MLPs with ``depth`` Linear layers (depth − 1 hidden layers), per-layer activations."""
    in_s = in_dim if isinstance(in_dim, st.SearchStrategy) else st.just(in_dim)

    @st.composite
    def build(draw: st.DrawFn) -> Architecture:
        d = draw(st.integers(*depth))
        ws = tuple(draw(st.lists(st.integers(*widths), min_size=d - 1, max_size=d - 1)))
        acts = tuple(draw(st.lists(activations(activation_names), min_size=d - 1, max_size=d - 1)))
        return Architecture(draw(in_s), ws, out_dim, acts)
    return build()


def architecture_module(arch: Architecture, values: dict[str, np.ndarray] | None = None,
              dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """The nn.Sequential(Linear, act, …, Linear) of ``arch`` with the given parameter values (not
    :func:`fishersym.experiments.mlp.build_mlp`, the experiments' trainable classifier)."""
    dims = (arch.in_dim, *arch.widths, arch.out_dim)
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(EXAMPLE_ACTIVATIONS[arch.activations[i]]())
    model = nn.Sequential(*layers).to(dtype)
    if values is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(torch.as_tensor(values[n], dtype=dtype))
    return model


TINY = 1e-4


def elements(bound: float = 2.0, tiny: float = TINY) -> st.SearchStrategy[float]:
    """Floats that are 0 or have tiny ≤ |v| ≤ bound (see the module docstring)."""
    mag = st.floats(tiny, bound, allow_nan=False, allow_infinity=False, width=64)
    return st.one_of(st.just(0.0), mag, mag.map(lambda v: -v))


def parameter_values(arch: Architecture, bound: float = 2.0) -> st.SearchStrategy[dict[str, np.ndarray]]:
    """Bounded finite values for every parameter of ``arch``."""
    elems = elements(bound)
    return st.fixed_dictionaries({n: arrays(np.float64, s, elements=elems) for n, s in arch.shapes()})


def inputs(shape: Sequence[int], bound: float = 2.0,
           batch: tuple[int, int] = (1, 3)) -> st.SearchStrategy[torch.Tensor]:
    """A batch of bounded finite inputs of per-input ``shape``."""
    elems = elements(bound)
    return st.integers(*batch).flatmap(
        lambda b: arrays(np.float64, (b, *shape), elements=elems).map(torch.from_numpy))


def n_samples(max_n: int = 1000) -> st.SearchStrategy[int]:
    """Label sample sizes N."""
    return st.integers(1, max_n)


@dataclass
class ModelCase:
    """A generated test case: model, family, inputs, N."""

    arch: Architecture
    model: nn.Sequential
    family: ExponentialFamily
    inputs: torch.Tensor
    n_samples: int

    def __repr__(self) -> str:
        params = {n: p.detach().tolist() for n, p in self.model.named_parameters()}
        return (f"ModelCase(family={self.family!r}, arch={self.arch}, n_samples={self.n_samples},\n"
                f"     parameters={params},\n     inputs={self.inputs.tolist()})")


def cases(family_names: Sequence[str] | None = None, depth: tuple[int, int] = (1, 4),
          widths: tuple[int, int] = (1, 6), activation_names: Sequence[str] | None = None,
          batch: tuple[int, int] = (1, 2), max_n: int = 50, bound: float = 1.5,
          max_classes: int = 5) -> st.SearchStrategy[ModelCase]:
    """Family + MLP architecture + parameter values + inputs + N, consistent with each other."""

    @st.composite
    def build(draw: st.DrawFn) -> ModelCase:
        fam = draw(families(family_names, max_classes))
        arch = draw(architectures(st.integers(1, 3), fam.out_dim, depth, widths, activation_names))
        vals = draw(parameter_values(arch, bound))
        x = draw(inputs((arch.in_dim,), bound, batch))
        return ModelCase(arch, architecture_module(arch, vals), fam, x, draw(n_samples(max_n)))
    return build()


# ---------------------------------------------------------------------------- reliability fuzzing
# (issue 13: shared modules, tied weights, saturated outputs, random families, float32/float64)

#: model structures of :func:`shared_module_mlps`
#:
#: * ``plain``: ``Sequential(Linear, act, …, Linear)``, 1–3 Linear layers, one module per position;
#: * ``shared_activation``: two hidden layers with **one** activation instance at both positions
#:   (``act = nn.Tanh(); Sequential(l1, act, l2, act, l3)``, the idiom of issue 13 item 1);
#: * ``shared_linear``: one square ``Linear`` applied twice (``Sequential(l, a1, l, a2, out)``);
#: * ``shared_output``: one square ``Linear`` as the first and the last layer
#:   (``Sequential(l, act, l)``, input width = hidden width = output width);
#: * ``tied_weights``: distinct square ``Linear`` modules whose weights are one ``nn.Parameter``
#:   (``l2.weight = l1.weight``), biases separate.
STRUCTURES = ("plain", "shared_activation", "shared_linear", "shared_output", "tied_weights")

def saturating_caps() -> dict[str, float]:
    """Largest |raw output| each registered family is driven to (its ``fuzz_output_cap``): the
    softmax/sigmoid saturate (logit gaps past the float32 ≈ 17 and float64 ≈ 37 thresholds of issue 13
    item 2), the Gaussian mean is linear; the Poisson log-rate and the meanvar log-variance stay
    moderate (rates ≤ e⁵ ≈ 148, σ² ∈ [e⁻⁵, e⁵])."""
    return {n: float(c.fuzz_output_cap) for n, c in _families.REGISTRY.items()}


@dataclass
class FuzzModel:
    """A generated model with its structure name (see :data:`STRUCTURES`)."""

    structure: str
    model: nn.Sequential
    in_dim: int
    out_dim: int

    def __repr__(self) -> str:
        ids: dict[int, str] = {}
        for n, p in self.model.named_parameters():
            ids.setdefault(id(p), n)
        mods = []
        first: dict[int, int] = {}
        for i, m in enumerate(self.model):
            tag = f"={first[id(m)]}" if id(m) in first else ""
            first.setdefault(id(m), i)
            mods.append(f"{i}:{m!r}{tag}")
        params = {n: p.detach().tolist() for n, p in self.model.named_parameters()}
        tied = [f"{n} is {ids[id(p)]}" for n, p in self.model.named_parameters(remove_duplicate=False)
                if ids[id(p)] != n]
        return (f"FuzzModel({self.structure}, dtype={next(self.model.parameters()).dtype}, "
                f"training={self.model.training}, modules=[{', '.join(mods)}], tied={tied},\n"
                f"          parameters={params})")


def fuzz_family_specs(max_classes: int = 6) -> st.SearchStrategy[tuple[str, dict]]:
    """(name, params) over every registered family with random valid parameters, by each family's
    :meth:`~fishersym.families.base.ExponentialFamily.fuzz_param_strategy` (e.g. categorical with
    C ∈ 2..``max_classes``; gaussian with C ∈ {1, 2}, σ² ∈ [0.05, 20] log-uniform-ish and either link)."""
    reg = _families.REGISTRY
    names = _families.available()
    specs = {n: reg[n].fuzz_param_strategy(max_classes) for n in names}
    return st.sampled_from(names).flatmap(lambda n: specs[n].map(lambda p: (n, p)))


def saturated_scales(cap: float = 50.0) -> st.SearchStrategy[float | None]:
    """The largest |raw output| to rescale a model's last layer to, or None (leave as drawn).

    Mostly saturating targets: logit magnitudes past float32's (≈ 17) and float64's (≈ 37)
    thresholds where 1 − Σp² rounds to 0 (issue 13 item 2), plus moderate ones; clipped to ``cap``."""
    targets = [0.5, 3.0, 10.0, 17.0, 20.0, 30.0, 37.0, 40.0, 50.0]
    return st.one_of(st.none(), st.sampled_from([t for t in targets if t <= cap] or [cap]),
                     st.floats(0.1, cap))


def _linear(n_in: int, n_out: int, dtype: torch.dtype, bias: bool = True) -> nn.Linear:
    return nn.Linear(n_in, n_out, bias=bias, dtype=dtype)


def shared_module_mlps(out_dim: int, in_dim: tuple[int, int] = (1, 4), widths: tuple[int, int] = (1, 8),
                       structures: Sequence[str] | None = None, activation_names: Sequence[str] | None = None,
                       bound: float = 1.5, dtype: torch.dtype = torch.float64) -> st.SearchStrategy[FuzzModel]:
    """Small MLPs (≤ 3 Linear applications, ≤ ``widths[1]`` units) of the :data:`STRUCTURES`:
    shared activation instances, one Linear used twice, tied weights, or plain.  Parameter values
    are drawn per distinct parameter (:func:`elements`, |v| ≤ ``bound``), so tied entries stay tied."""
    structures = list(structures) if structures is not None else list(STRUCTURES)
    unknown = set(structures) - set(STRUCTURES)
    if unknown:
        raise ValueError(f"unknown structures {sorted(unknown)}; available: {STRUCTURES}")

    @st.composite
    def build(draw: st.DrawFn) -> FuzzModel:
        kind = draw(st.sampled_from(structures))
        act = lambda: EXAMPLE_ACTIVATIONS[draw(activations(activation_names))]()  # noqa: E731
        if kind == "plain":
            d = draw(st.integers(1, 3))
            dims = [draw(st.integers(*in_dim))] + [draw(st.integers(*widths)) for _ in range(d - 1)] + [out_dim]
            layers: list[nn.Module] = []
            for i in range(d):
                layers.append(_linear(dims[i], dims[i + 1], dtype))
                if i < d - 1:
                    layers.append(act())
            d_in = dims[0]
        elif kind == "shared_activation":
            d_in, w1, w2 = draw(st.integers(*in_dim)), draw(st.integers(*widths)), draw(st.integers(*widths))
            a = act()
            layers = [_linear(d_in, w1, dtype), a, _linear(w1, w2, dtype), a, _linear(w2, out_dim, dtype)]
        elif kind == "shared_linear":
            d_in = draw(st.integers(*widths))
            lin = _linear(d_in, d_in, dtype)
            a1 = act()
            a2 = a1 if draw(st.booleans()) else act()
            layers = [lin, a1, lin, a2, _linear(d_in, out_dim, dtype)]
        elif kind == "shared_output":
            d_in = out_dim
            lin = _linear(out_dim, out_dim, dtype)
            layers = [lin, act(), lin]
        else:  # tied_weights
            d_in = draw(st.integers(*widths))
            l1, l2 = _linear(d_in, d_in, dtype), _linear(d_in, d_in, dtype)
            l2.weight = l1.weight
            layers = [l1, act(), l2, act(), _linear(d_in, out_dim, dtype)]
        model = nn.Sequential(*layers)
        elems = elements(bound)
        with torch.no_grad():
            for _, p in model.named_parameters():  # distinct parameters only
                vals = draw(arrays(np.float64, tuple(p.shape), elements=elems))
                p.copy_(torch.as_tensor(vals, dtype=dtype))
        if draw(st.booleans()):
            model.eval()
        return FuzzModel(kind, model, d_in, out_dim)
    return build()


def rescale_outputs(model: nn.Sequential, x: torch.Tensor, target: float | None, cap: float) -> float:
    """Scale the last Linear layer (weight and bias, in place) so that max |model(x)| becomes
    ``target`` (None: unchanged), and in any case at most ``cap``; returns the factor applied."""
    last = model[len(model) - 1]
    if not isinstance(last, nn.Linear):
        raise TypeError(f"the last module must be an nn.Linear, got {type(last).__name__}")
    with torch.no_grad():
        m = float(model(x).abs().max()) if x.shape[0] else 0.0
        if not np.isfinite(m) or m == 0.0:
            return 1.0
        want = m if target is None else target
        factor = min(want, cap) / m
        last.weight.mul_(factor)
        if last.bias is not None:
            last.bias.mul_(factor)
    return factor


__all__ += ["STRUCTURES", "saturating_caps", "FuzzModel", "fuzz_family_specs", "saturated_scales",
            "shared_module_mlps", "rescale_outputs"]
