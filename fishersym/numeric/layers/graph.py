"""DAG runner: exact u and w for every parameter of a graph of per-layer rules (THEORY §7, §12).

A :class:`GraphPlan` is a list of nodes in topological order: the input, layers (a
:class:`~.base.LayerRule` applied to one tensor: a module, a reshape, the family's link), additions
y = Σ_k c_k x_k + const of tensors of one shape (residual connections), and non-tensor helper
nodes (``x.size(0)``).  It comes from an ``nn.Sequential`` (:func:`plan_sequential`, a chain), a
single supported module, or ``torch.fx.symbolic_trace`` of any other module (:func:`plan_graph`).

* Forward once in topological order, keeping each rule's cache.
* First order: G at the output node is I_C; walking the nodes in reverse topological order,
  G_v = ∂h/∂(value of v) is complete once all consumers of v are processed (it is the **sum of the
  contributions of every consumer**: jac_t of a layer, c_k·G of an addition); u of a layer's
  parameters = param_u(G_v).
* Second order (THEORY §12: w_{a,i} = Σ_{m,j} R^m_{a,j} (∂z^m_j/∂θ_i)², plus a full quadratic form
  for a non-elementwise non-linear layer): every non-linear layer m whose input is at or above a
  parameter with w not proved zero opens a block of factor rows over its input node: the
  identity (elementwise layers: ``curvature``, formed lazily) or explicit rows
  (``second_order_rows``, e.g. LayerNorm) with residuals R (B, C, K).  Blocks travel down in
  reverse topological order exactly like G (jac_t through layers, c_k·F through additions,
  **summed at fan-out points**), and at each layer with parameters w = Σ_blocks param_w(F, R)
  (``param_w_units`` when the block is still the lazy identity on the layer's outputs).
  Cost in depth: a block opened at a non-linear layer travels through every layer below it, so a
  chain of L non-linear layers of width n costs O(L²·n³) per input (BackPACK's DiagHessian has the
  same form).  Chains of Linear and elementwise layers are routed to :mod:`..mlp`, whose sweep
  switches to per-output Hessians (O(L·C·n³)) where those are cheaper (issue 12).
* A parameter whose every node above is linear or piecewise linear has w ≡ 0 exactly
  (:class:`~.base.ProvedZero`, with the list of the layer types above as the reason); no
  second-order work is done for it.

Tied or shared parameters (one parameter used by two nodes, or a module with parameters called
twice) are refused: ∂²h/∂θ² then has cross terms that the rules do not form.

Memory: first order, the live G's (B × C × node size each; at most the nodes of one "cut" of the
graph are live at once) and u (B × C × P_l per parameter tensor, factored for Linear on 2-D
inputs).  Second order, the factor rows: B × K × node size per block, K the number of non-linear
units above (rows shared by the batch count once).  :func:`run_graph` bounds the peak of the
second-order pass by B·C·K_tot (the residuals, K_tot all rows of all blocks) + b·max_u K_u·(n_u +
n_inputs(u)) numbers (K_u the rows reaching node u), runs it over chunks of b inputs (the forward
repeated per chunk) with b chosen so that this stays under ``max_bytes`` and near a cache-sized
working set, and refuses when one input does not fit.  With ``sink`` the (u, w) of each tensor is
handed on as soon as it is final (u of the proved-zero tensors during the first-order pass), so
u is not held for the whole model at once.
"""
from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from collections.abc import Callable

import torch
from typing_extensions import override
from torch import nn

from .base import Factored, LayerRule, ProvedZero, batch_shared, dense, rule_for

__all__ = ["GNode", "GraphPlan", "ParamQuantities", "plan_graph", "chain_plan", "run_graph", "proved_zero",
           "ReshapeRule",
           "DEFAULT_MAX_BYTES"]

#: default memory budget of the second-order pass (bytes)
DEFAULT_MAX_BYTES = 2 << 30


def _call_traced(fn: Callable, extra: tuple, t: torch.Tensor) -> torch.Tensor:
    """``fn(t, *extra)``: a traced call (e.g. a reshape) applied to its tensor argument."""
    return fn(t, *extra)


