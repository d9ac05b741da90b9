"""Proofs that V₂ ≡ 0 per parameter tensor, from the aten ops a forward pass executes (issue 9 item 2a).

V₂(θ_i|x) = (1/N) w_iᵀ Σ w_i with w_i = ∂²h/∂θ_i² (THEORY §1, §3).  By THEORY §12,
w_{a,i} = Σ_{m,j} R^m_{a,j} (∂z^m_j/∂θ_i)² sums over the inputs z of operations that are not
linear in their input, so **w ≡ 0 (almost everywhere) when h is a piecewise-affine function of
the parameter tensor θ**: then every entry θ_i enters h piecewise affinely, and ∂²h/∂θ_i² = 0
off the kinks (autograd returns 0 at the kinks too).

How the proof is made
---------------------
One forward pass of ``fn`` (the model followed by the family's link, exactly what the engine
differentiates) runs under a :class:`~torch.utils._python_dispatch.TorchDispatchMode` that sees
every aten op.  Each floating tensor carries a *taint*: for every parameter tensor p it depends
on, a status (``PL``: piecewise affine in p, or ``NONLIN`` with the reason) and the set of ops on
the paths from p to it.  Taints are keyed by storage (all views of a storage share one taint,
merged on every write; in-place ops merge into their destination), which can only over-state a
dependence — never hide one — so the verdict errs on the side of "not proved".  Every tensor seen
is kept alive during the pass, so storages are not reused.  Non-floating outputs (indices, masks,
``argmax``) carry no taint: autograd does not differentiate through them.

Rules for an op, per parameter p, over its tensor arguments:

* ``ZERO`` ops (factories, ``*_like``, ``detach``, ``zero_``): the output does not depend on p.
  In-place variants (``relu_``, ``add_``, ``mul_``, …) follow their functional op; the result is
  merged into the destination's taint.
* ``LINEAR`` ops (jointly affine in all their floating tensor arguments): views and reshapes
  (view, _unsafe_view, reshape, permute, transpose, t, expand, squeeze, unsqueeze, slice, select,
  narrow, diagonal, as_strided, alias, unfold, split, unbind, chunk), copies (clone, contiguous,
  copy_, _to_copy, lift_fresh_copy), add, sub, rsub, neg, cat, stack, sum, mean, cumsum, flip, roll,
  repeat, index.Tensor, index_select, gather, embedding, scatter, index_put, index_add,
  masked_fill, fill (with a tensor value), index_fill, constant/reflection/replication padding,
  avg_pool1d/2d/3d, adaptive_avg_pool, upsample (nearest, linear, bilinear, bicubic, trilinear: linear in
  the input), native_dropout (eval), mul/div by a Python scalar, pow with exponent 1, and
  ``_native_batch_norm_legit_no_training`` / ``native_batch_norm`` (and the cuDNN / MIOpen kernels
  ``cudnn_batch_norm`` / ``miopen_batch_norm``) in eval mode (see below).
* ``PIECEWISE`` (piecewise affine): relu, leaky_relu, hardtanh, clamp, clamp_min, clamp_max,
  threshold, abs, maximum, minimum, max, min, amax, amin, where (the condition is boolean),
  max_pool*_with_indices, max_pool*, adaptive_max_pool*, sort, topk, sign, round, floor, ceil,
  trunc, hardshrink, softshrink, relu6.
* ``MULTILINEAR`` ops are affine in each *factor* argument separately: mul.Tensor, mm, bmm, mv,
  dot, addmm / addmv / baddbmm / addbmm / addr (the added ``self`` is additive), addcmul,
  convolution (input × weight, bias additive; also the cuDNN, MIOpen and oneDNN kernels), batch norm
  in eval (input × weight, bias additive; the running statistics must not depend on p),
  native_layer_norm / native_group_norm (weight a factor; the normalised input is smooth: any
  dependence of the input on p breaks the proof), prelu.  If **two factors both depend on p** the
  product is quadratic in p (tied weights used twice, attention's QKᵀ from one projection, x·W·W)
  and the proof breaks.
* div.Tensor is linear in the numerator only.
* Every other floating op (tanh, sigmoid, exp, log, softmax, gelu, silu, softplus, elu, pow,
  sqrt, rsqrt, erf, norms, fused attention kernels, …) and every op not on these lists breaks the
  proof for every parameter its inputs depend on; the reason names the op.

The verdict covers the inputs traced: data-dependent control flow may run other ops on other
inputs, so the engine traces every input it analyses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["prove_w_zero", "Proof", "trace_taints", "LINEAR_OPS", "PIECEWISE_OPS", "MULTILINEAR_OPS",
           "ZERO_OPS", "SMOOTH_OPS"]

PL, NONLIN = 0, 1

#: ops whose output does not depend on the values of their tensor inputs (or cuts the derivative)
ZERO_OPS = frozenset({
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like",
    "zeros", "ones", "empty", "full", "arange", "scalar_tensor", "eye", "new_zeros", "new_ones", "new_empty",
    "new_full", "new_empty_strided", "empty_strided", "detach", "_local_scalar_dense", "linspace", "logspace",
    "zero_", "randn", "rand", "randint", "bernoulli", "bernoulli_", "sym_size", "sym_numel",
    "sym_stride", "sym_storage_offset", "is_nonzero", "equal", "size", "stride", "_shape_as_tensor",
})

#: ops jointly affine in all their floating tensor arguments
LINEAR_OPS = frozenset({
    "view", "_unsafe_view", "reshape", "permute", "transpose", "transpose_", "t", "t_", "expand", "expand_as",
    "squeeze", "squeeze_", "unsqueeze", "unsqueeze_", "slice", "select", "narrow", "diagonal", "as_strided",
    "alias", "unfold", "split", "split_with_sizes", "unbind", "chunk", "movedim", "flatten", "unflatten",
    "view_as", "clone", "contiguous", "copy", "copy_", "_to_copy", "to", "lift_fresh", "lift_fresh_copy",
    "add", "add_", "sub", "sub_", "rsub", "neg", "neg_", "cat", "stack", "hstack", "vstack", "sum", "mean",
    "cumsum", "flip", "roll", "repeat", "tile", "index", "index_select", "gather", "embedding", "scatter",
    "scatter_add", "index_put", "index_put_", "index_add", "masked_fill", "masked_fill_", "masked_select",
    "constant_pad_nd", "pad", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d", "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
    "native_dropout", "im2col", "col2im", "trace", "tril", "triu", "diag_embed", "diag", "_unsafe_index",
    "slice_scatter", "select_scatter", "diagonal_scatter", "as_strided_scatter", "new_zeros_like",
    "_reshape_alias", "view_copy", "permute_copy", "expand_copy", "unsqueeze_copy", "squeeze_copy",
    "slice_copy", "select_copy", "t_copy", "transpose_copy", "alias_copy", "clone_", "channel_shuffle",
    "pixel_shuffle", "pixel_unshuffle", "upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d",
    "upsample_bicubic2d", "_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
    "repeat_interleave", "positive", "real", "imag", "view_as_real", "view_as_complex", "conj", "resolve_conj",
    "resolve_neg", "fill", "index_fill",
})

#: piecewise-affine ops (w = 0 off the kinks)
PIECEWISE_OPS = frozenset({
    "relu", "relu_", "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "clamp", "clamp_", "clamp_min",
    "clamp_min_", "clamp_max", "clamp_max_", "clip", "threshold", "threshold_", "abs", "abs_", "maximum",
    "minimum", "max", "min", "amax", "amin", "where", "max_pool1d", "max_pool2d", "max_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "sort", "topk", "kthvalue",
    "sign", "round", "floor", "ceil", "trunc", "hardshrink", "softshrink", "relu6", "fmax", "fmin",
    "cummax", "cummin",
})

#: ops affine in each factor argument separately (schema argument names); other tensor args are additive,
#: args listed in the third element are smooth (any dependence on p breaks the proof)
MULTILINEAR_OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mul": (("self", "other"), ()),
    "mul_": (("self", "other"), ()),
    "mm": (("self", "mat2"), ()),
    "bmm": (("self", "mat2"), ()),
    "mv": (("self", "vec"), ()),
    "dot": (("self", "tensor"), ()),
    "vdot": (("self", "other"), ()),
    "outer": (("self", "vec2"), ()),
    "addmm": (("mat1", "mat2"), ()),
    "addmv": (("mat", "vec"), ()),
    "baddbmm": (("batch1", "batch2"), ()),
    "addbmm": (("batch1", "batch2"), ()),
    "addr": (("vec1", "vec2"), ()),
    "addcmul": (("tensor1", "tensor2"), ()),
    "convolution": (("input", "weight"), ()),
    "_convolution": (("input", "weight"), ()),
    "convolution_overrideable": (("input", "weight"), ()),
    "mkldnn_convolution": (("self", "weight"), ()),
    "cudnn_convolution": (("self", "weight"), ()),
    "cudnn_convolution_transpose": (("self", "weight"), ()),
    "miopen_convolution": (("self", "weight"), ()),
    "miopen_convolution_transpose": (("self", "weight"), ()),
    "miopen_depthwise_convolution": (("self", "weight"), ()),
    "_native_batch_norm_legit_no_training": (("input", "weight"), ("running_mean", "running_var")),
    "native_layer_norm": (("input", "weight"), ("input",)),
    "native_group_norm": (("input", "weight"), ("input",)),
    "_prelu_kernel": (("self", "weight"), ()),
    "prelu": (("self", "weight"), ()),
    "div": ((), ("other",)),
    "div_": ((), ("other",)),
}

#: batch-norm kernels with a ``training`` flag (CPU, cuDNN, MIOpen): multilinear in (input, weight) when
#: training is False, with the running statistics smooth arguments (THEORY §12); smooth when training
BATCH_NORM_OPS = frozenset({"native_batch_norm", "cudnn_batch_norm", "miopen_batch_norm"})

#: smooth non-linear ops named as such in the reasons (every op not on an allowlist breaks the proof too)
SMOOTH_OPS = frozenset({
    "tanh", "sigmoid", "exp", "exp2", "expm1", "log", "log1p", "log2", "log10", "pow", "sqrt", "rsqrt",
    "reciprocal", "sin", "cos", "tan", "erf", "erfc", "gelu", "silu", "mish", "elu", "selu", "celu",
    "softplus", "_softmax", "softmax", "_log_softmax", "log_softmax", "logsumexp", "logsigmoid",
    "log_sigmoid_forward", "hardsigmoid", "hardswish", "norm", "linalg_vector_norm", "var", "std", "var_mean",
    "std_mean", "square", "atan", "asin", "acos", "sinh", "cosh", "asinh", "atanh", "acosh", "lerp",
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_native_multi_head_attention",
    "_transformer_encoder_layer_fwd", "_native_batch_norm_legit", *BATCH_NORM_OPS,
})


@dataclass
class _Dep:
    status: int
    ops: frozenset
    reason: str | None = None

    def merge(self, other: _Dep) -> _Dep:
        if other is self:
            return self
        status = max(self.status, other.status)
        reason = self.reason if self.reason is not None else other.reason
        return _Dep(status, self.ops | other.ops, reason)


Taint = dict  # parameter name -> _Dep


def _merge(a: Taint | None, b: Taint | None) -> Taint:
    if not a:
        return dict(b or {})
    if not b:
        return dict(a)
    out = dict(a)
    for k, d in b.items():
        out[k] = out[k].merge(d) if k in out else d
    return out


def _is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


@dataclass
class Proof:
    """Verdict for one parameter tensor: ``proved`` (w ≡ 0 a.e.) and the human-readable reason."""

    proved: bool
    reason: str
    ops: tuple[str, ...] = field(default_factory=tuple)


class _Tracer(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # the tracer never runs under torch.compile; without this, torch wraps __torch_dispatch__ in
        # torch._dynamo.disable, whose first use imports torch._dynamo (about 8 s on a 2-core CPU)
        return False

    def __init__(self, params: dict[str, torch.Tensor]):
        super().__init__()
        self.taint: dict = {}
        self.keep: list[torch.Tensor] = []
        self.act_bytes = 0
        for name, p in params.items():
            key = self.key(p)
            self.keep.append(p)
            self.taint[key] = _merge(self.taint.get(key), {name: _Dep(PL, frozenset())})

    @staticmethod
    def key(t: torch.Tensor):
        if t.numel() == 0:
            return ("id", id(t))
        try:
            return ("ptr", t.untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse): by identity
            return ("id", id(t))

    def get(self, t) -> Taint | None:
        if not isinstance(t, torch.Tensor) or not _is_float(t):
            return None
        return self.taint.get(self.key(t))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        op = schema.name.split("::")[-1]
        # an in-place variant (trailing "_") computes the same function as its functional op
        base = op[:-1] if op.endswith("_") and op[:-1] not in ("", "_") else op
        named: dict[str, object] = {}
        for i, a in enumerate(schema.arguments):
            if i < len(args):
                named[a.name] = args[i]
            elif a.name in kwargs:
                named[a.name] = kwargs[a.name]
        arg_taints: list[tuple[str, Taint]] = []
        for name, val in named.items():
            for t in tree_flatten(val)[0]:
                tt = self.get(t)
                if tt:
                    arg_taints.append((name, tt))
        new: Taint = {}
        label = f"aten.{op}"
        if arg_taints and op not in ZERO_OPS and base not in ZERO_OPS:
            if op in LINEAR_OPS or op in PIECEWISE_OPS or base in LINEAR_OPS or base in PIECEWISE_OPS:
                for _, tt in arg_taints:
                    new = _merge(new, tt)
                if op == "native_dropout" and len(args) > 2 and args[2]:
                    new = _breaks(new, f"{label} in training mode (random) lies between the parameter and h")
            elif base in MULTILINEAR_OPS or (op in BATCH_NORM_OPS and not named.get("training", True)):
                factors, smooth = MULTILINEAR_OPS.get(base, (("input", "weight"), ("running_mean", "running_var")))
                new = self._multilinear(label, arg_taints, factors, smooth)
            elif base == "pow" and isinstance(named.get("exponent"), (int, float)) and named["exponent"] in (0, 1):
                if named["exponent"] == 1:
                    for _, tt in arg_taints:
                        new = _merge(new, tt)
            else:
                kind = "smooth" if base in SMOOTH_OPS else "not on the list of ops that preserve w = 0"
                for _, tt in arg_taints:
                    new = _merge(new, tt)
                new = _breaks(new, f"{label} ({kind}) lies between the parameter and h")
            new = {k: _Dep(d.status, d.ops | {label}, d.reason) for k, d in new.items()}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.keep.append(t)
                if _is_float(t):
                    self.act_bytes += t.numel() * t.element_size()
                    if new:
                        key = self.key(t)
                        self.taint[key] = _merge(self.taint.get(key), new)
        # in-place / out= ops write into their mutable arguments
        if new:
            for i, a in enumerate(schema.arguments):
                if a.alias_info is not None and a.alias_info.is_write:
                    val = args[i] if i < len(args) else kwargs.get(a.name)
                    for t in tree_flatten(val)[0]:
                        if isinstance(t, torch.Tensor) and _is_float(t):
                            key = self.key(t)
                            self.taint[key] = _merge(self.taint.get(key), new)
        return out

    @staticmethod
    def _multilinear(label, arg_taints, factors, smooth) -> Taint:
        new: Taint = {}
        count: dict[str, int] = {}
        for name, tt in arg_taints:
            new = _merge(new, tt)
            if name in factors:
                for k in tt:
                    count[k] = count.get(k, 0) + 1
        for name, tt in arg_taints:
            if name in smooth:
                for k in tt:
                    new[k] = new[k].merge(_Dep(NONLIN, frozenset(),
                                               f"{label} is smooth (non-linear) in its argument {name!r}, which "
                                               "depends on the parameter"))
        for k, c in count.items():
            if c >= 2:
                new[k] = new[k].merge(_Dep(NONLIN, frozenset(),
                                           f"{label} multiplies two tensors that both depend on the parameter "
                                           "(quadratic in it: tied weights, or a product such as QKᵀ)"))
        return new


def _breaks(t: Taint, reason: str) -> Taint:
    return {k: d.merge(_Dep(NONLIN, frozenset(), reason)) for k, d in t.items()}


def trace_taints(fn: Callable[[], torch.Tensor], params: dict[str, torch.Tensor]) -> tuple[Taint, int]:
    """Run ``fn()`` once under the taint tracer; return the taint of its output and the bytes of all
    floating op outputs (an estimate of the activation memory of the pass)."""
    tracer = _Tracer(params)
    with torch.no_grad(), tracer:
        out = fn()
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the traced function must return a tensor, got {type(out).__name__}")
    return dict(tracer.get(out) or {}), tracer.act_bytes


def prove_w_zero(fn: Callable[[], torch.Tensor], params: dict[str, torch.Tensor]) -> dict[str, Proof]:
    """For each parameter tensor, whether w_i = ∂²h/∂θ_i² ≡ 0 (a.e.) for all its entries i, where
    h = ``fn()`` is computed from the tensors ``params`` (module docstring; THEORY §12).

    ``params`` must be the very tensors (or views of the very storages) ``fn`` reads; the verdict
    holds for the inputs ``fn`` evaluates.  Returns {name: Proof(proved, reason, ops)}.
    """
    taint, _ = trace_taints(fn, params)
    return _verdicts(taint, params)


def _verdicts(taint: Taint, params) -> dict[str, Proof]:
    out: dict[str, Proof] = {}
    for name in params:
        d = taint.get(name)
        if d is None:
            out[name] = Proof(True, "h does not depend on the parameter (no op connects it to h): u = w = 0")
        elif d.status == PL:
            ops = tuple(sorted(d.ops))
            out[name] = Proof(True, f"only {', '.join(ops) if ops else 'no op'} between the parameter and h "
                                    "(each linear or piecewise linear in it)", ops)
        else:
            out[name] = Proof(False, d.reason or "a non-linear op lies between the parameter and h",
                              tuple(sorted(d.ops)))
    return out


def merge_proofs(a: dict[str, Proof], b: dict[str, Proof]) -> dict[str, Proof]:
    """Verdicts over two sets of inputs: proved only if proved on both (the first failure's reason)."""
    out = {}
    for k in a:
        pa, pb = a[k], b[k]
        if not pa.proved:
            out[k] = pa
        elif not pb.proved:
            out[k] = pb
        elif pa.ops == pb.ops:
            out[k] = pa
        else:
            ops = tuple(sorted(set(pa.ops) | set(pb.ops)))
            out[k] = Proof(True, f"only {', '.join(ops)} between the parameter and h (each linear or "
                                 "piecewise linear in it)", ops)
    return out
