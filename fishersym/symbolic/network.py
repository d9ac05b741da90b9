"""Symbolic multilayer perceptrons (THEORY §1, §7).

``mlp(widths, activation)`` builds the network

    z^{(l)} = W^{(l)} a^{(l-1)} + b^{(l)},   a^{(l)} = φ_l(z^{(l)}),   a^{(0)} = x,
    o = z^{(L)},   h = link(o)

with SymPy symbols for the inputs x_k, the parameters W^{(l)}_{jk}, b^{(l)}_j
and, for readability, the intermediate pre-activations z^{(l)}_j and
activations a^{(l)}_j.  Each parameter symbol maps to an entry of the
equivalent ``torch.nn.Sequential(Linear, act, Linear, act, …, Linear)``:
W^{(l)}_{jk} ↔ ``f"{2(l-1)}.weight"[j-1, k-1]``, b^{(l)}_j ↔
``f"{2(l-1)}.bias"[j-1]`` (indices are 1-based in the symbols, 0-based in
torch).  Identity activations are kept as ``nn.Identity`` so the indices
never shift.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp
import torch
import torch.nn as nn

from .activations import Activation, get_activation

__all__ = ["Network", "ParamEntry", "mlp", "check_widths"]


@dataclass(frozen=True)
class ParamEntry:
    """Where a parameter symbol lives: layer l (1-based), kind 'weight'/'bias', torch name and index."""

    symbol: sp.Symbol
    layer: int
    kind: str
    row: int          # j (0-based)
    col: int | None   # k (0-based) for weights
    torch_name: str
    index: tuple[int, ...]

    @property
    def label(self) -> str:
        """``"0.weight[1, 0]"`` style label."""
        return f"{self.torch_name}[{', '.join(map(str, self.index))}]"


def check_widths(widths) -> tuple[int, ...]:
    """Validate layer widths: a sequence of ≥ 2 positive integers (input, hidden…, output)."""
    try:
        ws = list(widths)
    except TypeError:
        raise ValueError(f"widths must be a sequence of positive integers, got {widths!r}") from None
    if len(ws) < 2:
        raise ValueError(f"widths needs at least an input and an output width, got {ws!r}")
    for w in ws:
        if isinstance(w, bool) or not isinstance(w, (int,)) and not (hasattr(w, "__index__")):
            raise ValueError(f"widths must be positive integers, got {ws!r}")
        if int(w) < 1:
            raise ValueError(f"widths must be positive integers, got {ws!r}")
    return tuple(int(w) for w in ws)


class Network:
    """A symbolic MLP (see module docstring).  Build with :func:`mlp`."""

    def __init__(self, widths: Sequence[int], activations: Sequence[Activation], bias: bool = True,
                 family=None):
        self.widths = check_widths(widths)
        self.L = len(self.widths) - 1
        if len(activations) != self.L - 1:
            raise ValueError(f"{self.L - 1} hidden layer(s) need {self.L - 1} activation(s), got {len(activations)}")
        self.activations = tuple(activations)
        self.bias = bool(bias)
        self.family = family
        self.latex_names: dict[sp.Symbol, str] = {}
        # inputs
        d0 = self.widths[0]
        self.x = tuple(self._sym(f"x_{k + 1}", f"x_{{{k + 1}}}", real=True) for k in range(d0))
        self.W: list[sp.Matrix] = []
        self.b: list[tuple[sp.Symbol, ...]] = []
        self.z: list[tuple[sp.Symbol, ...]] = []
        self.a: list[tuple[sp.Symbol, ...]] = [self.x]
        self.params: list[ParamEntry] = []
        for l in range(1, self.L + 1):
            n_in, n_out = self.widths[l - 1], self.widths[l]
            tname = f"{2 * (l - 1)}"
            Wl = sp.Matrix(n_out, n_in, lambda j, k, l=l: self._sym(
                f"W{l}_{j + 1}_{k + 1}", f"W^{{({l})}}_{{{j + 1},{k + 1}}}", real=True))
            self.W.append(Wl)
            for j in range(n_out):
                for k in range(n_in):
                    self.params.append(ParamEntry(Wl[j, k], l, "weight", j, k, f"{tname}.weight", (j, k)))
            if self.bias:
                bl = tuple(self._sym(f"b{l}_{j + 1}", f"b^{{({l})}}_{{{j + 1}}}", real=True) for j in range(n_out))
                for j in range(n_out):
                    self.params.append(ParamEntry(bl[j], l, "bias", j, None, f"{tname}.bias", (j,)))
            else:
                bl = tuple(sp.Integer(0) for _ in range(n_out))
            self.b.append(bl)
            self.z.append(tuple(self._sym(f"z{l}_{j + 1}", f"z^{{({l})}}_{{{j + 1}}}", real=True)
                                for j in range(n_out)))
            if l < self.L:
                act = self.activations[l - 1]
                self.a.append(tuple(self._sym(f"a{l}_{j + 1}", f"a^{{({l})}}_{{{j + 1}}}", **act.assumptions)
                                    for j in range(n_out)))
        self.output = self.z[-1]
        self._by_symbol = {p.symbol: p for p in self.params}
        self._by_label = {p.label: p for p in self.params}

    def _sym(self, name: str, tex: str, **assumptions) -> sp.Symbol:
        s = sp.Symbol(name, **assumptions)
        self.latex_names[s] = tex
        return s

    # ------------------------------------------------------------------ structure
    @property
    def n_params(self) -> int:
        """The number P of parameters (weights and biases of every layer)."""
        return len(self.params)

    @property
    def param_symbols(self) -> list[sp.Symbol]:
        """The parameter symbols θ_1..θ_P, layer by layer (each layer's weights row by row, then its biases)."""
        return [p.symbol for p in self.params]

    def param(self, key) -> ParamEntry:
        """Look a parameter up by symbol, symbol name (``"W1_1_2"``) or torch label (``"0.weight[0, 1]"``).

        Raises KeyError listing the available names.
        """
        if isinstance(key, sp.Symbol) and key in self._by_symbol:
            return self._by_symbol[key]
        if isinstance(key, str):
            if key in self._by_label:
                return self._by_label[key]
            for p in self.params:
                if p.symbol.name == key:
                    return p
        raise KeyError(f"no parameter {key!r} in this network; available: "
                       + ", ".join(f"{p.symbol.name} ({p.label})" for p in self.params))

    def pre_activation_defs(self, l: int) -> list[sp.Expr]:
        """z^{(l)} = W^{(l)} a^{(l-1)} + b^{(l)} in intermediate symbols (l 1-based)."""
        Wl, prev, bl = self.W[l - 1], self.a[l - 1], self.b[l - 1]
        return [sp.Add(*[Wl[j, k] * prev[k] for k in range(len(prev))]) + bl[j] for j in range(Wl.rows)]

    def definitions(self) -> list[tuple[sp.Symbol, sp.Expr]]:
        """Intermediate symbols in evaluation order with their defining expressions."""
        out = []
        for l in range(1, self.L + 1):
            out += list(zip(self.z[l - 1], self.pre_activation_defs(l)))
            if l < self.L:
                act = self.activations[l - 1]
                out += [(a, act.fn(z)) for a, z in zip(self.a[l], self.z[l - 1])]
        return out

    def expanded_output(self) -> list[sp.Expr]:
        """o(x; θ) with every intermediate substituted (for independent checks; grows quickly)."""
        vals: dict[sp.Symbol, sp.Expr] = {}
        for s, e in self.definitions():
            vals[s] = e.xreplace(vals)
        return [vals[o] for o in self.output]

    def expression_size(self) -> int:
        """A cheap estimate of the derivation's size: Σ over parameters of the number of
        paths from the parameter's unit to the outputs (each path is one product term of
        u_i, and about one more factor per layer in w_i), times C."""
        total = 0
        for l in range(1, self.L + 1):
            paths = 1
            for m in range(l + 1, self.L + 1):
                paths *= self.widths[m]
            n_l = self.widths[l] * (self.widths[l - 1] + (1 if self.bias else 0))
            depth = self.L - l + 1
            total += n_l * paths * depth * depth
        return total * self.widths[-1]

    # ------------------------------------------------------------------ torch
    def torch_module(self, dtype=torch.float64, seed: int | None = None) -> nn.Sequential:
        """The equivalent ``nn.Sequential(Linear, act, …, Linear)`` (random init, optionally seeded)."""
        if seed is not None:
            g = torch.random.fork_rng()
            with g:
                torch.manual_seed(seed)
                return self.torch_module(dtype)
        mods: list[nn.Module] = []
        for l in range(1, self.L + 1):
            mods.append(nn.Linear(self.widths[l - 1], self.widths[l], bias=self.bias))
            if l < self.L:
                mods.append(self.activations[l - 1].torch_module())
        return nn.Sequential(*mods).to(dtype)

    def parameter_values(self, model: nn.Module) -> dict[sp.Symbol, float]:
        """Numeric values of the parameter symbols from a torch model with matching names/shapes."""
        state = dict(model.named_parameters())
        out = {}
        for p in self.params:
            if p.torch_name not in state:
                raise KeyError(f"the model has no parameter {p.torch_name!r} (needed for {p.symbol.name}); "
                               f"its parameters: {', '.join(state)}")
            t = state[p.torch_name]
            try:
                out[p.symbol] = float(t.detach()[p.index])
            except IndexError:
                raise ValueError(f"parameter {p.torch_name!r} has shape {tuple(t.shape)}, "
                                 f"too small for {p.label}") from None
        return out

    def describe(self) -> str:
        """One line: the widths, the hidden activations and the number of parameters."""
        acts = ", ".join(a.name for a in self.activations) or "none"
        return f"MLP widths {list(self.widths)}, hidden activations [{acts}], {self.n_params} parameters"

    def __repr__(self) -> str:
        return (f"Network(widths={list(self.widths)}, activations={[a.name for a in self.activations]}, "
                f"bias={self.bias})")


def mlp(widths: Sequence[int], activation="tanh", bias: bool = True, family=None) -> Network:
    """A symbolic MLP with ``widths = (d_in, n_1, …, n_{L-1}, d_out)``.

    ``activation``: one spec for every hidden layer or a list with one per
    hidden layer (names: see :func:`fishersym.symbolic.activations.available`).
    ``family`` (optional): the output family whose link sits on top (else the
    family is given to :func:`fishersym.symbolic.derive`).
    """
    ws = check_widths(widths)
    L = len(ws) - 1
    if isinstance(activation, (list,)) or (isinstance(activation, tuple) and activation
                                           and not isinstance(activation[0], str)):
        acts = [get_activation(a) for a in activation]
        if len(acts) != L - 1:
            raise ValueError(f"widths {list(ws)} have {L - 1} hidden layer(s) but {len(acts)} activations were given")
    else:
        acts = [get_activation(activation)] * (L - 1)
    if family is not None:
        from ..families import get as get_family
        family = get_family(family)
    return Network(ws, acts, bias=bias, family=family)
