"""The planner: which diagonal-Fisher estimator, with how many inputs M′ and labels N per input
(THEORY §8, §9, §13).

:func:`plan` answers, per parameter group, either

* **a target** ρ for the relative standard error: the cheapest option (estimator, M′, N, scheme)
  whose group relative s.e. is at most ρ, cost in backward passes; or
* **a budget** B in backward passes: the option with the smallest group relative s.e. costing at
  most B.

*Options.*  Scheme ``"iid"``: M′ inputs drawn i.i.d. from the data, N labels (probes) per input,
the estimate (1/M′)·draw of Ī(θ_i) = (1/M)Σ_m I(θ_i|x_m) (THEORY §8).  Scheme ``"all"``: every input
of the data once (M′ = M), N labels each, the estimate of Σ_m I(θ_i|x_m) — no input term.  N runs
over 1, 2, 4, …, ``max_samples`` (only N = 1 for the deterministic estimators).  Cost: M′ × the
estimator's backward passes per input (:meth:`~.base.Estimator.cost`).

*Group relative s.e.*  Per entry, a.rel_se = √(Var + bias²)/target (the relative root-mean-square
error, which is the relative s.e. for the unbiased estimators), and over the group's n entries its
``quantile`` q: the k-th smallest value with k = ⌈q·n⌉ — so "≤ ρ" means "at least a fraction q of
the group's entries have relative s.e. ≤ ρ".  An order statistic commutes with every increasing
map, which makes the structured searches below exact.

*Searching M′* for one (estimator, N) in scheme "iid" (:data:`STRUCTURE`):

* ``per_input`` (Î₁, Î₂, output-space Hutchinson, the exact Fisher over labels): per entry
  rel²_i(M′) = c_i(N)/M′ with c_i(N) = (Var_q I_i + L_i/N)/Ī_i², so the group's quantile is
  √(Q(c)/M′) and M′ = ⌈Q(c)/ρ²⌉ with Q(c) = the quantile at M′ = 1;
* ``batched`` (the batch-gradient squares): rel²_i = (c_i(N) − 2/N)/M′ + 2/N — increasing in
  c_i, so again one quantile with the limit 2/N as M′ grows: decreasing towards it when the quantile
  of c_i(N) exceeds 2/N (then unreachable when 2/N ≥ ρ²), increasing towards it otherwise (then the
  smallest M′ is best). The batched estimators are planned as one batch of M′ inputs (the relative
  s.d. tends to √(2/N) however large the batch, THEORY §13); with mini-batches of B the cross term is
  2(B − 1)Ī² per input (:meth:`Analysis.variance` with ``batch=B``);
* ``decreasing`` (parameter-space Hutchinson: L = D₁ + (M′−1)D₂ with D₁ − D₂ = Σ_j Var_q F_m,ij ≥ 0;
  the empirical Fisher: Var_q(s²)/M′ + bias²): every entry's rel²_i = a_i/M′ + b_i with a_i ≥ 0 is
  non-increasing in M′, hence so is every order statistic; bisection, floor Q(b) (bias or
  cross-input term);
* ``laurent`` (the batched empirical Fisher, whose bias grows as M′k₁² and is not monotone in M′):
  rel²_i = α_i/M′ + β_i + γ_iM′ + δ_iM′², read off four exact evaluations, then every M′ = 1 … S
  is evaluated from those coefficients;
* ``scan`` (any estimator registered later): every M′ = 1 … S is evaluated exactly.

Every candidate is evaluated with the exact moments (:meth:`Analysis.rel_se`); the closed forms only
propose M′, which is accepted when it meets ρ and M′ − 1 does not (else bisection decides).

*Input term* (THEORY §8): for every unbiased estimator in scheme "iid", Var ≥ Var_q I / M′, so the
group's relative s.e. is at least √(Q(Var_q I/Ī²)/M′) whatever N: no number of labels beats too few
inputs.  The plan gives, per group, the fewest i.i.d. inputs any unbiased estimator needs, and says
when the input term dominates the recommended option.

Every number of a :class:`Plan` is exact — computed from the exact moments of the data
(:func:`~fishersym.estimators.analyse`), none sampled: the recommended and each estimator's best option
by :meth:`Analysis.rel_se` itself, the other candidates and the cost ladder by the structure above
(coefficients read off exact evaluations; equal to :meth:`Analysis.rel_se` up to rounding).

>>> import torch, fishersym.estimators as fe
>>> from fishersym.estimators.planner import plan
>>> g = torch.Generator().manual_seed(0)
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
>>> x = torch.randn(20, 3, dtype=torch.float64, generator=g)
>>> p = plan(net, x, fe.families.get("categorical", C=3), target=0.2, estimators=["squared_score", "exact_over_labels"])
>>> sorted(p.groups)
['0', '2']
>>> r = p.groups["2"].recommended
>>> r.rel_se <= 0.2 and r.meets
True
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..families.base import ExponentialFamily
from ..numeric.conditional import resolve_family
from ..numeric.stats import rel_sd, resolve_groups
from .api import Analysis, analyse
from .base import Estimator, get, names

__all__ = ["plan", "Plan", "GroupPlan", "Option", "STRUCTURE", "PARAM_HUTCHINSON_MAX_FLOPS",
           "PARAM_HUTCHINSON_MAX_PARAMS", "order_statistic_index"]

#: how the group relative s.e. of an estimator depends on M′ in scheme "iid" (see the module docstring)
STRUCTURE: dict[str, str] = {
    "squared_score": "per_input", "neg_hessian": "per_input", "output_hutchinson_gaussian": "per_input",
    "output_hutchinson_rademacher": "per_input", "exact_over_labels": "per_input",
    "batched_squared_gradient": "batched", "batched_output_hutchinson_gaussian": "batched",
    "batched_output_hutchinson_rademacher": "batched",
    "param_hutchinson": "decreasing", "empirical": "decreasing",
    "batched_empirical": "laurent",
}

#: param_hutchinson is left out by default above these (its P × P data-set Fisher costs M·C·P² flops)
PARAM_HUTCHINSON_MAX_FLOPS = 5e10
PARAM_HUTCHINSON_MAX_PARAMS = 8000
#: M′ at which the limit M′ → ∞ of the relative s.e. is read off (the terms in 1/M′ are then < 1e-12 of the rest)
_BIG = 2 ** 40
#: the most values of M′ scanned for the estimators without a monotone structure
_SCAN_CAP = 65536

_FLOOR_REASON = {
    "batched": "the batched estimator's relative s.e. tends to √(2/N) = {b:.3g} however many inputs are batched "
               "(the cross term 2(M′−1)Ī²/N, THEORY §13)",
    "empirical": "its bias floor: the relative RMSE tends to the size of the relative bias (E_q s² − Ī)/Ī, "
                 "{lim:.3g} (observed labels, THEORY §9)",
    "param_hutchinson": "its floor: the cross-parameter term Σ_{{j≠i}} F̄_ij²/N does not average out over "
                        "inputs; the relative s.e. tends to {lim:.3g}",
}


def order_statistic_index(quantile: float, n: int) -> int:
    """k = ⌈q·n⌉ (at least 1): the group's ``quantile`` is its k-th smallest entry, so "quantile ≤ ρ"
    means at least a fraction q of the n entries are ≤ ρ.

    >>> order_statistic_index(0.5, 4), order_statistic_index(0.5, 5), order_statistic_index(1.0, 7)
    (2, 3, 7)
    """
    return min(n, max(1, math.ceil(quantile * n * (1 - 1e-12))))


@dataclass
class Option:
    """One way of estimating a group's Fisher diagonal: ``estimator`` on ``m_inputs`` inputs
    (scheme "iid": drawn i.i.d. from the data; "all": every input once) with ``n_samples`` labels
    (probes) per input, ``cost`` backward passes, predicted (exact) group relative s.e. ``rel_se``.
    ``meets``: within the target (target mode) or the budget (budget mode).  ``input_floor``: the
    input term's relative s.e. √(Q(Var_q I/Ī²)/M′) at this M′ (0 for scheme "all"); ``reason`` says
    why an option fails."""
    estimator: str
    scheme: str
    m_inputs: int | None
    n_samples: int
    cost: float
    rel_se: float
    meets: bool
    biased: bool = False
    input_floor: float = 0.0
    reason: str = ""

    @property
    def input_share(self) -> float:
        """(input term)² / (relative s.e.)²: the share of the variance that more labels cannot remove."""
        if self.scheme != "iid" or self.biased or not self.rel_se > 0:
            return 0.0
        return min(1.0, (self.input_floor / self.rel_se) ** 2)

    def as_dict(self) -> dict:
        """The option as a JSON-friendly dict (the plan's ``options`` rows)."""
        return {"estimator": self.estimator, "scheme": self.scheme, "m_inputs": self.m_inputs,
                "n_samples": self.n_samples, "cost": self.cost, "rel_se": self.rel_se, "meets": self.meets,
                "biased": self.biased, "input_floor_rel_se": self.input_floor, "input_share": self.input_share,
                "reason": self.reason}


@dataclass
class GroupPlan:
    """The plan of one parameter group: ``recommended`` (None when no option meets the target),
    each estimator's ``best`` option (or its closest, with the reason, when unreachable), every
    evaluated ``candidates`` (the best M′ per (estimator, N, scheme)), the ``ladder`` of cost against
    accuracy, and the input term: ``input_q`` = Q(Var_q I/Ī²) and ``min_inputs`` = the fewest i.i.d.
    inputs any unbiased estimator needs for the target (THEORY §8)."""
    group: str
    members: list[str]
    n_params: int
    target: float | None
    recommended: Option | None
    best: dict[str, Option]
    candidates: list[Option]
    ladder: list[dict]
    input_q: float
    min_inputs: int | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """Result of :func:`plan`; see the module docstring.  ``groups`` maps group names to
    :class:`GroupPlan`; ``not_evaluated`` maps left-out estimators to the reason and how to include
    them; ``analysis`` is the :class:`~fishersym.estimators.Analysis` every number comes from."""
    mode: str                       # "target" or "budget"
    budget: float | None
    quantile: float
    M: int
    C: int
    n_grid: list[int]
    estimators: list[str]
    not_evaluated: dict[str, str]
    groups: dict[str, GroupPlan]
    analysis: Analysis
    scan_limit: int
    max_inputs: int | None = None

    EXACT_NOTE = ("Every number is exact: computed from the exact moments of the data (closed forms, "
                  "fishersym.estimators.analyse), none sampled; the recommended and best options by Analysis.rel_se "
                  "itself, the other candidates and the cost ladder through the same formulas' dependence on M′ "
                  "(equal up to rounding). Scheme 'iid': M′ inputs drawn i.i.d. from the data, target Ī (THEORY §8); "
                  "'all': every input once, target Σ_m I_m (no input term). Relative s.e. = √(Var + bias²)/target, "
                  "the relative RMSE for the biased (empirical) estimators.")

    def table(self) -> list[dict]:
        """Rows: per group the recommendation (``row`` = "recommended"), each estimator's best option
        ("best"), every evaluated candidate ("candidate") and the cost-against-accuracy ladder
        ("ladder", with ``budget`` the cost allowed)."""
        rows = []
        for g, gp in self.groups.items():
            base = {"group": g, "n_params": gp.n_params, "target": gp.target, "budget": self.budget,
                    "quantile": self.quantile}
            if gp.recommended is not None:
                rows.append({**base, "row": "recommended", **gp.recommended.as_dict()})
            else:
                rows.append({**base, "row": "recommended", "estimator": None, "meets": False,
                             "reason": "; ".join(gp.notes)})
            for o in gp.best.values():
                rows.append({**base, "row": "best", **o.as_dict()})
            for o in gp.candidates:
                rows.append({**base, "row": "candidate", **o.as_dict()})
            for lr in gp.ladder:
                rows.append({**base, "row": "ladder", **lr})
        return rows

    def to_csv(self, path) -> object:
        """:meth:`table` as CSV (full float precision); returns the path."""
        from ..experiments.io import write_csv
        cols = ["group", "row", "estimator", "scheme", "m_inputs", "n_samples", "cost", "rel_se", "meets", "biased",
                "input_floor_rel_se", "input_share", "target", "budget", "quantile", "n_params", "reason"]
        return write_csv(path, self.table(), cols)

    def recommendation_rows(self) -> list[dict]:
        """One row per group: the recommended option (or why there is none)."""
        out = []
        for g, gp in self.groups.items():
            o = gp.recommended
            row = {"group": g, "n_params": gp.n_params, "target": gp.target, "min_inputs": gp.min_inputs}
            if o is None:
                row.update(estimator=None, note="; ".join(gp.notes))
            else:
                row.update(o.as_dict())
                row["note"] = "; ".join(gp.notes)
            out.append(row)
        return out

    def to_text(self, ladder: bool = True) -> str:
        """A console table: the recommendation per group first, then each estimator's best option per
        group, the cost-against-accuracy ladder, what was not evaluated and why."""
        L = []
        if self.mode == "target":
            ts = sorted({gp.target for gp in self.groups.values() if gp.target is not None})
            tdesc = f"target relative s.e. {ts[0]:g}" if len(ts) == 1 else "target relative s.e. per group"
        else:
            tdesc = f"budget {self.budget:g} backward passes"
        L.append(f"fishersym plan: {tdesc}; group relative s.e. = the {self.quantile:g}-quantile of its entries; "
                 f"data: M = {self.M} inputs, C = {self.C}; N ∈ {{{', '.join(map(str, self.n_grid))}}}")
        L.append("")
        L.append("Recommendation per group (cost in backward passes):")
        w = max([5] + [len(g) for g in self.groups])
        head = (f"  {'group':{w}} {'params':>8}  {'estimator':36} {'scheme':6} {'M′':>9} {'N':>5} {'cost':>11} "
                f"{'rel.s.e.':>9}")
        L.append(head + "  note")
        for g, gp in self.groups.items():
            o = gp.recommended
            if o is None:
                L.append(f"  {g:{w}} {gp.n_params:8d}  {'(none reaches the target)':36} " + "; ".join(gp.notes))
                continue
            L.append(f"  {g:{w}} {gp.n_params:8d}  {o.estimator:36} {o.scheme:6} {o.m_inputs:9d} {o.n_samples:5d} "
                     f"{o.cost:11.4g} {o.rel_se:9.3g}  " + "; ".join(gp.notes))
        for g, gp in self.groups.items():
            L.append("")
            extra = (f"; input term: no unbiased estimator reaches {gp.target:g} with fewer than {gp.min_inputs} "
                     f"i.i.d. inputs, whatever N (scheme 'all' has no input term)" if gp.min_inputs is not None else "")
            L.append(f"== {g}: {gp.n_params} parameters ({', '.join(gp.members)}){extra}")
            L.append(f"  {'estimator':36} {'scheme':6} {'M′':>9} {'N':>5} {'cost':>11} {'rel.s.e.':>9}  status")
            for e, o in gp.best.items():
                m = "-" if o.m_inputs is None else str(o.m_inputs)
                cost = f"{o.cost:11.4g}" if math.isfinite(o.cost) else f"{'-':>11}"
                status = ("meets" if o.meets else "NOT REACHED: " + o.reason) if self.mode == "target" else \
                    ("best within the budget" if o.meets else o.reason)
                L.append(f"  {e:36} {o.scheme:6} {m:>9} {o.n_samples:5d} {cost} {o.rel_se:9.3g}  {status}")
        if ladder:
            L.append("")
            L.append("Cost against accuracy: predicted relative s.e. of each estimator's best option costing at most "
                     "the given number of backward passes ('-': none that cheap)")
            for g, gp in self.groups.items():
                costs = sorted({r["budget"] for r in gp.ladder})
                show = costs if len(costs) <= 9 else costs[::max(1, math.ceil(len(costs) / 9))]
                L.append(f"== {g}")
                L.append(f"  {'estimator':36}" + "".join(f"{c:>9.3g}" for c in show))
                by = {(r["estimator"], r["budget"]): r["rel_se"] for r in gp.ladder}
                for e in gp.best:
                    cells = []
                    for c in show:
                        v = by.get((e, c))
                        cells.append(f"{v:>9.3g}" if v is not None else f"{'-':>9}")
                    L.append(f"  {e:36}" + "".join(cells))
        if self.not_evaluated:
            L.append("")
            L.append("Not evaluated:")
            for e, why in self.not_evaluated.items():
                L.append(f"  {e}: {why}")
        L.append("")
        L.append(self.EXACT_NOTE)
        return "\n".join(L)

    def __repr__(self) -> str:
        rec = {g: (gp.recommended.estimator if gp.recommended else None) for g, gp in self.groups.items()}
        return f"<Plan {self.mode}: {rec}>"


# ---------------------------------------------------------------------------------------------------- helpers
def _check_target(target, group_names: list[str]) -> dict[str, float]:
    def one(v, what):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{what} must be a finite number > 0 (a relative standard error, e.g. 0.1), got {v!r}")
        return float(v)
    if isinstance(target, Mapping):
        unknown = sorted(set(target) - set(group_names))
        if unknown:
            raise ValueError(f"target names unknown groups {unknown}; the groups are {group_names}")
        missing = [g for g in group_names if g not in target]
        if missing:
            raise ValueError(f"target has no value for the groups {missing}; give one float for all groups or one "
                             f"per group ({group_names})")
        return {g: one(target[g], f"target[{g!r}]") for g in group_names}
    t = one(target, "target")
    return {g: t for g in group_names}


def _count_inputs(data) -> int | None:
    """The number of inputs of tensor/tuple/list data (None for other iterables)."""
    if isinstance(data, torch.Tensor):
        return int(data.shape[0]) if data.dim() else None
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return int(data[0].shape[0])
    if isinstance(data, list):
        n = 0
        for b in data:
            x = b[0] if isinstance(b, (tuple, list)) else b
            if not isinstance(x, torch.Tensor) or x.dim() == 0:
                return None
            n += int(x.shape[0])
        return n
    ds = getattr(data, "dataset", None)                 # a DataLoader over a sized dataset
    if ds is not None and hasattr(ds, "__len__"):
        return len(ds)
    return None


def _has_labels(data) -> bool | None:
    """Whether the data carry observed labels (None: cannot tell without consuming them)."""
    if isinstance(data, torch.Tensor):
        return False
    if isinstance(data, tuple):
        return len(data) == 2 and data[1] is not None
    if isinstance(data, list):
        if not data:
            return None
        b = data[0]
        return isinstance(b, (tuple, list)) and len(b) >= 2 and b[1] is not None
    try:
        if iter(data) is data:          # a one-shot iterator: peeking would consume it
            return None
        from ..numeric.dataset import iter_data
        batches, _ = iter_data(data, 1)
        _, y = next(iter(batches))
        return y is not None
    except Exception:  # noqa: BLE001 - malformed data: analyse reports it properly
        return None


def _global_count_labels(data, process_group) -> tuple[int | None, bool | None]:
    """(inputs, labels present) of ``data``; under a process group those of all ranks' shards together
    (the count summed; labels present where every rank with inputs has them), so that every rank picks
    the same default estimators."""
    from ..numeric.distributed import gather_outcome, resolve_group
    M, labels = _count_inputs(data), _has_labels(data)
    group = resolve_group(process_group)
    if group is None:
        return M, labels
    got = gather_outcome((M, labels), None, group, "plan")
    Ms = [m for m, _ in got]
    total = None if any(m is None for m in Ms) else sum(Ms)
    ls = [lab for m, lab in got if m != 0]
    if not ls:
        return total, labels
    return total, (None if any(v is None for v in ls) else all(ls))


def _default_estimators(P: int, M: int | None, C: int, labels: bool | None) -> tuple[list[str], dict[str, str]]:
    chosen, left = [], {}
    for n in names():
        e = get(n)
        if n == "param_hutchinson":
            flops = None if M is None else M * C * P * P
            if P > PARAM_HUTCHINSON_MAX_PARAMS or flops is None or flops > PARAM_HUTCHINSON_MAX_FLOPS:
                size = (f"M·C·P² = {flops:.3g} flops" if flops is not None else "M·C·P² flops with an unknown "
                        "number of inputs M")
                left[n] = (f"its variance needs the P × P data-set Fisher ({size}; P = {P}; left out by default above "
                           f"{PARAM_HUTCHINSON_MAX_FLOPS:.0e} flops or {PARAM_HUTCHINSON_MAX_PARAMS} parameters); "
                           "include it with estimators=[..., 'param_hutchinson'] "
                           "(CLI: --estimators ...,param_hutchinson)")
                continue
        if labels is False and "score" in e.needs:
            left[n] = ("needs the observed labels, which the data lack: pass data as (x, y) to include it")
            continue
        chosen.append(n)
    return chosen, left


def _n_grid(max_samples: int) -> list[int]:
    out, n = [], 1
    while n <= max_samples:
        out.append(n)
        n *= 2
    return out


@contextlib.contextmanager
def _one_thread():
    """Small tensors (one group's entries): thread start-up costs more than it saves."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class _Evaluator:
    """Exact group quantiles of :meth:`Analysis.rel_se` and the exact per-entry Var + bias², cached."""

    def __init__(self, a: Analysis, groups: dict[str, list[str]], quantile: float) -> None:
        self.a, self.groups = a, groups
        self.n = {g: sum(a.moments.I_sum[p].numel() for p in m) for g, m in groups.items()}
        self.k = {g: order_statistic_index(quantile, self.n[g]) for g in groups}
        self.cache: dict[tuple, dict[str, float]] = {}
        self.num_cache: dict[tuple, dict[str, torch.Tensor]] = {}
        t = a.target("iid")
        self.t_iid = {g: self.flat(t, g) for g in groups}

    def flat(self, values: dict[str, torch.Tensor], g: str) -> torch.Tensor:
        return torch.cat([values[p].reshape(-1) for p in self.groups[g]]).detach().cpu()

    def kth(self, v: torch.Tensor, g: str) -> float:
        return float(torch.kthvalue(v, self.k[g]).values)

    def rel(self, est: str, n: int, scheme: str, m: int | None) -> dict[str, float]:
        """{group: the group's quantile of Analysis.rel_se} (exact)."""
        key = (est, n, scheme, m)
        if key not in self.cache:
            rs = self.a.rel_se(est, n, scheme, m if scheme == "iid" else None)
            self.cache[key] = {g: self.kth(self.flat(rs, g), g) for g in self.groups}
        return self.cache[key]

    def num(self, est: str, n: int, m: int) -> dict[str, torch.Tensor]:
        """{group: Var + bias² per entry} of scheme "iid" with M′ = m (exact)."""
        key = (est, n, m)
        if key not in self.num_cache:
            v = self.a.variance(est, n, "iid", m)
            b = self.a.bias(est, "iid", m)
            self.num_cache[key] = {g: self.flat({p: v[p] + b[p] * b[p] for p in v}, g) for g in self.groups}
        return self.num_cache[key]

    def input_q(self) -> dict[str, float]:
        """Q(Var_q I/Ī²) per group: the input term at M′ = 1 (THEORY §8)."""
        mom = self.a.moments
        r = {p: rel_sd(mom.I_var[p], mom.I_sum[p] / mom.M) for p in mom.names}
        return {g: self.kth(self.flat(r, g), g) ** 2 for g in self.groups}


#: the M′ at which each structure's coefficients are read off exact evaluations of Var + bias²
_POINTS = {"per_input": (1,), "batched": (1,), "decreasing": (1, 2), "laurent": (1, 2, 3, 4)}


class _Curve:
    """The group quantile of one (estimator, N) in scheme "iid" as a function of M′ (:data:`STRUCTURE`).

    Entries with Ī_i = 0 have relative s.e. 0 (no variance) or ∞ at every M′.  For the others,
    rel²_i(M′) = (Var + bias²)/Ī_i² is, with coefficients read off exact evaluations at the M′ of
    :data:`_POINTS` (exact in exact arithmetic, since the function lies in the span):

    * per_input: a_i/M′ (a_i = rel²_i(1));  batched: (a_i − 2/N)/M′ + 2/N — for both the k-th
      entry commutes with the map, so the quantile is √(Q/M′ + b) with one order statistic Q;
    * decreasing: a_i/M′ + b_i, a_i, b_i ≥ 0 (two evaluations);
    * laurent (batched_empirical): α_i/M′ + β_i + γ_iM′ + δ_iM′², the cumulant formula of
      :class:`~fishersym.estimators.empirical.BatchedEmpirical` (four evaluations);
    * scan (anything else): evaluated exactly at every M′."""

    def __init__(self, ev: _Evaluator, est: str, n: int, g: str, struct: str) -> None:
        self.ev, self.est, self.N, self.g, self.struct = ev, est, n, g, struct
        self.const: float | None = None
        if struct == "scan":
            return
        pts = _POINTS[struct]
        gs = [ev.num(est, n, m)[g] for m in pts]
        t = ev.t_iid[g]
        zt = t == 0
        nonzero = torch.zeros_like(zt)
        for x in gs:
            nonzero |= x != 0
        n0 = int((zt & ~nonzero).sum())
        reg = ~zt
        t2 = t[reg] ** 2
        G = [x[reg] / t2 for x in gs]
        k, nreg = ev.k[g], int(reg.sum())
        self.kr = k - n0
        if k <= n0:
            self.const = 0.0
        elif k > n0 + nreg:
            self.const = math.inf
        if self.const is not None:
            return
        if struct == "per_input":
            self.Q, self.b = float(torch.kthvalue(G[0], self.kr).values), 0.0
        elif struct == "batched":
            self.Q, self.b = float(torch.kthvalue(G[0] - 2 / n, self.kr).values), 2 / n
        elif struct == "decreasing":
            self.coef = torch.stack([2 * (G[0] - G[1]), 2 * G[1] - G[0]])           # a/M′ + b
        else:
            V = torch.tensor([[1 / m, 1.0, float(m), float(m * m)] for m in pts], dtype=G[0].dtype)
            self.coef = torch.linalg.solve(V, torch.stack(G))                         # α, β, γ, δ

    def _basis(self, ms: torch.Tensor) -> torch.Tensor:
        if self.struct == "decreasing":
            return torch.stack([1 / ms, torch.ones_like(ms)], 1)
        return torch.stack([1 / ms, torch.ones_like(ms), ms, ms * ms], 1)

    def q(self, m: int) -> float:
        if self.const is not None:
            return self.const
        if self.struct == "scan":
            return self.ev.rel(self.est, self.N, "iid", m)[self.g]
        if self.struct in ("per_input", "batched"):
            return math.sqrt(max(0.0, self.Q / m + self.b))
        return self.q_many([m])[0]

    def q_many(self, ms: Sequence[int]) -> list[float]:
        if self.const is not None or self.struct in ("per_input", "batched", "scan"):
            return [self.q(m) for m in ms]
        out: list[float] = []
        for i in range(0, len(ms), 128):
            mm = torch.tensor([float(m) for m in ms[i:i + 128]], dtype=self.coef.dtype)
            vals = self._basis(mm) @ self.coef                                        # (len, nreg)
            out += torch.kthvalue(vals, self.kr, dim=1).values.clamp_min(0).sqrt().tolist()
        return out

    def limit(self) -> float:
        """lim_{M′→∞} of the group quantile (per_input, batched, decreasing: non-increasing or constant)."""
        if self.const is not None:
            return self.const
        if self.struct == "per_input":
            return 0.0
        if self.struct == "batched":
            return math.sqrt(self.b)
        return math.sqrt(max(0.0, float(torch.kthvalue(self.coef[1], self.kr).values)))

    def rising(self) -> bool:
        """batched with the k-th entry's c(N) < 2/N: the quantile rises with M′ towards √(2/N)."""
        return self.const is None and self.struct == "batched" and self.Q < 0


def _min_inputs(cv: _Curve, rho: float, cap: int | None, S: int) -> tuple[int | None, str, float]:
    """(the smallest M′ whose group relative s.e. is ≤ ρ, or None; the reason when None; its value or the
    best value reachable), from the curve's structure; checked exactly afterwards (:func:`_exact_first`)."""
    if cv.struct in ("laurent", "scan") and cv.const is None:
        vals = cv.q_many(range(1, S + 1))
        for i, v in enumerate(vals):
            if v <= rho:
                return _capped(cv, i + 1, cap)
        why = "its bias grows with M′" if cv.est == "batched_empirical" else "it is not monotone in M′"
        return None, f"not reached for any M′ ≤ {S} (every M′ evaluated; {why})", min(vals)
    r1 = cv.q(1)
    if r1 <= rho:
        return 1, "", r1
    if math.isinf(r1) or math.isnan(r1):
        return None, ("the group's quantile entry has I = 0 with a non-zero variance (infinite relative s.e.); "
                      "use a lower quantile"), r1
    if cv.rising():
        return None, (f"its relative s.e. rises with M′ (from {r1:.3g} at M′ = 1 towards √(2/N) = "
                      f"{math.sqrt(2 / cv.N):.3g}) and exceeds the target already at M′ = 1"), r1
    lim = cv.limit()
    if not lim < rho:
        kind = "batched" if cv.struct == "batched" else cv.est
        tmpl = _FLOOR_REASON.get(kind, "its relative s.e. tends to {lim:.3g} as M′ → ∞")
        why = "does not reach the target for any number of inputs: " + tmpl.format(b=math.sqrt(2 / cv.N), lim=lim)
        return None, why, lim
    if cv.struct in ("per_input", "batched"):
        m = max(1, math.ceil(cv.Q / (rho * rho - cv.b)))
    else:                                                  # non-increasing: bisection, f(lo) > ρ ≥ f(hi)
        lo, hi = 1, 2
        while cv.q(hi) > rho:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if cv.q(mid) <= rho else (mid, hi)
        m = hi
    while m > 1 and cv.q(m - 1) <= rho:                    # rounding of the closed form
        m -= 1
    while cv.q(m) > rho:
        m += 1
    return _capped(cv, m, cap)


def _capped(cv: _Curve, m: int, cap: int | None) -> tuple[int | None, str, float]:
    if cap is not None and m > cap:
        return None, f"needs M′ = {m} inputs, more than max_inputs = {cap}", cv.q(cap)
    return m, "", cv.q(m)


def _exact_first(f: Callable[[int], float], m: int, rho: float) -> int:
    """The M′ proposed by the structure, confirmed with the exact Analysis: f(M′) ≤ ρ < f(M′ − 1)
    (a rounding-level disagreement moves M′ by a step)."""
    for _ in range(64):
        if f(m) > rho:
            m += 1
        elif m > 1 and f(m - 1) <= rho:
            m -= 1
        else:
            return m
    raise RuntimeError(f"planner: the structured search and the exact evaluation disagree near M′ = {m} "
                       "(please report this)")


def _best_within(cv: _Curve, mmax: int, S: int) -> tuple[int, float]:
    """argmin over 1 ≤ M′ ≤ mmax of the curve: an end point for the monotone structures, else a scan of
    M′ ≤ min(mmax, S)."""
    if cv.const is not None:
        return 1, cv.const
    if cv.struct in ("laurent", "scan"):
        upto = min(mmax, S)
        vals = cv.q_many(range(1, upto + 1))
        i = min(range(upto), key=lambda j: (vals[j], j))
        return i + 1, vals[i]
    if cv.rising():
        return 1, cv.q(1)
    return mmax, cv.q(mmax)


def _mmax(budget: float, per: float, cap: int | None) -> int:
    """The most inputs whose cost M′·per stays within the budget (and max_inputs)."""
    m = int(budget // per)
    while (m + 1) * per <= budget:
        m += 1
    while m > 0 and m * per > budget:
        m -= 1
    return min(m, cap) if cap is not None else m


# ---------------------------------------------------------------------------------------------------- plan
def plan(model: nn.Module, data, family: str | ExponentialFamily, *, target: float | Mapping[str, float] | None = None,
         budget: float | None = None, groups: Mapping[str, Iterable[str] | str] | None = None,
         estimators: Iterable[str] | str | None = None, quantile: float = 0.5, max_samples: int = 1024,
         max_inputs: int | None = None, batch_size: int = 64, analysis: Analysis | None = None,
         process_group=None,
         family_params: dict | None = None) -> Plan:
    r"""Which estimator, with how many inputs M′ and labels N per input, per parameter group.

    See the module docstring (THEORY §8, §9, §13).  An option (estimator e, scheme, M′, N) costs
    M′·c_e(N) backward passes; its relative s.e. per entry is the relative root-mean-square error
    against the target T (Σ_m I(θ_i|x_m) in scheme "all", Ī(θ_i) in scheme "iid"), and over a group's
    n entries the ``quantile`` q picks the k-th smallest, k = ⌈q·n⌉.  With a target ρ
    the plan is the cheapest option meeting it; with a budget B, the smallest group relative s.e.
    costing at most B:

    .. math::

        \mathrm{rel}_i = \frac{\sqrt{\Var \hat I(\theta_i) + \mathrm{bias}_i^2}}{T(\theta_i)}, \qquad
        \min_{e, M', N} \; M' c_e(N) \;\; \text{s.t.} \;\; \mathrm{rel}_{(\lceil q n \rceil)} \le \rho
        \qquad \text{or} \qquad
        \min_{e, M', N} \; \mathrm{rel}_{(\lceil q n \rceil)} \;\; \text{s.t.} \;\; M' c_e(N) \le B.

    Every number is exact, computed from the exact moments of the data (:func:`~.api.analyse`).

    Args:
        model: the network; its output h (batch, C) is the family's natural parameter.
        data: the data, in any form :func:`~.api.analyse` takes (not read when ``analysis`` is given).
        family: a family name or :class:`~fishersym.families.ExponentialFamily`.
        target: the relative standard error wanted per group (a float for all groups, or {group:
            float}).  Exactly one of ``target`` and ``budget``.
        budget: backward passes (then the smallest relative s.e. within it); at least the cost of one
            input of the cheapest option.
        groups: {name: [parameter names or module-name prefixes]} (default: one group per module with
            parameters, e.g. a layer's weight and bias together).
        estimators: names from the catalogue (default: all, except ``param_hutchinson`` where its
            P × P cost is large and the empirical ones without labels; both listed in
            ``Plan.not_evaluated`` with how to include them).
        quantile: which order statistic of the group's entries must meet the target (0.5: half of
            them; 1: all); in (0, 1].
        max_samples: largest N (powers of two from 1; default 1024).
        max_inputs: largest M′ (None: unbounded for the monotone estimators; the non-monotone ones are
            scanned up to max(M, 1024)).
        batch_size: inputs per batch of the analysis (:func:`~.api.analyse`; default 64).
        analysis: a precomputed :class:`Analysis` of these data (then ``data`` is not read).
        process_group: under ``torch.distributed`` every rank passes its own shard and gets the plan of
            the concatenated shards (:func:`~.api.analyse`; None: the WORLD group when initialised,
            False: local).
        family_params: parameters of a family given by name.

    Returns:
        Plan: per group (``Plan.groups``) a :class:`GroupPlan` with the ``recommended`` option (None
        when no option meets the target), each estimator's best, the candidates, the cost ladder and
        the input term; ``not_evaluated`` and the ``analysis`` every number comes from.

    Raises:
        ValueError: when neither or both of ``target`` and ``budget`` are given, for an invalid
            ``target`` (also one naming unknown groups or missing some), ``budget`` (not finite, or
            below one input of the cheapest option), ``quantile``, ``max_samples``, ``max_inputs`` or
            ``groups``, an empty list of estimators, an ``analysis`` lacking an estimator or a
            parameter, or a model without trainable parameters.
        TypeError: when ``model`` is not an ``nn.Module`` or ``analysis`` not an :class:`Analysis`.

    Examples:
        >>> import torch, fishersym.estimators as fe
        >>> g = torch.Generator().manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
        >>> x = torch.randn(20, 3, dtype=torch.float64, generator=g)
        >>> p = plan(net, x, fe.families.get("categorical", C=3), budget=100, estimators=["squared_score"])
        >>> r = p.groups["2"].recommended
        >>> r.cost <= 100 and r.meets and r.estimator
        'squared_score'
    """
    if (target is None) == (budget is None):
        raise ValueError("give exactly one of target= (a relative standard error per group, e.g. 0.1) and budget= "
                         "(backward passes), got " + ("neither" if target is None else "both"))
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile <= 1:
        raise ValueError(f"quantile must be a number in (0, 1] (0.5: the group's median entry), got {quantile!r}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ValueError(f"max_samples must be a positive integer, got {max_samples!r}")
    if max_inputs is not None and (isinstance(max_inputs, bool) or not isinstance(max_inputs, int) or max_inputs < 1):
        raise ValueError(f"max_inputs must be a positive integer or None, got {max_inputs!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad=True)")
    fam = resolve_family(family, family_params, model=model, data=data)
    C = analysis.C if analysis is not None else fam.C
    P = sum(p.numel() for p in params.values())
    # estimators, checked before any pass over the data
    not_evaluated: dict[str, str] = {}
    if estimators is None:
        if analysis is not None:
            ests = list(analysis.estimators)
        else:
            M_all, labels = _global_count_labels(data, process_group)
            ests, not_evaluated = _default_estimators(P, M_all, C, labels)
    else:
        if isinstance(estimators, (str, Estimator)):
            estimators = [estimators]
        ests = list(dict.fromkeys(get(e).name for e in estimators))
        if not ests:
            raise ValueError(f"no estimators given; choose from: {', '.join(names())}")
        if analysis is not None:
            missing = [e for e in ests if e not in analysis.estimators]
            if missing:
                raise ValueError(f"the given analysis lacks {missing} (it has {analysis.estimators}); analyse them too")
    # the budget: at least one input of the cheapest option
    if budget is not None:
        cheapest = min(get(e).cost(C, 1) for e in ests)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget):
            raise ValueError(f"budget must be a finite number of backward passes, got {budget!r}")
        if budget < cheapest:
            who = min(ests, key=lambda e: get(e).cost(C, 1))
            raise ValueError(f"budget = {budget:g} backward passes is less than one input of the cheapest option "
                             f"({who}: {cheapest:g} backward passes per input): the minimum budget is {cheapest:g}")
        budget = float(budget)
    # groups
    pnames = list(params)
    if groups is None:
        grp = resolve_groups(model, pnames)
    else:
        if not isinstance(groups, Mapping) or not groups:
            raise ValueError("groups must be a non-empty dict {group name: [parameter names or module prefixes]}")
        res = resolve_groups(model, pnames, groups)
        grp = {g: res[g] for g in groups}
    targets = _check_target(target, list(grp)) if target is not None else None
    # the one pass over the data
    if analysis is None:
        a = analyse(model, data, fam, ests, batch_size=batch_size, process_group=process_group)
    else:
        if not isinstance(analysis, Analysis):
            raise TypeError(f"analysis must be a fishersym.estimators.Analysis, got {type(analysis).__name__}")
        a = analysis
    unknown = [n for m in grp.values() for n in m if n not in a.moments.names]
    if unknown:
        raise ValueError(f"parameters {unknown} are not in the analysis (it has {a.moments.names})")
    return _plan_from(a, grp, ests, targets, budget, quantile, max_samples, max_inputs, not_evaluated)


def _plan_from(a: Analysis, grp: dict[str, list[str]], ests: list[str], targets: dict[str, float] | None,
               budget: float | None, quantile: float, max_samples: int, max_inputs: int | None,
               not_evaluated: dict[str, str]) -> Plan:
    with _one_thread():
        return _plan_core(a, grp, ests, targets, budget, quantile, max_samples, max_inputs, not_evaluated)


def _plan_core(a, grp, ests, targets, budget, quantile, max_samples, max_inputs, not_evaluated) -> Plan:
    ev = _Evaluator(a, grp, quantile)
    M, C = a.M, a.C
    grid = _n_grid(max_samples)
    S = min(max_inputs if max_inputs is not None else max(M, 1024), _SCAN_CAP)
    iq = ev.input_q()
    E = {e: get(e) for e in ests}
    ngrid = {e: (grid if E[e].random_labels else [1]) for e in ests}
    struct = {e: STRUCTURE.get(e, "scan") for e in ests}
    curves: dict[tuple, _Curve] = {}

    def curve(e: str, n: int, g: str) -> _Curve:
        if (e, n, g) not in curves:
            curves[(e, n, g)] = _Curve(ev, e, n, g, struct[e])
        return curves[(e, n, g)]

    def floor_at(g: str, m: int) -> float:
        return math.sqrt(iq[g] / m) if math.isfinite(iq[g]) else math.inf

    def option(g, e, scheme, m, n, rel, meets, reason=""):
        if m is None:
            return Option(e, scheme, None, n, math.nan, rel, meets, E[e].biased, 0.0, reason)
        return Option(e, scheme, m, n, m * E[e].cost(C, n), rel, meets, E[e].biased,
                      floor_at(g, m) if scheme == "iid" else 0.0, reason)

    def exact(o: Option, g: str) -> Option:
        """The option re-evaluated by Analysis.rel_se itself (target mode: confirmed minimal)."""
        m0 = o.m_inputs
        if m0 is None:
            return o

        def f(m: int) -> float:
            return ev.rel(o.estimator, o.n_samples, "iid", m)[g]
        if o.scheme == "iid" and o.meets and targets is not None:
            m = _exact_first(f, m0, targets[g])
            o = option(g, o.estimator, "iid", m, o.n_samples, f(m), True)
        elif o.scheme == "iid":
            o.rel_se = f(m0)
        else:
            o.rel_se = ev.rel(o.estimator, o.n_samples, "all", None)[g]
        return o

    out: dict[str, GroupPlan] = {}
    for g, members in grp.items():
        rho = targets[g] if targets is not None else None
        best: dict[str, Option] = {}
        cands: list[Option] = []
        for e in ests:
            opts: list[Option] = []
            for n in ngrid[e]:
                cv = curve(e, n, g)
                ra = ev.rel(e, n, "all", None)[g]
                if rho is not None:
                    m, why, val = _min_inputs(cv, rho, max_inputs, S)
                    opts.append(option(g, e, "iid", m, n, val, m is not None, why))
                    opts.append(option(g, e, "all", M, n, ra, ra <= rho,
                                       "" if ra <= rho else f"every input once with N = {n}: {ra:.3g} > {rho:g}"))
                else:
                    per = E[e].cost(C, n)
                    mmax = _mmax(budget, per, max_inputs)
                    if mmax >= 1:
                        m, val = _best_within(cv, mmax, S)
                        opts.append(option(g, e, "iid", m, n, val, True))
                    if M * per <= budget:
                        opts.append(option(g, e, "all", M, n, ra, True))
            cands.extend(opts)
            ok = [o for o in opts if o.meets]
            if rho is not None and ok:
                # cheapest by the structure; ties within rounding are settled by the exact values
                ok.sort(key=lambda o: (o.cost, o.rel_se))
                best[e] = exact(Option(**{**ok[0].__dict__}), g)
            elif rho is not None:
                c = min(opts, key=lambda o: (o.rel_se, o.cost))
                iid = [o for o in opts if o.scheme == "iid"]
                why = iid[-1].reason if iid else c.reason
                best[e] = Option(c.estimator, c.scheme, c.m_inputs, c.n_samples, c.cost, c.rel_se, False, c.biased,
                                 c.input_floor, f"{why} (best reachable: {c.rel_se:.3g})")
            elif ok:
                best[e] = exact(Option(**{**min(ok, key=lambda o: (o.rel_se, o.cost)).__dict__}), g)
            else:
                best[e] = Option(e, "iid", None, 1, math.nan, math.nan, False, E[e].biased, 0.0,
                                 f"one input costs {E[e].cost(C, 1):g} backward passes, more than the budget")
        meeting = [o for o in best.values() if o.meets]
        if rho is not None:
            rec = min(meeting, key=lambda o: (o.cost, o.rel_se)) if meeting else None
        else:
            rec = min(meeting, key=lambda o: (o.rel_se, o.cost)) if meeting else None
        notes: list[str] = []
        min_in = None
        if rho is not None and math.isfinite(iq[g]):
            min_in = max(1, math.ceil(iq[g] / (rho * rho)))
            while min_in > 1 and floor_at(g, min_in - 1) <= rho:
                min_in -= 1
            while floor_at(g, min_in) > rho:
                min_in += 1
        if rec is None:
            notes.append("no evaluated option reaches the target" if rho is not None else "nothing fits the budget")
        elif rec.scheme == "iid" and not rec.biased and rec.input_share >= 0.5:
            notes.append(f"input term dominates: {rec.input_share:.0%} of the squared relative s.e. is the input term "
                         f"Var_q I/(M′Ī²), which more labels per input do not reduce"
                         + (f"; at least {min_in} i.i.d. inputs are needed for {rho:g} whatever N"
                            if min_in is not None else ""))
        elif rec.scheme == "all" and not rec.biased and min_in is not None and min_in > M:
            notes.append(f"every input once avoids the input term: drawn i.i.d., no unbiased estimator would reach "
                         f"{rho:g} with fewer than {min_in} inputs (Var_q I/M′, THEORY §8)")
        if rec is not None and rec.biased:
            notes.append("biased (observed labels): its relative s.e. is the relative RMSE including the bias")
        if rec is not None and rec.scheme == "iid" and rec.m_inputs is not None and rec.m_inputs > M:
            notes.append(f"M′ = {rec.m_inputs} > M = {M}: the inputs are drawn with replacement from the M given "
                         "ones (scheme 'iid'); with more distinct inputs from the same distribution the same M′ gives "
                         "the same variance, and a subset drawn without replacement is never worse")
        out[g] = GroupPlan(g, list(members), ev.n[g], rho, rec, best, cands, [], iq[g], min_in, notes)
    p = Plan("target" if targets is not None else "budget", budget, quantile, M, C, grid, ests, not_evaluated, out, a,
             S, max_inputs)
    _fill_ladder(p, ev, ngrid, curve, max_inputs, S)
    return p


def _ladder_costs(p: Plan) -> list[float]:
    """Powers of two from the cheapest input up to max(4·M·(largest cost per input), 2 × the recommended
    costs, the budget), at most 2⁴⁰."""
    cmin = min(get(e).cost(p.C, 1) for e in p.estimators)
    top = 4 * p.M * max(get(e).cost(p.C, 1) for e in p.estimators)
    for gp in p.groups.values():
        if gp.recommended is not None and math.isfinite(gp.recommended.cost):
            top = max(top, 2 * gp.recommended.cost)
    if p.budget is not None:
        top = max(top, p.budget)
    k0 = math.floor(math.log2(cmin))
    k1 = min(math.ceil(math.log2(top)), 40)
    return [float(2 ** k) for k in range(k0, k1 + 1) if 2 ** k >= cmin]


def _fill_ladder(p: Plan, ev: _Evaluator, ngrid, curve, max_inputs, S) -> None:
    """Per group, estimator and cost c on a ladder of powers of two: the smallest relative s.e. of an
    option costing at most c (the budget mode's search at every c, values from the curves)."""
    M, C = p.M, p.C
    for c in _ladder_costs(p):
        for e in p.estimators:
            est = get(e)
            best: dict[str, tuple] = {}
            for n in ngrid[e]:
                per = est.cost(C, n)
                mmax = _mmax(c, per, max_inputs)
                for g in p.groups:
                    cands = []
                    if mmax >= 1:
                        m, val = _best_within(curve(e, n, g), mmax, S)
                        cands.append((val, m * per, "iid", m, n))
                    if M * per <= c:
                        cands.append((ev.rel(e, n, "all", None)[g], M * per, "all", M, n))
                    for cand in cands:
                        if g not in best or cand[:2] < best[g][:2]:
                            best[g] = cand
            for g, (val, cost, scheme, m, n) in best.items():
                p.groups[g].ladder.append({"estimator": e, "budget": c, "rel_se": val, "cost": cost,
                                           "scheme": scheme, "m_inputs": m, "n_samples": n})