class ParamQuantities(NamedTuple):
    """u (B, C, *θ.shape) and w (B, C, *θ.shape) of one parameter tensor: dense tensors or
    :class:`Factored`, w a :class:`ProvedZero` when w ≡ 0 is proved from the layer types (None when
    not asked for)."""

    u: torch.Tensor | Factored
    w: torch.Tensor | Factored | ProvedZero | None


@dataclass
class GNode:
    """One node: ``kind`` is "input", "layer" (``rule`` applied to ``module`` and the tensor
    ``inputs[0]``), "add" (Σ coeffs[k]·inputs[k] + const) or "meta" (a non-tensor value such as
    ``x.size(0)``, computed by ``fn`` from the values of ``args``; no derivative flows through it)."""

    name: str
    kind: str
    inputs: tuple[int, ...] = ()
    rule: LayerRule | None = None
    module: Any = None
    params: dict[str, str] = field(default_factory=dict)   # local parameter name → model parameter name
    coeffs: tuple[float, ...] = ()
    const: float = 0.0
    fn: Callable | None = None                              # meta nodes, and layers built from fx calls
    args: tuple = ()                                        # fx arguments (nodes as indices)
    label: str = ""                                         # type name used in messages

    @property
    def layer_rule(self) -> LayerRule:
        """The rule of a "layer" node (every layer node has one)."""
        if self.rule is None:
            raise ValueError(f"graph node {self.name!r} ({self.kind}) has no layer rule")
        return self.rule


@dataclass
class GraphPlan:
    """A model as a DAG of rule nodes (:class:`GNode`, in topological order; the last is the output)."""
    nodes: list[GNode]
    source: str                                             # "nn.Sequential", "module", "torch.fx"

    @property
    def output(self) -> int:
        """The index of the output node."""
        return len(self.nodes) - 1

    def with_top(self, rule: LayerRule, module: Any, name: str, label: str) -> GraphPlan:
        """The plan with one more layer applied to its output (e.g. the family's link)."""
        top = GNode(name, "layer", (self.output,), rule, module, label=label)
        return GraphPlan(self.nodes + [top], self.source)


class ReshapeRule(LayerRule):
    """A reshape that keeps the batch dimension (``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)``,
    ``x.reshape(B, …)``): each input's block of elements keeps its order, so jac_t reshapes the rows
    back.  The "module" is a callable x ↦ y built from the traced call."""

    jacobian_constant = True
    piecewise_linear = True
    linear_in_params = True
    doc = "a reshape (view/reshape/flatten) keeping the batch dimension"

    @override
    def forward(self, module, x):
        y = module(x)
        if y.dim() == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(f"a reshape changes the batch dimension ({tuple(x.shape)} → {tuple(y.shape)}); "
                             "the per-layer engine needs every operation to act per input")
        return y, tuple(x.shape[1:])

    @override
    def jac_t(self, module, shape, M):
        return M.reshape(tuple(M.shape[:2]) + shape)


_RESHAPE = ReshapeRule()


# ------------------------------------------------------------------------------------------ planning

def _param_names(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}


def _layer_node(name: str, m: nn.Module, inp: int, pname: dict[int, str], seen: dict[int, str]
                ) -> tuple[GNode | None, str]:
    rule, why = rule_for(m)
    if rule is None:
        return None, f"module {name!r}: {why}"
    if not rule.linear_in_params and any(True for _ in m.parameters(recurse=False)):
        return None, f"module {name!r} ({type(m).__name__}) is not linear in its parameters"
    local = {}
    for ln, p in m.named_parameters(recurse=False):
        if id(p) in seen:
            return None, (f"parameter {ln!r} of module {name!r} is also used at {seen[id(p)]!r} (tied or "
                          "shared parameters): ∂²h/∂θ² then has cross terms the per-layer rules do not form")
        seen[id(p)] = f"{name}.{ln}"
        local[ln] = pname.get(id(p), f"{name}.{ln}")
    return GNode(name, "layer", (inp,), rule, m, local, label=type(m).__name__), ""


def _all_used(model: nn.Module, seen: dict[int, str]) -> str:
    for n, p in model.named_parameters():
        if id(p) not in seen:
            return f"parameter {n!r} is not used by any layer the forward pass calls"
    return ""


