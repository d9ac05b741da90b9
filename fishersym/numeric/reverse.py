"""Reverse-mode exact path: u for every parameter from C backward passes per input (issue 9 items 1, 2a).

For one input x and h = link(model(x)) ∈ ℝ^C (THEORY §1; the family's link is part of the
differentiated function), the C rows of the Jacobian ∂h/∂θ give u_i = ∂h/∂θ_i for *all* entries
i at once: one vector-Jacobian product per output c with the cotangent e_c, batched by
``torch.func.vmap`` over the C cotangents and over a chunk of inputs (per-sample Jacobians,
``vmap(jacrev)``).  The cost is O(C) backward passes per input, independent of P.  I, V₁ and the
norms ‖u‖² then follow from :func:`.core.base_quantities` (THEORY §2–§3):

    I(θ_i|x) = u_iᵀΣu_i,   N·V₁ = M(u_i,u_i,u_i,u_i),   N·V₂ = w_iᵀΣw_i.

w_i = ∂²h/∂θ_i² (needed only for V₂, THEORY §3) is handled per parameter tensor by ``w_mode``:

* ``"prove"``: :mod:`.proofs` traces the forward at the aten level and proves w ≡ 0 (a.e.) when
  every op between the tensor and h is linear or piecewise linear in it (THEORY §12); the reason
  is recorded in ``info["var2_zero_reason"][name]`` and V₂ = ‖w‖² = 0 exactly.  A tensor that is
  not proved raises a ValueError naming the op and the options.
* ``"exact"``: proved tensors as above; the others get w exactly for every entry.  Default
  ``w_method="forward"``: nested forward mode along e_i, w_i = d²/dε² h(θ + εe_i)|₀, verified
  entry by entry against reverse-over-reverse (:func:`.generic.directions`), about three forward
  passes per entry and input.  ``w_method="forward-over-reverse"``: w_i = [d/dε ∂h/∂θ(θ + εe_i)]_i,
  a jvp of the per-sample Jacobian along e_i (about C backward passes per entry; measured 17×
  slower than "forward" on a LeNet-5 with C = 10, kept as an independent route).
* ``"sample"``: as "exact" but only on ``w_sample`` random entries per tensor not proved (a
  private generator; never the global RNG).  The w-dependent values are exact at those entries
  and NaN elsewhere; ``info["w_sample"]`` gives, per input, the mean and sum of N·V₂ and ‖w‖² over
  the tensor's entries estimated from the simple random sample, with the standard error
  √((1 − n/P)·s²/n) (finite-population correction).

Memory (per parameter group g, input chunk b, output chunk c_o, ``itemsize`` s bytes):

    peak ≈ b · [ C · s · (j · P_g + 3 · P_t)  +  (1 + c_o) · A ]   (+ for exact w: b · k · (4A + 2P_t·s))

where P_g is the number of entries of the parameter tensors differentiated together (their
Jacobian; j = 1, or 2 when the outputs are chunked), P_t the largest of those tensors (the
quadratic forms of :func:`.core.base_quantities` run one tensor at a time, with temporaries of
about 3·C·P_t·s), A the bytes of one input's forward activations (measured by the proof trace),
and k the entries per chunk of exact w.
Parameter tensors are grouped (each group costs its own C backward passes) and b, c_o and k
chosen so that the peak stays under ``max_bytes`` (default 1 GiB; the input chunk aims at
256 MiB, as larger chunks measured no faster on CPU).  The outputs themselves
(B × P values per base quantity) are not counted.  If one input with one parameter tensor and
one output at a time does not fit, the engine refuses with the estimate and the options.

Parameters are passed to :func:`torch.func.functional_call` as detached tensors (tied weights
stay tied: ``tie_weights=True``); the user's module and parameters are never modified.
Attention runs through the math SDPA kernel with the MHA fast path off (:mod:`.attention`).
"""
from __future__ import annotations

import sys

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from ..families.base import ExponentialFamily
from .attention import math_attention
from .checks import check_batch_independent
from .guard import MemoryBudgetError
from .generic import directions
from .core import BASE_KEYS, EngineOutput, base_quantities, base_quantities_chunked, prob_negative
from .parts import Part
from .proofs import _verdicts, merge_proofs, trace_taints
from .safe_ad import composite_norms, preserved_attributes

