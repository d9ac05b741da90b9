"""The per-layer protocol of the fast exact engine (THEORY §7, §12).

A network h = f_L ∘ … ∘ f_1 (an ``nn.Sequential``; h ∈ ℝ^C per input) is handled one layer
at a time by a :class:`LayerRule`.  For layer l with input x = x_l and output y = x_{l+1}
(a batch of B inputs; "y-shape" means ``y.shape[1:]``) a rule provides:

``forward(module, x) -> (y, cache)``
    y = f_l(x) and whatever the other methods need (the input, σ'(x), pooling indices, …).

``jac_t(module, cache, M) -> (B, K, *x-shape)``
    Row vectors times the Jacobian: out[b, k] = M[b, k] · ∂y_b/∂x_b, for M of shape
    (B, K, *y-shape).  Used for G^l = ∂h/∂x_l = jac_t(G^{l+1}) with K = C (G^L = I_C), and
    for the factor rows F of the second-order pass (K = number of non-linear units above).

``param_u(module, cache, G) -> {local name: Tensor | Factored}``
    u_i = ∂h/∂θ_i = Σ_j G[b, :, j] ∂y_j/∂θ_i for every parameter tensor of the layer, given
    G = ∂h/∂y of shape (B, C, *y-shape).  Values have shape (B, C, *θ.shape) (a
    :class:`Factored` f·a for Linear on (B, n) inputs, THEORY §7: u[b, :, j, k] = G[b, :, j]·x[b, k];
    a dense tensor otherwise).

``param_w(module, cache, F, R) -> {local name: Tensor | Factored}``
    The exact second derivatives w_{a,i} = ∂²h_a/∂θ_i² (THEORY §12)

        w[b, a, i] = Σ_k R[b, a, k] · (F[b, k, ·] · ∂y_b/∂θ_i)²,

    where the K rows F[b, k] = ∂z_k/∂y (shape (B, K, *y-shape)) are the derivatives of the
    non-linear units z_k above the layer with respect to its output, and R (B, C, K) their
    second-order residuals.  This is exact because the layer is linear in its own parameters
    (``linear_in_params``): ∂²y/∂θ_i² = 0, and tied parameters are refused by the runner.
    Factored for Linear: w[b, :, j, k] = (R @ F²)[b, :, j] · x[b, k]²  (= D^l of THEORY §7);
    the default implementation squares the dense per-row gradients (param_u applied to F),
    in chunks of rows.

``param_w_units(module, cache, R) -> {local name: Tensor | Factored} | None``
    The same w when the rows are the identity on the layer's outputs (the non-linear units sit
    directly above, e.g. Conv → Tanh), R of shape (B, C, *y-shape):
    w[b, a, i] = Σ_j R[b, a, j] (∂y_j/∂θ_i)², without forming the identity rows.  Default None:
    the runner then forms the identity rows and calls ``param_w``.

``curvature(module, cache, G) -> (B, C, *x-shape) | None``
    The layer's own second-order residual for units = its inputs, assuming the layer acts
    elementwise: R[b, a, j] = G[b, a, j] · σ''(x_j) with G = ∂h/∂y (THEORY §7's R^m and
    §12's R^m_{a,j}).  ``None`` when the layer is linear or piecewise linear
    (``piecewise_linear``): its contribution to w is then exactly 0 (a.e.).

``second_order_rows(module, cache, G) -> (F, R) | None``
    For a layer that is neither piecewise linear nor elementwise (LayerNorm): its second-order
    contribution as explicit factor rows over its input, F (B, K, *x-shape), and residuals
    R (B, C, K), such that for every direction v of the input

        Σ_j G[b, a, j] · vᵀ ∇²_x y_j(x_b) v  =  Σ_k R[b, a, k] · (F[b, k] · v)²,

    i.e. the layer's full Hessian quadratic form written as a sum of squares of fixed rows
    (THEORY §12: "a non-elementwise operation adds its full Hessian").  The runner treats the
    block exactly like the identity block of an elementwise layer, so w stays exact.  Used only
    when ``curvature`` returns None; default None.

``piecewise_linear: bool``
    The layer's map x ↦ y is linear or piecewise linear (its Hessian in x is 0 a.e.);
    a parameter all of whose layers above are piecewise linear has w ≡ 0 (THEORY §12).

``jacobian_constant: bool``
    ∂y/∂x is the same for every input (Linear, convolution, average pooling, BatchNorm in eval,
    reshapes).  Rows shared by all inputs (a batch dimension of stride 0, e.g. the identity rows
    of newly added units) then stay shared: the runner calls ``jac_t`` on ``M[:1]`` and expands.
    Rules may exploit shared rows (``M.stride(0) == 0``) in ``param_w`` (Linear does).

``linear_in_params: bool``
    y is linear (affine) in each of the layer's parameters (true for all rules here;
    the runner refuses a layer with parameters that is not).

The flags default to False (nothing proved, nothing shared): a rule must claim them.

``doc: str``
    One line saying what the rule covers.

``check(module) -> str``
    "" when the rule applies to this instance, else the reason (e.g. BatchNorm in training mode).

Rules register themselves: a subclass that sets ``types`` is instantiated and added to
:data:`RULES` for each type (exact type match; subclasses of torch modules may change
``forward`` and are not matched).  Rules that need one instance per module type (the
elementwise rule) call :func:`register` themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["LayerRule", "RULES", "register", "rule_for", "Factored", "ProvedZero", "Value", "batch_shared", "dense",
           "W_CHUNK"]


@dataclass
class Factored:
    """Per-input values ``f[b, c, j] · a[b, k]^p`` of shape (B, C, n, m) (THEORY §7), never formed
    unless asked: f (B, C, n) holds the per-row factor (the G or R·F² columns of a Linear layer),
    a (B, m) the layer input.  A batch sum over inputs of any per-entry quantity that is
    f-part × a_k^q is one matrix product (as :class:`~fishersym.numeric.parts.Part` does for
    the C-reduced quantities)."""

    f: torch.Tensor
    a: torch.Tensor
    p: int = 1

    @property
    def shape(self) -> tuple[int, ...]:
        """(B, C, n, m), the shape of the dense array."""
        return tuple(self.f.shape) + (self.a.shape[-1],)

    def materialize(self) -> torch.Tensor:
        """The dense array f[b, c, j] · a[b, k]^p of shape (B, C, n, m)."""
        ap = self.a if self.p == 1 else self.a ** self.p
        return self.f.unsqueeze(-1) * ap.reshape((ap.shape[0],) + (1,) * (self.f.dim() - 1) + (ap.shape[1],))


@dataclass(frozen=True)
class ProvedZero:
    """w ≡ 0 for this parameter tensor, proved from the layer types (THEORY §12); nothing stored.

    ``shape`` is (B, C, *θ.shape); ``reason`` names the layers between the parameter and h."""

    shape: tuple[int, ...]
    reason: str
    dtype: torch.dtype = torch.float64
    device: torch.device | str = "cpu"

    def materialize(self) -> torch.Tensor:
        """The dense zeros of shape ``shape``."""
        return torch.zeros(self.shape, dtype=self.dtype, device=self.device)


#: a u or w value of one parameter tensor: dense (B, C, *θ.shape), factored, or a proved zero
Value = torch.Tensor | Factored | ProvedZero


def batch_shared(M: torch.Tensor) -> bool:
    """The rows M (B, K, …) are the same for every input (a stride-0 batch dimension)."""
    return M.shape[0] > 1 and M.stride(0) == 0


def dense(q: Value) -> torch.Tensor:
    """The dense array (B, C, *θ.shape) of a u or w value."""
    return q if isinstance(q, torch.Tensor) else q.materialize()


#: largest number of elements of one temporary (B, rows, *θ.shape) block in the default param_w
W_CHUNK = 1 << 22


class LayerRule:
    """Abstract per-layer rule; see the module docstring for the specification of each method."""

    types: ClassVar[tuple[type[nn.Module], ...]] = ()
    # conservative defaults: a new rule proves nothing and shares nothing until it says so
    piecewise_linear: bool = False
    jacobian_constant: bool = False
    linear_in_params: bool = False
    doc: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("types"):
            register(cls())

    # -- applicability ---------------------------------------------------------------------
    def check(self, module: nn.Module) -> str:
        """"" when the rule applies to this instance of its module types, else the reason."""
        return ""

    # -- first order -----------------------------------------------------------------------
    def forward(self, module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(y, cache): the layer's output y = f_l(x) and what the other methods need."""
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def jac_t(self, module: nn.Module, cache: Any, M: torch.Tensor) -> torch.Tensor:
        """Rows times the Jacobian: out[b, k] = M[b, k] · ∂y_b/∂x_b, of shape ``(B, K, *x-shape)``."""
        raise NotImplementedError(f"{type(self).__name__}.jac_t")

    def param_u(self, module: nn.Module, cache: Any, G: torch.Tensor) -> dict[str, torch.Tensor | Factored]:
        """Parameter-free layers: no parameters, empty dict."""
        return {}

    # -- second order ----------------------------------------------------------------------
    def param_w(self, module: nn.Module, cache: Any, F: torch.Tensor,
                R: torch.Tensor) -> dict[str, torch.Tensor | Factored]:
        """Default: w[b,a,i] = Σ_k R[b,a,k] g[b,k,i]² with g = param_u(F) the dense per-row gradients,
        rows taken in chunks so that one (B, rows, *θ.shape) block stays below ``W_CHUNK`` elements."""
        params = dict(module.named_parameters(recurse=False))
        if not params:
            return {}
        B, K = F.shape[0], F.shape[1]
        C = R.shape[1]
        size = max(p.numel() for p in params.values())
        step = max(1, W_CHUNK // max(1, B * size))
        out: dict[str, torch.Tensor] = {n: F.new_zeros((B, C) + tuple(p.shape)) for n, p in params.items()}
        for s in range(0, K, step):
            sl = slice(s, min(K, s + step))
            rows = self.param_u(module, cache, F[:, sl])
            for n, g in rows.items():
                g = dense(g)
                g2 = (g * g).reshape(B, g.shape[1], -1)
                out[n].view(B, C, -1).add_(torch.bmm(R[:, :, sl], g2))
        return {**out}

    def param_w_units(self, module: nn.Module, cache: Any,
                      R: torch.Tensor) -> dict[str, torch.Tensor | Factored] | None:
        """No shortcut: the runner forms identity rows and calls :meth:`param_w`."""
        return None

    def curvature(self, module: nn.Module, cache: Any, G: torch.Tensor) -> torch.Tensor | None:
        """Linear and piecewise-linear layers: no second-order residual."""
        return None

    def second_order_rows(self, module: nn.Module, cache: Any,
                          G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Elementwise, linear and piecewise-linear layers: no explicit rows (``curvature`` covers them)."""
        return None


#: module type → rule (exact type match)
RULES: dict[type[nn.Module], LayerRule] = {}


def register(rule: LayerRule, types: tuple[type[nn.Module], ...] | None = None) -> LayerRule:
    """Add ``rule`` to :data:`RULES` for ``types`` (default ``rule.types``); a type registered twice
    is an error (two rules for one layer would silently shadow each other)."""
    for t in (rule.types if types is None else types):
        if t in RULES and RULES[t] is not rule:
            raise ValueError(f"{t.__name__} already has the rule {type(RULES[t]).__name__}; "
                             f"refusing to register {type(rule).__name__} for it too")
        RULES[t] = rule
    return rule


def rule_for(module: nn.Module) -> tuple[LayerRule | None, str]:
    """(rule, "") for a supported module instance, else (None, reason)."""
    rule = RULES.get(type(module))
    if rule is None:
        return None, (f"{type(module).__name__} has no per-layer rule (supported: "
                      f"{', '.join(sorted(t.__name__ for t in RULES))})")
    reason = rule.check(module)
    return (None, reason) if reason else (rule, "")