def chain_plan(steps: list[tuple[str, nn.Module]], model: nn.Module, source: str) -> tuple[GraphPlan | None, str]:
    """The chain x → steps[0] → … → steps[-1] as a graph; (None, reason) when a step is unsupported."""
    if not steps:
        return None, "the nn.Sequential is empty"
    pname = _param_names(model)
    seen: dict[int, str] = {}
    nodes = [GNode("x", "input")]
    for name, m in steps:
        node, why = _layer_node(name, m, len(nodes) - 1, pname, seen)
        if node is None:
            return None, why
        nodes.append(node)
    why = _all_used(model, seen)
    return (None, why) if why else (GraphPlan(nodes, source), "")


_ADDS = {operator.add: 1.0, operator.iadd: 1.0, torch.add: 1.0, operator.sub: -1.0, operator.isub: -1.0,
         torch.sub: -1.0}


def plan_graph(model: nn.Module) -> tuple[GraphPlan | None, str]:
    """Decompose ``model`` into per-layer rules: an ``nn.Sequential`` as a chain (nested ones
    expanded), a single supported module as itself, anything else through ``torch.fx.symbolic_trace``
    (call_module nodes with a rule, additions/subtractions of two tensors or of a tensor and a number,
    and batch-preserving reshapes: ``torch.flatten``, ``.flatten``, ``.view``, ``.reshape`` with
    ``.size()`` arguments).  (None, reason) for anything else."""
    if type(model) is nn.Sequential:
        from .sequential import _steps
        return chain_plan(_steps(model), model, "nn.Sequential")
    if type(model) in _rules():
        return chain_plan([("", model)], model, "module")
    import torch.fx as fx
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 — any failure of the tracer means: use another path
        first = (str(err).splitlines() or [""])[0]
        return None, f"torch.fx could not trace: {type(err).__name__}: {first}"
    return _from_fx(model, gm.graph)


def _rules():
    from .base import RULES
    return RULES


def _from_fx(model: nn.Module, graph) -> tuple[GraphPlan | None, str]:
    pname = _param_names(model)
    seen: dict[int, str] = {}
    nodes: list[GNode] = []
    index: dict[Any, int] = {}
    tensor: set[int] = set()                    # indices of tensor-valued nodes
    out = None

    def ref(a):
        return index[a] if a in index else None

    for n in graph.nodes:
        where = f"traced node {n.name!r} ({n.op} {getattr(n.target, '__name__', n.target)})"
        if n.op == "placeholder":
            if nodes:
                return None, f"the model takes more than one input ({where}); the per-layer engine needs one"
            index[n] = 0
            tensor.add(0)
            nodes.append(GNode("x", "input"))
            continue
        if n.op == "output":
            a = n.args[0]
            if not (hasattr(a, "op") and ref(a) in tensor):
                return None, "the model's output is not a single tensor"
            out = ref(a)
            continue
        if n.op == "get_attr":
            return None, (f"{where}: the forward uses a parameter or buffer directly (not through a module with "
                          "a per-layer rule)")
        if n.op == "call_module":
            m = model.get_submodule(n.target)
            if len(n.args) != 1 or n.kwargs or ref(n.args[0]) not in tensor:
                return None, f"{where}: a module called with other than one tensor argument"
            node, why = _layer_node(n.target, m, ref(n.args[0]), pname, seen)
            if node is None:
                return None, why
        elif n.op == "call_function" and n.target in _ADDS:
            node, why = _add_node(n, where, ref, tensor)
            if node is None:
                return None, why
        elif _is_reshape(n):
            if ref(n.args[0]) not in tensor:
                return None, f"{where}: reshape of a non-tensor"
            node = GNode(n.name, "layer", (ref(n.args[0]),), _RESHAPE, None, fn=_reshape_fn(n), args=_idx_args(n, ref),
                         label="reshape")
        elif n.op == "call_method" and n.target == "size" and ref(n.args[0]) in tensor and not n.kwargs:
            node = GNode(n.name, "meta", (), fn=lambda t, *d: t.size(*d), args=_idx_args(n, ref, 0),
                         label="size")
        else:
            return None, (f"{where} has no per-layer rule (supported in traced graphs: modules with a rule, "
                          "+/- of tensors, batch-preserving flatten/view/reshape, .size())")
        index[n] = len(nodes)
        if node.kind != "meta":
            tensor.add(len(nodes))
        nodes.append(node)
    if out is None:
        return None, "the traced graph has no output"
    why = _all_used(model, seen)
    if why:
        return None, why
    if out != len(nodes) - 1:                   # nodes after the output do not matter: drop them
        nodes = nodes[:out + 1]
    return GraphPlan(nodes, "torch.fx"), ""