__all__ = ["reverse_engine", "per_sample_jacobians", "W_MODES", "W_METHODS", "DEFAULT_MAX_BYTES", "estimate_bytes"]

W_MODES = ("prove", "exact", "sample", "skip")
W_METHODS = ("forward", "forward-over-reverse")
DEFAULT_MAX_BYTES = 1 << 30
#: working set aimed at when choosing the input chunk automatically (larger chunks were not faster on CPU)
_TARGET_BYTES = 256 << 20
#: temporaries of the quadratic forms (base_quantities), in units of C·P_t·s of the tensor processed
#: (measured: peak 2.0–2.8 × C·P·s for the categorical, gaussian and poisson families)
_TMP_FACTOR = 3


def _tqdm(iterable, progress: bool | None, **kw):
    """tqdm over ``iterable`` on stderr; ``progress`` None: only when stderr is a terminal."""
    if progress is False:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable
    return tqdm(iterable, file=sys.stderr, leave=False, disable=None if progress is None else False, **kw)


def _bar(progress: bool | None, total: int, desc: str):
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False)


def estimate_bytes(C: int, group_numel: int, act_bytes: int, itemsize: int, chunk_inputs: int = 1,
                   out_chunk: int | None = None, largest: int | None = None) -> int:
    """Peak-memory estimate of one chunk (module docstring): b·[C·s·(j·P_g + 3·P_t) + (1 + c_o)·A],
    j = 1, or 2 when the outputs are chunked (the chunks are concatenated); P_t = ``largest``, the
    largest tensor of the group (default P_g)."""
    oc = C if out_chunk is None else out_chunk
    j = 1 if oc >= C else 2
    pt = group_numel if largest is None else largest
    return chunk_inputs * (C * itemsize * (j * group_numel + _TMP_FACTOR * pt) + (1 + oc) * act_bytes)


class _Fn:
    """h = link(model(x)) as a function of some parameter tensors, the rest held fixed (detached)."""

    def __init__(self, model: nn.Module, family: ExponentialFamily):
        self.model = model
        self.family = family
        self.fixed = {k: v.detach() for k, v in model.named_parameters()}
        self.fixed.update({k: v.detach() for k, v in model.named_buffers()})

    def batch(self, values: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return self.family.link(functional_call(self.model, {**self.fixed, **values}, (x,),
                                                tie_weights=True, strict=False))

    def one(self, values: dict[str, torch.Tensor], x1: torch.Tensor) -> torch.Tensor:
        return self.batch(values, x1.unsqueeze(0))[0]


def _jacobians(fn: _Fn, values: dict[str, torch.Tensor], xc: torch.Tensor, out_chunk: int,
               route: list | None = None) -> dict[str, torch.Tensor]:
    """Per-input Jacobians {name: (b, C, *shape)} by vmap over inputs of jacrev (vmap over cotangents);
    where vmap fails (an op without a batching rule, data-dependent control flow) one forward and C
    ``torch.autograd.grad`` calls per input (same values, slower).  ``route`` collects which was used."""
    try:
        jac = jacrev(fn.one, argnums=0, chunk_size=out_chunk)
        out = vmap(jac, in_dims=(None, 0))(values, xc)
        if route is not None:
            route.append("vmap(jacrev)")
        return out
    except (RuntimeError, NotImplementedError) as err:  # plain autograd below
        first = err
    try:
        out = _jacobians_loop(fn, values, xc)
    except Exception as err:  # re-raised with the op names
        from .generic import _suspect_ops
        ops = _suspect_ops(fn.model, xc[:1])
        raise RuntimeError(
            f"fishersym reverse path: torch cannot differentiate this model by reverse mode "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); with torch.func it "
            f"failed too ({type(first).__name__}: {str(first).splitlines()[0] if str(first) else ''}). Ops of "
            f"the forward with hand-written derivative rules: {', '.join(ops) if ops else '(none found)'}. "
            "Replace the op by a differentiable equivalent (e.g. a composite of elementary ops) or report it "
            "to PyTorch.") from err
    if route is not None:
        route.append(f"autograd loop (vmap failed: {type(first).__name__}: "
                     f"{str(first).splitlines()[0] if str(first) else ''})")
    return out