class _Arg(NamedTuple):
    """A graph-node argument of a traced call (its index), resolved to the node's value at run time."""

    i: int


def _idx_args(n, ref, first: int = 1) -> tuple:
    def conv(a):
        if hasattr(a, "op"):
            return _Arg(ref(a))
        if isinstance(a, (tuple, list)):
            return type(a)(conv(b) for b in a)
        return a
    return tuple(conv(a) for a in n.args[first:])


def _resolve(args, vals):
    def conv(a):
        if isinstance(a, _Arg):
            return vals[a.i]
        if isinstance(a, (tuple, list)):
            return type(a)(conv(b) for b in a)
        return a
    return tuple(conv(a) for a in args)


def _is_reshape(n) -> bool:
    if n.op == "call_function" and n.target is torch.flatten:
        return True
    return n.op == "call_method" and n.target in ("view", "reshape", "flatten") and not n.kwargs


def _reshape_fn(n) -> Callable:
    if n.op == "call_function":
        return lambda t, *a, _kw=dict(n.kwargs): torch.flatten(t, *a, **_kw)
    return lambda t, *a, _m=n.target: getattr(t, _m)(*a)


def _add_node(n, where, ref, tensor) -> tuple[GNode | None, str]:
    sign = _ADDS[n.target]
    if (set(n.kwargs) - {"alpha"}) or len(n.args) != 2:
        return None, f"{where}: only a + b of two operands is supported"
    alpha = n.kwargs.get("alpha", 1)
    if not isinstance(alpha, (int, float)):
        return None, f"{where}: alpha must be a number"
    ins, coeffs, const = [], [], 0.0
    for k, a in enumerate(n.args):
        c = 1.0 if k == 0 else sign * float(alpha)
        if hasattr(a, "op"):
            if ref(a) not in tensor:
                return None, f"{where}: an operand is not a tensor"
            ins.append(ref(a))
            coeffs.append(c)
        elif isinstance(a, (int, float)) and not isinstance(a, bool):
            const += c * float(a)
        else:
            return None, f"{where}: an operand is neither a traced tensor nor a number"
    if not ins:
        return None, f"{where}: no tensor operand"
    return GNode(n.name, "add", tuple(ins), coeffs=tuple(coeffs), const=const, label="add"), ""


# ------------------------------------------------------------------------------------------ running

def _consumers(nodes: list[GNode]) -> list[list[int]]:
    cons: list[list[int]] = [[] for _ in nodes]
    for v, nd in enumerate(nodes):
        for i in set(nd.inputs):
            cons[i].append(v)
    return cons


def _above(nodes: list[GNode], cons: list[list[int]]) -> tuple[list[bool], list[set[int]]]:
    """For each node: whether a layer that is not piecewise linear lies above it (on a path to the
    output), and the set of nodes above it."""
    N = len(nodes)
    curved_above = [False] * N
    above: list[set[int]] = [set() for _ in range(N)]
    for v in range(N - 1, -1, -1):
        for c in cons[v]:
            above[v] |= above[c] | {c}
            ncur = nodes[c].kind == "layer" and not nodes[c].layer_rule.piecewise_linear
            curved_above[v] = curved_above[v] or curved_above[c] or ncur
    return curved_above, above


def proved_zero(plan: GraphPlan) -> dict[str, str]:
    """{parameter name: reason} for every parameter whose w ≡ 0 follows from the layer types alone
    (no layer above it that is not piecewise linear; THEORY §12), without running anything."""
    nodes = plan.nodes
    curved_above, above = _above(nodes, _consumers(nodes))
    return {pn: _zero_reason(nodes, v, sorted(above[v])) for v, nd in enumerate(nodes)
            if nd.kind == "layer" and not curved_above[v] for pn in nd.params.values()}


def _zero_reason(nodes: list[GNode], v: int, above: list[int]) -> str:
    kinds = list(dict.fromkeys(nodes[c].label for c in above))
    own = nodes[v].label
    if not kinds:
        return f"w ≡ 0: h is the output of this {own} layer, which is linear in its parameters (THEORY §12)"
    return (f"w ≡ 0: the {own} layer is linear in the parameter and only linear or piecewise-linear operations "
            f"({', '.join(kinds)}) lie between it and h (THEORY §12)")


def _acc(store: dict, key, val: torch.Tensor) -> None:
    """store[key] += val, keeping rows shared by the batch (stride 0) shared when both are."""
    old = store.get(key)
    if old is None:
        store[key] = val
    elif batch_shared(old) and batch_shared(val):
        s = old[:1] + val[:1]
        store[key] = s.expand(old.shape)
    else:
        store[key] = old + val


def _through(nd: GNode, cache, M: torch.Tensor, k: int, in_shape: tuple, B: int) -> torch.Tensor:
    """Rows M over node nd's output → rows over its k-th input."""
    if nd.kind == "add":
        c = nd.coeffs[k]
        out = M if c == 1.0 else c * M
        target = tuple(out.shape[:2]) + in_shape
        if tuple(out.shape) != target:                      # broadcast operand: sum over its expanded dims
            out = out.sum_to_size(target)
        return out
    rule = nd.layer_rule
    if rule.jacobian_constant and batch_shared(M):
        out = rule.jac_t(nd.module, cache, M[:1])
        return out.expand((B,) + tuple(out.shape[1:]))
    return rule.jac_t(nd.module, cache, M)


class _State:
    """Values and caches of one forward pass over a batch, with the per-node helpers of the backward passes."""

    def __init__(self, nodes: list[GNode], x: torch.Tensor):
        self.nodes = nodes
        N = len(nodes)
        vals: list[Any] = [None] * N
        caches: list[Any] = [None] * N
        for v, nd in enumerate(nodes):
            if nd.kind == "input":
                vals[v] = x
            elif nd.kind == "meta":
                assert nd.fn is not None                            # a meta node is its fn
                vals[v] = nd.fn(*_resolve(nd.args, vals))
            elif nd.kind == "add":
                y = nd.coeffs[0] * vals[nd.inputs[0]] if nd.coeffs[0] != 1.0 else vals[nd.inputs[0]]
                for c, i in zip(nd.coeffs[1:], nd.inputs[1:]):
                    y = y + c * vals[i] if c != 1.0 else y + vals[i]
                vals[v] = y + nd.const if nd.const else y
                if any(vals[i].dim() != vals[v].dim() or vals[i].shape[0] != x.shape[0] for i in nd.inputs):
                    raise ValueError(f"node {nd.name!r}: an addition of tensors of shapes "
                                     f"{[tuple(vals[i].shape) for i in nd.inputs]} broadcasts across the batch or "
                                     "the number of dimensions; the per-layer engine needs (batch, ...) operands of "
                                     "equal rank")
            else:
                mod = nd.module
                if nd.fn is not None:                               # reshape from a traced call
                    extra = _resolve(nd.args, vals)
                    mod = functools.partial(_call_traced, nd.fn, extra)
                vals[v], caches[v] = nd.layer_rule.forward(mod, vals[nd.inputs[0]])
                if nd.fn is not None:
                    caches[v] = (mod, caches[v])
        self.vals, self.caches, self.B = vals, caches, x.shape[0]

    def cache_of(self, v: int):
        nd = self.nodes[v]
        return self.caches[v][1] if nd.fn is not None and nd.kind == "layer" else self.caches[v]

    def mod_of(self, v: int):
        nd = self.nodes[v]
        return self.caches[v][0] if nd.fn is not None and nd.kind == "layer" else nd.module

    def through(self, v: int, M: torch.Tensor, k: int) -> torch.Tensor:
        nd = self.nodes[v]
        if nd.kind == "layer" and nd.fn is not None:
            nd = GNode(nd.name, nd.kind, nd.inputs, nd.rule, self.mod_of(v), label=nd.label)
        return _through(nd, self.cache_of(v), M, k, tuple(self.vals[nd.inputs[k]].shape[1:]), self.B)