def _jacobians_loop(fn: _Fn, values: dict[str, torch.Tensor], xc: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same Jacobians by one forward and C ``torch.autograd.grad`` calls per input."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in values}
    for b in range(xc.shape[0]):
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in values.items()}
        with torch.enable_grad():
            hb = fn.one(leaves, xc[b])
            C = hb.shape[0]
            rows: dict[str, list[torch.Tensor]] = {k: [] for k in values}
            for c in range(C):
                gs = torch.autograd.grad(hb[c], list(leaves.values()), retain_graph=c < C - 1, allow_unused=True)
                for (k, v), g in zip(leaves.items(), gs):
                    rows[k].append(torch.zeros_like(v) if g is None else g)
        for k in values:
            out[k].append(torch.stack(rows[k]))
    return {k: torch.stack(v) for k, v in out.items()}


def per_sample_jacobians(model: nn.Module, x: torch.Tensor, family: ExponentialFamily,
                         names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """u for every entry: {name: (B, C, *param.shape)}, u[b, c] = ∂h_c(x_b)/∂θ with h = link(model(x))
    (THEORY §1), by the engine's route (vmap over inputs of jacrev, math attention).  Materialises
    B·C·P values: meant for small models and tests; :func:`reverse_engine` never holds them all."""
    fn = _Fn(model, family)
    names = list(dict(model.named_parameters())) if names is None else list(names)
    with preserved_attributes(model), math_attention():
        probe = fn.batch({}, x[:1])
        return _jacobians(fn, {k: fn.fixed[k] for k in names}, x, int(probe.shape[-1]))


def _w_exact(fn: _Fn, values: dict[str, torch.Tensor], name: str, xc: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """w for the flat entries ``idx`` of ``name`` (b, C, k) by forward-over-reverse:
    w_{c,i} = [d/dε ∂h_c/∂θ(θ + εe_i)]_i, vmapped over the entries and the inputs."""
    p0 = values[name]
    P = p0.numel()

    def jac_t(t, x1):
        return jacrev(lambda tt: fn.one({**values, name: tt}, x1))(t).reshape(-1, P)   # (C, P)

    def one_entry(i, x1):
        e = torch.zeros(P, dtype=p0.dtype, device=p0.device).index_fill(0, i.reshape(1), 1.0).reshape(p0.shape)
        _, tan = jvp(lambda t: jac_t(t, x1), (p0,), (e,))                             # (C, P)
        return tan.index_select(1, i.reshape(1))[:, 0]                                # (C,)

    per_input = vmap(one_entry, in_dims=(0, None))                                   # (k, C)
    W = vmap(per_input, in_dims=(None, 0))(idx, xc)                                  # (b, k, C)
    return W.transpose(1, 2)


def _groups(sizes: dict[str, int], limit: int) -> list[list[str]]:
    """Consecutive parameter tensors packed into groups of at most ``limit`` entries (a larger
    tensor forms a group of its own)."""
    groups: list[list[str]] = []
    cur: list[str] = []
    tot = 0
    for k, n in sizes.items():
        if cur and tot + n > limit:
            groups.append(cur)
            cur, tot = [], 0
        cur.append(k)
        tot += n
    if cur:
        groups.append(cur)
    return groups


def _check_sample(w_sample, w_mode):
    if w_mode != "sample":
        if w_sample is not None:
            raise ValueError(f"w_sample= is used only with w_mode='sample' (got w_mode={w_mode!r})")
        return None
    if w_sample is None:
        raise ValueError("w_mode='sample' needs w_sample=: the number of entries per parameter tensor (int >= 2) "
                         "or a fraction in (0, 1]")
    if isinstance(w_sample, bool) or not isinstance(w_sample, (int, float)):
        raise TypeError(f"w_sample must be an int (entries per tensor) or a float fraction, got {w_sample!r}")
    if isinstance(w_sample, int) and w_sample < 2:
        raise ValueError(f"w_sample={w_sample}: at least 2 entries per tensor are needed for a standard error")
    if isinstance(w_sample, float) and not 0.0 < w_sample <= 1.0:
        raise ValueError(f"w_sample={w_sample}: a fraction must lie in (0, 1]")
    return w_sample


def _sample_index(n_entries: int, w_sample, generator: torch.Generator) -> torch.Tensor:
    """A simple random sample (without replacement, sorted) of :func:`.cost.sample_size` flat indices."""
    from .cost import sample_size   # cost imports this module's callers; the rule lives there
    n = sample_size(n_entries, w_sample)
    return torch.randperm(n_entries, generator=generator)[:n].sort().values


def _sample_estimate(vals: torch.Tensor, population: int) -> dict[str, torch.Tensor]:
    """Mean over a tensor's entries from a simple random sample without replacement (per input):
    mean = v̄, stderr = √((1 − n/N) s²/n) (finite-population correction); sum = N·mean."""
    n = vals.shape[1]
    mean = vals.mean(1)
    var = vals.var(1, unbiased=True) if n > 1 else torch.zeros_like(mean)
    se = torch.sqrt((1.0 - n / population) * var / n)
    return {"mean": mean, "stderr": se, "sum": population * mean, "sum_stderr": population * se}


def reverse_engine(model: nn.Module, x: torch.Tensor, family: ExponentialFamily, params: dict[str, torch.Tensor], *,
                   grams: bool = False, pneg_samples: int | None = None, chunk_inputs: int | None = None,
                   w_mode: str = "prove", max_bytes: int | None = None, progress: bool | None = None,
                   w_method: str = "forward", w_sample: int | float | None = None,
                   generator: torch.Generator | None = None, base_keys=None) -> EngineOutput:
    """Exact per-input base quantities for every entry of ``params`` by reverse mode (module docstring).

    ``w_mode``: "prove" (V₂ ≡ 0 proved per tensor, else a ValueError), "exact" (w computed for the
    tensors not proved), "skip" (u only: the w keys are absent; used by the float64 precision
    measurement, which compares V₁) or "sample" (w exact on ``w_sample`` random entries per tensor not proved,
    drawn with ``generator``, default a private generator seeded 0; the global RNG is not used).
    ``base_keys`` (a subset of :data:`.core.BASE_KEYS`, default all) restricts the per-entry work
    to those base quantities (``fisher`` always).  For a tensor with w ≡ 0 proved, the w keys are
    one zero broadcast over (B, *shape) (stride 0: no memory).
    ``w_method`` for the exact entries: "forward" (nested forward mode along e_i, ~3 forward passes
    per entry, verified against reverse-over-reverse: :func:`.generic.directions`) or
    "forward-over-reverse" (jvp of the per-sample Jacobian along e_i; ~C backward passes per entry).

    Returns an :class:`EngineOutput` with ``path="reverse"`` and the layout of the generic path:
    ``parts[name][key] = Part(dense (B, *param.shape))`` for every key of :func:`.core.base_quantities`.
    With w_mode="sample", the w-dependent keys (nv2, w2, w2s and ``pneg``) of a sampled tensor are
    exact at the sampled entries and NaN elsewhere (never an unmarked estimate).
    ``info``: ``"var2_zero_reason"`` {name: reason} for the tensors proved to have w ≡ 0,
    ``"proofs"`` {name: (proved, reason)}, ``"w_exact"`` (names whose w was computed for every
    entry), ``"w_sample"`` {name: {"index": flat indices of the exact entries, "population": P,
    "estimates": {key: {"mean", "stderr", "sum", "sum_stderr"} each (B,)}}} (the mean over the
    tensor's entries per input, from the sample, with its standard error), ``"jacobian_route"``
    ("vmap(jacrev)" or the autograd loop with the reason vmap failed), ``"chunk_inputs"``,
    ``"out_chunk"``, ``"groups"``, ``"memory_estimate_bytes"``.
    """
    if w_mode not in W_MODES:
        raise ValueError(f"w_mode must be one of {W_MODES}, got {w_mode!r}")
    if w_method not in W_METHODS:
        raise ValueError(f"w_method must be one of {W_METHODS}, got {w_method!r}")
    w_sample = _check_sample(w_sample, w_mode)
    if w_mode == "sample" and grams:
        raise ValueError("grams=True needs w for every entry (the WW Gram sums over all entries); "
                         "use w_mode='exact' or 'prove' with grams")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if max_bytes is None:
        max_bytes = DEFAULT_MAX_BYTES
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive int (bytes), got {max_bytes!r}")
    if chunk_inputs is not None and (isinstance(chunk_inputs, bool) or not isinstance(chunk_inputs, int)
                                     or chunk_inputs < 1):
        raise ValueError(f"chunk_inputs must be a positive int or None, got {chunk_inputs!r}")
    with preserved_attributes(model), math_attention():
        return _reverse(model, x, family, params, grams, pneg_samples, chunk_inputs, w_mode, max_bytes, progress,
                        w_method, w_sample, generator, base_keys)


def _reverse(model, x, family, params, grams, pneg_samples, chunk_inputs, w_mode, max_bytes, progress,
             w_method, w_sample, generator, base_keys) -> EngineOutput:
    named = dict(model.named_parameters())
    for k in params:
        if k not in named:
            raise KeyError(f"{k!r} is not a parameter of the model")
    with torch.no_grad():
        out = model(x)
    h = family.natural(out)
    check_batch_independent(model, x, out)
    B, C = h.shape
    fn = _Fn(model, family)
    values = {k: fn.fixed[k] for k in params}
    itemsize = h.element_size()

    # proofs (and the activation size A of one input) from traced forwards over every input
    taint, act_total = trace_taints(lambda: fn.batch(values, x[:1]), values)
    proofs = _verdicts(taint, values)
    act = max(act_total, 1)
    sizes = {k: v.numel() for k, v in values.items()}

    # memory plan (module docstring)
    pmax = max(sizes.values())
    out_chunk = C
    while out_chunk > 1 and estimate_bytes(C, pmax, act, itemsize, 1, out_chunk) > max_bytes:
        out_chunk = (out_chunk + 1) // 2
    if estimate_bytes(C, pmax, act, itemsize, 1, out_chunk) > max_bytes:
        big = max(sizes, key=lambda k: sizes[k])
        need = estimate_bytes(C, sizes[big], act, itemsize, 1, 1)
        raise MemoryBudgetError(
            f"the reverse-mode path needs about {need / 2**20:.1f} MiB for one input (parameter {big!r} with "
            f"{sizes[big]} entries × C={C} outputs × {itemsize} bytes for its Jacobian and the quadratic forms, "
            f"plus {act / 2**20:.1f} MiB of activations per backward pass), more than max_bytes={max_bytes} "
            f"({max_bytes / 2**20:.1f} MiB). Options: raise max_bytes=, compute in float32 (model.float(), "
            "x.float()), run on a GPU with more memory, or analyse fewer parameters (requires_grad_(False) on "
            "the others).")
    j = 1 if out_chunk >= C else 2
    room = max_bytes - (1 + out_chunk) * act - _TMP_FACTOR * C * itemsize * pmax
    limit = max(pmax, room // (j * C * itemsize))
    groups = _groups(sizes, limit)
    per_input = max(estimate_bytes(C, sum(sizes[k] for k in g), act, itemsize, 1, out_chunk,
                                   max(sizes[k] for k in g)) for g in groups)
    b = chunk_inputs or max(1, min(B, min(max_bytes, _TARGET_BYTES) // per_input))
    chunks = [(s, min(B, s + b)) for s in range(0, B, b)]
    for s, e in chunks:
        if not (s == 0 and e == 1):
            def batch_se(s: int = s, e: int = e) -> torch.Tensor:
                return fn.batch(values, x[s:e])
            t2, _ = trace_taints(batch_se, values)
            proofs = merge_proofs(proofs, _verdicts(t2, values))

    todo_w = [k for k, p in proofs.items() if not p.proved] if w_mode != "skip" else []
    if todo_w and w_mode == "prove":
        lines = "; ".join(f"{k}: {proofs[k].reason}" for k in todo_w)
        raise ValueError(
            f"w_mode='prove': V₂ ≡ 0 could not be proved for {len(todo_w)} parameter tensor(s) ({lines}). "
            "Use w_mode='exact' (exact w, about three forward passes per entry), w_mode='sample' with "
            "w_sample= (exact w on a random sample of entries, means with a standard error) or the generic path "
            "(path='generic').")
    sample_idx: dict[str, torch.Tensor] = {}
    if w_mode == "sample":
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        for k in todo_w:
            sample_idx[k] = _sample_index(sizes[k], w_sample, gen).to(values[k].device)

    parts_acc: dict[str, dict[str, torch.Tensor]] = {}
    pneg_acc: dict[str, torch.Tensor] | None = {} if pneg_samples else None
    gram_out: dict[str, dict[str, torch.Tensor]] | None = {} if grams else None
    if gram_out is not None:
        for k in params:
            gram_out[k] = {"JJ": h.new_zeros(B, C, C), "UU": h.new_zeros(B, C * C, C * C), "WW": h.new_zeros(B, C, C)}
    w_keys = ("nv2", "w2", "w2s")
    wanted = list(BASE_KEYS if base_keys is None else base_keys)
    bad = set(wanted) - set(BASE_KEYS)
    if bad:
        raise ValueError(f"base_keys: unknown keys {sorted(bad)}; choose from {BASE_KEYS}")
    if "fisher" not in wanted:
        wanted.insert(0, "fisher")
    if w_mode == "skip":     # u only: the w keys are not computed at all
        wanted = [q for q in wanted if q not in w_keys]
    routes: list[str] = []
    samples: dict[str, dict[str, list[torch.Tensor]]] = {k: {} for k in sample_idx}

    bar = _bar(progress, len(chunks) * len(params), f"fishersym reverse ({B} inputs in chunks of {b}, "
                                                         f"{len(params)} parameter tensors)")
    for s, e in chunks:
        xc, hc = x[s:e], h[s:e]
        bc = e - s
        for g in groups:
            if bar is not None:
                bar.set_postfix_str(f"inputs {s}-{e - 1}: Jacobian of {len(g)} tensor(s)")
            J = _jacobians(fn, {k: values[k] for k in g}, xc, out_chunk, routes)
            for k in g:
                if bar is not None:
                    bar.set_postfix_str(f"inputs {s}-{e - 1}: {k}")
                U = J.pop(k).reshape(bc, C, -1)                                   # (b, C, P_k)
                W = None
                idx = sample_idx.get(k)
                if k in todo_w:
                    W = _w_entries(fn, model, family, values, k, xc, idx, w_method, act, max_bytes, progress)
                acc = parts_acc.setdefault(k, {})
                if idx is None:
                    zero_w = W is None and k not in todo_w and w_mode != "skip"
                    keys_k = wanted if not zero_w else [q for q in wanted if q not in w_keys]
                    if zero_w:                                                    # proved w ≡ 0: no memory
                        for key in w_keys:
                            if key in wanted and key not in acc and (key != "w2s" or family.shift_invariant):
                                acc[key] = hc.new_zeros(()).expand(B, U.shape[-1])

                    def write(key, lo, hi, val, acc=acc, s=s, e=e, width=U.shape[-1]):
                        buf = acc.get(key)
                        if buf is None:
                            buf = acc[key] = val.new_empty((B, width))
                        buf[s:e, lo:hi] = val
                    base_quantities_chunked(family, hc, U, W, keys_k, write)
                else:                                                             # sampled: exact at idx, NaN elsewhere
                    q = base_quantities(family, hc, U, None, cdim=1, keys=wanted)
                    qs = base_quantities(family, hc, U.index_select(2, idx), W, cdim=1, keys=wanted)
                    for key in w_keys:
                        if key in q:
                            full = torch.full_like(q[key], float("nan"))
                            full[:, idx] = qs[key]
                            q[key] = full
                            samples[k].setdefault(key, []).append(qs[key])
                    for key, val in q.items():
                        buf = acc.get(key)
                        if buf is None:
                            buf = acc[key] = val.new_empty((B,) + tuple(val.shape[1:]))
                        buf[s:e] = val
                if pneg_acc is not None:
                    fis = acc["fisher"][s:e] if idx is None else acc["fisher"][s:e].index_select(1, idx)
                    pv = prob_negative(family, hc, fis, None if W is None else W.transpose(1, 2), pneg_samples)
                    if pv is None:
                        pneg_acc = None
                    else:
                        if idx is not None:
                            full = torch.full_like(acc["fisher"][s:e], float("nan"))
                            full[:, idx] = pv
                            pv = full
                        pneg_acc.setdefault(k, h.new_empty(B, U.shape[-1]))[s:e] = pv
                if gram_out is not None:
                    Gk = gram_out[k]
                    Gk["JJ"][s:e] += U @ U.transpose(1, 2)
                    step = max(1, (1 << 22) // max(1, bc * C * C))
                    for j in range(0, U.shape[-1], step):
                        Uj = U[:, :, j:j + step].transpose(1, 2)                 # (b, k, C)
                        uu = (Uj.unsqueeze(-1) * Uj.unsqueeze(-2)).reshape(bc, -1, C * C)
                        Gk["UU"][s:e] += uu.transpose(1, 2) @ uu
                    if W is not None:
                        Gk["WW"][s:e] += W @ W.transpose(1, 2)
                del U, W
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    parts = {k: {key: Part(v.reshape(B, *params[k].shape)) for key, v in parts_acc[k].items()} for k in params}
    pneg = None if pneg_acc is None else {k: Part(v.reshape(B, *params[k].shape)) for k, v in pneg_acc.items()}
    info = {
        "var2_zero_reason": {k: p.reason for k, p in proofs.items() if p.proved},
        "proofs": {k: (p.proved, p.reason) for k, p in proofs.items()},
        "w_exact": [k for k in todo_w if k not in sample_idx],
        "w_sample": {k: {"index": sample_idx[k], "population": sizes[k],
                         "estimates": {key: _sample_estimate(torch.cat(v, 0), sizes[k])
                                       for key, v in samples[k].items()}} for k in sample_idx},
        "w_method": w_method if todo_w else None,
        "jacobian_route": sorted(set(routes)),
        "chunk_inputs": b,
        "out_chunk": out_chunk,
        "groups": groups,
        "memory_estimate_bytes": b * per_input,
    }
    return EngineOutput(h=h, parts=parts, path="reverse", grams=gram_out, pneg=pneg, info=info)


def _w_entries(fn, model, family, values, name, xc, idx, method, act, max_bytes, progress) -> torch.Tensor:
    """Exact w (b, C, k) of one parameter tensor at the flat entries ``idx`` (all when None), in chunks of
    entries sized from the budget: per entry about b·(4·A + 2·P·s) bytes ("forward": tangents of the
    activations and the reverse-over-reverse check) or b·3·C·P·s ("forward-over-reverse": the tangent
    of the Jacobian)."""
    p0 = values[name]
    P = p0.numel()
    bc = xc.shape[0]
    s = p0.element_size()
    if idx is None:
        idx = torch.arange(P, device=p0.device)
    C = None
    if method == "forward":
        per_entry = bc * (4 * act + 2 * P * s)
        cap = 1024
    else:
        C = int(fn.batch({}, xc[:1]).shape[-1])
        per_entry = 3 * bc * C * P * s
        cap = P
    k = int(max(1, min(len(idx), cap, max_bytes // max(1, per_entry))))
    cols = []
    rng = range(0, len(idx), k)
    for i in _tqdm(rng, progress if len(rng) > 1 else False, desc=f"exact w of {name}"):
        sel = idx[i:i + k]
        if method == "forward":
            _, W = directions(model, xc, family, name, sel)                       # (b, k, C), verified
            cols.append(W.transpose(1, 2))
        else:
            with composite_norms():  # torch's nested forward rules of the norm ops are wrong (safe_ad)
                cols.append(_w_exact(fn, values, name, xc, sel))
    return torch.cat(cols, 2)