#: working set aimed at by the batch chunks of the second-order pass (cache-sized blocks measured
#: faster than whole-batch ones on the MLP benchmark)
_TARGET_BYTES = 16 << 20


def run_graph(plan: GraphPlan, x: torch.Tensor, *, second_order: bool = True, max_bytes: int = DEFAULT_MAX_BYTES,
              wanted: set[str] | None = None,
              sink: Callable[[str, ParamQuantities, torch.Tensor], None] | None = None
              ) -> tuple[torch.Tensor, dict[str, ParamQuantities]]:
    """(h, {parameter name: (u, w)}) for a batch x, exact (module docstring).  h = the output node's value,
    shape (B, C).  ``wanted``: the parameter names to compute (default all).  With ``sink``, each tensor's
    (u, w) is handed to ``sink(name, quantities, h)`` as soon as it is final (during the first-order pass
    when w is proved zero) and not kept, so at most the tensors still waiting for their w are held
    (the returned dict is then empty).  The second-order pass runs over chunks of inputs (the forward
    repeated per chunk for its caches) sized so that its bounded peak stays under ``max_bytes`` and
    near ``_TARGET_BYTES``; a ValueError with the estimate when one input does not fit.
    Run under ``torch.no_grad()``."""
    nodes = plan.nodes
    N = len(nodes)
    for nd in nodes:                        # the state the plan was made in may have changed (e.g. .train())
        if nd.kind == "layer" and isinstance(nd.module, nn.Module):
            why = nd.layer_rule.check(nd.module)
            if why:
                raise ValueError(f"module {nd.name!r}: {why}")
    st = _State(nodes, x)
    h = st.vals[plan.output]
    if h.dim() != 2:
        raise ValueError(f"the model's output must have shape (batch, C); got {tuple(h.shape)}")
    B, C = h.shape
    cons = _consumers(nodes)
    want = (lambda n: True) if wanted is None else (lambda n: n in wanted)
    has_p = [nd.kind == "layer" and any(want(p) for p in nd.params.values()) for nd in nodes]

    # nodes at or above a wanted parameter (G needed there) and structural curvature above each node
    need = [False] * N
    for v, nd in enumerate(nodes):
        need[v] = has_p[v] or any(need[i] for i in nd.inputs)
    curved_above, above = _above(nodes, cons)
    need_w = [has_p[v] and curved_above[v] and second_order for v in range(N)]
    region = [False] * N                                    # factor rows needed at these nodes
    for v, nd in enumerate(nodes):
        region[v] = need_w[v] or any(region[i] for i in nd.inputs)

    out: dict[str, ParamQuantities] = {}
    us: dict[int, dict] = {}

    def emit(v: int, wd: dict) -> None:
        for ln, u in us.pop(v).items():
            name = nodes[v].params[ln]
            if want(name):
                if sink is None:
                    out[name] = ParamQuantities(u, wd[ln])
                else:
                    sink(name, ParamQuantities(u, wd[ln]), h)

    # first order (and the residuals of the non-linear layers whose input is in the region)
    G_at: dict[int, torch.Tensor] = {plan.output: torch.eye(C, dtype=h.dtype, device=h.device).expand(B, C, C)
                                     .contiguous()}
    opened: dict[int, list | None] = {}                            # non-linear node → [F | None, R] over its input
    for v in range(N - 1, -1, -1):
        if not need[v]:
            continue
        G = G_at.pop(v, None)
        nd = nodes[v]
        if G is None:                                       # does not reach the output
            G = h.new_zeros((B, C) + tuple(st.vals[v].shape[1:]))
        if has_p[v]:
            us[v] = nd.layer_rule.param_u(st.mod_of(v), st.cache_of(v), G)
            if not curved_above[v]:
                reason = _zero_reason(nodes, v, sorted(above[v]))
                emit(v, {ln: ProvedZero((B, C) + tuple(p.shape), reason, h.dtype, h.device)
                         for ln, p in nd.module.named_parameters(recurse=False)})
            elif not second_order:
                emit(v, {ln: None for ln in us[v]})
        if nd.kind == "layer" and not nd.layer_rule.piecewise_linear and region[nd.inputs[0]]:
            opened[v] = _open_block(nd, st.mod_of(v), st.cache_of(v), G)
        for k, i in enumerate(nd.inputs):
            if need[i] and nodes[i].kind != "input":
                _acc(G_at, i, st.through(v, G, k))
        del G
    if any(need_w):
        fixed, per = _check_budget(nodes, st.vals, region, opened, above, B, C, h.element_size(), max_bytes)
        b = max(1, min(B, min(max_bytes - fixed, _TARGET_BYTES) // max(1, per)))
        if b >= B:
            for v, wd in _second_pass(st, region, need_w, opened, C).items():
                emit(v, wd)
        else:
            chunks: dict[int, list[dict]] = {}
            for s in range(0, B, b):
                sl = slice(s, min(B, s + b))
                op = {m: None if blk is None else [None if blk[0] is None else blk[0][sl], blk[1][sl]]
                      for m, blk in opened.items()}
                for v, wd in _second_pass(_State(nodes, x[sl]), region, need_w, op, C).items():
                    chunks.setdefault(v, []).append(wd)
            for v, parts in chunks.items():
                emit(v, {ln: _cat_chunks([d[ln] for d in parts], us[v][ln]) for ln in parts[0]})
    assert not us, "every parameter's w is emitted"
    return h, out


def _cat_chunks(vals: list, u) -> torch.Tensor | Factored:
    """w of one tensor from its batch chunks; factored chunks stay factored with the full-batch input
    factor of u (the same layer input, computed on the whole batch)."""
    if all(isinstance(c, Factored) for c in vals) and len({c.p for c in vals}) == 1:
        a = u.a if isinstance(u, Factored) else torch.cat([c.a for c in vals])
        return Factored(torch.cat([c.f for c in vals]), a, vals[0].p)
    return torch.cat([dense(c) for c in vals])


def _second_pass(st: _State, region: list[bool], need_w: list[bool], opened: dict, C: int) -> dict[int, dict]:
    """w of every node in ``need_w`` for the batch of ``st``: the factor blocks of ``opened`` carried down in
    reverse topological order (module docstring)."""
    nodes, B = st.nodes, st.B
    h = st.vals[-1]
    ws: dict[int, dict] = {}
    blocks_at: dict[int, dict[int, list]] = {}
    for v in range(len(nodes) - 1, -1, -1):
        if not region[v]:
            continue
        nd = nodes[v]
        blks = blocks_at.pop(v, {})
        if need_w[v]:
            parts = []
            for blk in blks.values():
                if blk[0] is None:
                    short = nd.layer_rule.param_w_units(st.mod_of(v), st.cache_of(v), blk[1])
                    if short is not None:
                        parts.append(short)
                        continue
                    _form_identity(blk, B, C)
                parts.append(nd.layer_rule.param_w(st.mod_of(v), st.cache_of(v), blk[0], blk[1]))
            ws[v] = _sum_w(parts, nd.module, B, C, h)
        live = [(k, i) for k, i in enumerate(nd.inputs) if region[i]]
        if live:
            for key, blk in blks.items():
                if blk[0] is None:
                    _form_identity(blk, B, C)
                for k, i in live:
                    dst = blocks_at.setdefault(i, {})
                    Fi = st.through(v, blk[0], k)
                    if key in dst:
                        tmp = {0: dst[key][0]}
                        _acc(tmp, 0, Fi)
                        dst[key][0] = tmp[0]
                    else:
                        dst[key] = [Fi, blk[1]]
            if opened.get(v) is not None:
                blocks_at.setdefault(nd.inputs[0], {})[v] = list(opened[v])
        del blks
    return ws


def _open_block(nd: GNode, module, cache, G: torch.Tensor) -> list | None:
    """The block of a non-linear layer over its input: [None (lazy identity), R = curvature(G)] for an
    elementwise layer, [F, R] from ``second_order_rows`` otherwise; None when every residual is 0 on
    this batch (the block adds exactly 0)."""
    R = nd.layer_rule.curvature(module, cache, G)
    if R is not None:
        return [None, R] if bool((R != 0).any()) else None
    rows = nd.layer_rule.second_order_rows(module, cache, G)
    if rows is None:
        raise ValueError(f"the rule {type(nd.rule).__name__} of {nd.name!r} is not piecewise linear but gives "
                         "neither curvature nor second_order_rows; its second-order contribution is unknown")
    F, R = rows
    return [F, R] if bool((R != 0).any()) else None


def _form_identity(blk: list, B: int, C: int) -> None:
    """Replace a lazy identity block [None, R (B, C, *shape)] by explicit rows: the identity on the
    units whose residual is non-zero for some input and output (the others add exactly 0), shared
    by all inputs (stride-0 batch dimension)."""
    R = blk[1]
    shape = tuple(R.shape[2:])
    Rf = R.reshape(B, C, -1)
    n = Rf.shape[-1]
    keep = (Rf != 0).any(0).any(0).nonzero().squeeze(1)
    eye = torch.zeros(keep.numel(), n, dtype=R.dtype, device=R.device)
    eye[torch.arange(keep.numel(), device=R.device), keep] = 1
    blk[0] = eye.reshape((1, keep.numel()) + shape).expand((B, keep.numel()) + shape)
    blk[1] = Rf[:, :, keep] if keep.numel() < n else Rf


def _sum_w(parts: list[dict], module: nn.Module, B: int, C: int, h: torch.Tensor) -> dict:
    """Σ over blocks of param_w; factored values with the same input factor and power stay factored."""
    out: dict = {}
    for d in parts:
        for n, v in d.items():
            if n not in out:
                out[n] = v
            elif (isinstance(v, Factored) and isinstance(out[n], Factored) and v.a is out[n].a
                  and v.p == out[n].p):
                out[n] = Factored(out[n].f + v.f, v.a, v.p)
            else:
                out[n] = dense(out[n]) + dense(v)
    if not out:       # no block (every residual above was 0 on this batch): exact zeros, not a proof
        out = {ln: torch.zeros((B, C) + tuple(p.shape), dtype=h.dtype, device=h.device)
               for ln, p in module.named_parameters(recurse=False)}
    return out


def _check_budget(nodes: list[GNode], vals: list, region: list[bool], opened: dict, above: list[set[int]], B: int,
                  C: int, itemsize: int, max_bytes: int) -> tuple[int, int]:
    """(fixed, per input) bytes of an upper bound of the second-order peak: fixed = the residuals R
    held for the whole batch (B·C·K_tot numbers, K_tot all rows of all blocks); per input = the rows at
    the node u where they are largest, before and after jac_t, K_u·(n_u + n_inputs), K_u the rows of
    every block whose origin lies at or above u (no row dropped, none shared by the batch).  A lazy
    identity consumed by ``param_w_units`` at a node with no input in the region is never formed and
    does not count.  Refused (ValueError with the options) when fixed + one input exceeds ``max_bytes``."""
    K_tot, peak = 0, 0
    rows = [0] * len(nodes)
    for m, blk in opened.items():
        if blk is None:
            continue
        K = blk[1].shape[2] if blk[0] is not None else math.prod(blk[1].shape[2:])
        K_tot += K
        i = nodes[m].inputs[0]
        for u in range(len(nodes)):
            if region[u] and (u == i or i in above[u]):
                rows[u] += K
    for u, nd in enumerate(nodes):
        if not rows[u]:
            continue
        n_in = sum(vals[i][0].numel() for i in nd.inputs if region[i])
        lazy_only = n_in == 0 and type(nd.layer_rule).param_w_units is not LayerRule.param_w_units
        if not lazy_only:
            peak = max(peak, rows[u] * (vals[u][0].numel() + n_in))
    fixed, per = B * C * K_tot * itemsize, peak * itemsize
    est = fixed + per
    if est > max_bytes:
        raise ValueError(
            f"the exact second-order pass needs about {est / 2**30:.2f} GiB even one input at a time (factor rows "
            f"K × layer size with K = {max(rows)} non-linear units above a parameter, and the residuals of "
            f"B = {B} inputs × C = {C} outputs × {K_tot} units), above max_bytes = "
            f"{max_bytes / 2**30:.2f} GiB; options: second_order=False (u only), exact values on a sample of "
            "entries, float32, or a larger max_bytes")
    return fixed, per
