"""The estimator catalogue on real models: predicted accuracy against cost, checked by Monte Carlo,
and the EWC study's ordering explained by the variance split (THEORY §8, §9, §13; issue 10 item 5).

Set-up (recorded in ``settings.json``):

* data: scikit-learn's bundled 8×8 digits (``--data`` reads MNIST from a local file, :mod:`.data`);
  categorical family (softmax logits, C = 10);
* models: the report's MLP (:class:`~fishersym.experiments.report.ReportSettings`: sigmoid,
  64-32-16 hidden, dropout 0.1, Adam lr 1e-2, batch 32) and LeNet-5 adapted to the image size
  (:func:`~fishersym.experiments.architectures.lenet5` with ``input_size`` 8: 3 × 3 kernels, tanh),
  both trained ``epochs`` epochs in float32 and analysed in float64 (eval mode: dropout off);
* **cost table** (``estimators_cost.csv``): on a seeded subset of ``n_analysis`` training inputs,
  :func:`fishersym.estimators.analyse` gives every estimator's exact mean and variance; per layer
  group and for all parameters, the median over entries of the predicted relative s.e.
  √(Var + bias²)/target (:meth:`~fishersym.estimators.Analysis.rel_se`) against the cost in backward
  passes, for scheme "iid" (M' inputs drawn i.i.d. from the subset, M' on ``m_ladder``, N labels or
  probes per input on ``n_samples``) and scheme "all" (every subset input once);
  ``param_hutchinson`` needs the P × P data-set Fisher (M·C·P² flops) and is left out of models with
  more than ``param_hutchinson_max_params`` parameters (stated in the findings);
* **Monte Carlo check** (``estimators_mc.csv``): for each estimator one to three settings
  (:func:`_mc_plan`: scheme "all" on the first ``n_mc_inputs`` subset inputs with N = 1 for every
  estimator with random labels or probes, squared_score also with N = 2; scheme "iid" with
  M' = ``n_mc_inputs`` drawn from the subset for squared_score and every estimator with its own iid
  formula, the deterministic ones included, whose scheme-"all" variance is 0), ``repeats``
  seeded draws of :func:`fishersym.estimators.sample` (autograd of log p, never the closed forms)
  against the predicted exact mean μ_i and variance σ_i² of every parameter entry.  ``neg_hessian``
  draws need one Hessian-vector product per entry, so its check runs on the bias tensors with at
  most ``neg_hessian_max_entries`` entries (the other parameters frozen; the diagonal of those entries
  and its variance are unchanged by freezing the rest).  The test statistics and their tolerance
  are in :func:`mc_check`;
* **EWC ordering** (``estimators_ewc.csv``): on the whole training set (the EWC target Ī), the exact
  Fisher on M' = ``ewc_inputs`` inputs drawn i.i.d. (input term only: Var_q I/M') against one
  sampled label on every input (label term only: E_q v/M) and the batched squared gradient;
  entrywise the exact subset wins iff Var_q I / E_q v < M'/M (THEORY §8).

Outputs: ``estimators_cost.csv``, ``estimators_mc.csv``, ``estimators_mc_entries.csv`` (per-entry
predicted and observed s.e., a seeded sample of entries), ``estimators_ewc.csv``,
``estimators_cost.png``, ``estimators_cost_layers.png``, ``estimators_mc.png``,
``findings.json``/``findings.md`` and ``settings.json``.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import activations as _act_registry
from .. import estimators as fe
from .. import families
from .data import Dataset, load_dataset
from .io import ExperimentError, atomic_write_text, output_run, write_csv, write_json, write_settings
from .mlp import build_mlp, classifier_metrics, group_names, train_epoch

__all__ = ["EstimatorSettings", "run_estimators", "mc_check", "MODELS", "COST_COLUMNS", "MC_COLUMNS",
           "EWC_COLUMNS", "param_groups", "build_model"]

#: model name → description
MODELS = {"mlp": "the report's MLP", "cnn": "LeNet-5 adapted to the image size"}

COST_COLUMNS = ("model", "group", "n_params", "estimator", "labels", "scheme", "m_inputs", "n_samples", "cost",
                "median_rel_se", "biased")
MC_COLUMNS = ("model", "estimator", "scheme", "m_inputs", "n_samples", "repeats", "parameters", "n_entries",
              "n_tested", "n_zero", "predicted_se_median", "observed_se_median", "se_ratio_median",
              "var_ratio", "var_ratio_lo", "var_ratio_hi", "var_ratio_pass", "mean_dev", "mean_dev_lo", "mean_dev_hi",
              "mean_pass", "zero_max_dev", "zero_tol", "zero_pass",
              "sum_ratio", "false_alarm", "passed", "seconds")
EWC_COLUMNS = ("model", "group", "n_params", "option", "estimator", "scheme", "m_inputs", "n_samples", "cost",
               "median_rel_se", "median_input_over_label", "threshold_m_over_M", "fraction_exact_wins")


@dataclass
class EstimatorSettings:
    """Settings of ``fishersym experiment estimators`` (models, data, input ladder, Monte Carlo checks)."""
    seed: int = 0
    models: tuple = ("mlp", "cnn")
    data: str | None = None              # None: sklearn digits; else a path to MNIST
    n_train: int | None = None           # seeded subset of the training set (None: all)
    epochs: int = 10                     # training epochs of both models (the report's 10)
    widths: tuple = (64, 32, 16)         # the report's MLP
    activation: str = "sigmoid"
    dropout: float = 0.1
    lr: float = 1e-2                     # the report's Adam learning rate (MLP)
    cnn_activation: str = "tanh"
    cnn_lr: float = 3e-3
    batch_size: int = 32
    n_analysis: int = 256                # training inputs of the cost table and the iid population of the checks
    m_ladder: tuple = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    n_samples: tuple = (1, 4, 16)
    ewc_inputs: int = 500                # M' of the exact Fisher in the EWC comparison
    ewc_population: int | None = None    # inputs of the EWC target (None: the whole training set)
    n_mc_inputs: int = 16
    repeats: int = 200                   # Monte Carlo draws per check
    false_alarm: float = 1e-6            # per check (all its tests together)
    param_hutchinson_max_params: int = 10000
    neg_hessian_max_entries: int = 32
    threads: int | None = 1              # torch threads during the run (restored after); None: leave as is
    progress: bool | None = None
    choices: dict = field(default_factory=lambda: {
        "family": "categorical (softmax logits), C = number of classes",
        "training": "Adam, cross-entropy, float32, batch batch_size; analysis on a float64 copy in eval mode",
        "cost": "backward passes: (inputs used) x (passes per input), fishersym.estimators.Estimator.cost",
        "relative s.e.": "sqrt(Var + bias^2)/target per entry (0/0 read as 0), median over the group's entries",
        "Monte Carlo": "fishersym.estimators.sample (autograd of log p); exact mean and variance from "
                       "fishersym.estimators.analyse; tolerance: see fishersym.experiments.estimators.mc_check",
        "threads": "torch.set_num_threads(threads) during the run, restored afterwards: the per-draw "
                   "operations are tiny and one thread is several times faster than two on a shared machine",
        "neg_hessian check": "bias tensors with at most neg_hessian_max_entries entries, the rest frozen",
        "EWC": "target: the Fisher of the EWC population; exact over labels on ewc_inputs inputs drawn i.i.d. "
               "(with replacement) vs one sampled label on every input"})

    def validate(self) -> None:
        """Raise an ExperimentError naming the first setting out of range."""
        def posint(name, v, low=1):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ExperimentError(f"{name} must be an integer >= {low}, got {v!r}")

        def posfloat(name, v):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ExperimentError(f"{name} must be a finite number > 0, got {v!r}")
        models = tuple(self.models)
        if not models or any(m not in MODELS for m in models) or len(set(models)) != len(models):
            raise ExperimentError(f"models must be distinct names from {', '.join(MODELS)}, got {self.models!r}")
        for name in ("activation", "cnn_activation"):
            if getattr(self, name) not in _act_registry.names():
                raise ExperimentError(f"{name}: unknown activation {getattr(self, name)!r}; choose from "
                                      f"{', '.join(_act_registry.names())}")
        posint("seed", self.seed, 0)
        posint("epochs", self.epochs, 0)
        for name in ("batch_size", "ewc_inputs", "n_mc_inputs", "param_hutchinson_max_params",
                     "neg_hessian_max_entries"):
            posint(name, getattr(self, name))
        posint("n_analysis", self.n_analysis, 2)
        if self.threads is not None:
            posint("threads", self.threads)
        posint("repeats", self.repeats, 20)
        if self.n_train is not None:
            posint("n_train", self.n_train)
        if self.ewc_population is not None:
            posint("ewc_population", self.ewc_population, 2)
        if self.n_mc_inputs > self.n_analysis:
            raise ExperimentError(f"n_mc_inputs ({self.n_mc_inputs}) must not exceed n_analysis ({self.n_analysis}): "
                                  "the Monte Carlo inputs are the first n_mc_inputs of the analysed subset")
        posfloat("lr", self.lr)
        posfloat("cnn_lr", self.cnn_lr)
        posfloat("false_alarm", self.false_alarm)
        if not self.false_alarm < 0.5:
            raise ExperimentError(f"false_alarm must be in (0, 0.5), got {self.false_alarm!r}")
        if not 0 <= self.dropout < 1:
            raise ExperimentError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.widths:
            raise ExperimentError("widths must name at least one hidden width")
        for name in ("widths", "m_ladder", "n_samples"):
            vals = tuple(getattr(self, name))
            if not vals:
                raise ExperimentError(f"{name} must not be empty")
            for v in vals:
                posint(name, v)
            if name != "widths" and (list(vals) != sorted(set(vals))):
                raise ExperimentError(f"{name} must be strictly increasing, got {vals!r}")
        if 1 not in tuple(self.n_samples):
            raise ExperimentError(f"n_samples must include 1 (the deterministic estimators have N = 1 only), "
                                  f"got {tuple(self.n_samples)!r}")


# ---------------------------------------------------------------------- models
def _image_side(n_features: int) -> int:
    side = int(round(math.sqrt(n_features)))
    if side * side != n_features:
        raise ExperimentError(f"the CNN needs square images; the data have {n_features} features per input "
                              "(not a square number): leave 'cnn' out of models")
    return side


def build_model(name: str, ds: Dataset, s: EstimatorSettings) -> tuple[nn.Module, Callable]:
    """The untrained float32 model and the reshaping of flat inputs (n, d) into its input layout."""
    from .architectures import lenet5
    if name == "mlp":
        return build_mlp(ds.n_features, s.widths, ds.n_classes, s.activation, s.dropout, s.seed), lambda x: x
    side = _image_side(ds.n_features)
    model = lenet5(ds.n_classes, s.cnn_activation, input_size=side, seed=s.seed).float()
    return model, lambda x: x.reshape(x.shape[0], 1, side, side)


def param_groups(model: nn.Module) -> dict[str, list[str]]:
    """{``layer1`` …: [parameter names]}: one group per module holding parameters, in order, plus
    ``all parameters``."""
    mods = [(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    out = {}
    for g, (n, m) in zip(group_names(len(mods)), mods):
        out[g] = [f"{n}.{p}" if n else p for p, _ in m.named_parameters(recurse=False)]
    out["all parameters"] = [n for g in list(out) for n in out[g]]
    return out


def _group_info(model: nn.Module) -> dict[str, str]:
    mods = [(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    return {g: f"{type(m).__name__} '{n}'" for g, (n, m) in zip(group_names(len(mods)), mods)}


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor,
           epochs: int, lr: float, batch_size: int, seed: int) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss = float("nan")
    for _ in range(epochs):
        loss = train_epoch(model, x, y, opt, batch_size, gen)
    nll, acc = classifier_metrics(model, xte, yte)
    model.eval()
    return {"train_loss": loss, "test_nll": nll, "test_acc": acc}


# ---------------------------------------------------------------------- Monte Carlo check
def _flat(d: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([d[n].detach().reshape(-1) for n in names])


def _series_test(values: list[float], target: float, alpha: float) -> tuple[float, float, float, bool]:
    """Mean of R i.i.d. values against ``target``, two-sided with false alarm ``alpha``: returns
    (mean, lo, hi, passed), passed iff lo ≤ mean ≤ hi.

    Studentised mean T = (x̄ − target)/(ŝ/√R).  Its Edgeworth expansion (Hall 1992) for values of
    skewness γ is P(T ≤ x) = Φ(x) + γ(2x² + 1)φ(x)/(6√R) + O(1/R): for γ > 0 the lower tail is heavier
    (the quantile moves down by c = γ(2z² + 1)/(6√R)) and the upper tail lighter.  The interval is
    x̄ ∈ target + [−(z + c₋), z + c₊]·ŝ/√R with z = Φ⁻¹(1 − α/2), c₋ = max(c, 0), c₊ = max(−c, 0): the
    heavier tail widened by the one-term correction, the lighter one left at the normal quantile
    (conservative).  ŝ and γ are estimated from the same draws."""
    v = np.asarray(values, dtype=np.float64)
    R = v.size
    m = float(v.mean())
    sd = float(v.std(ddof=1))
    c = v - m
    gamma = float((c ** 3).mean() / (c.var() ** 1.5)) if c.var() > 0 else 0.0
    z = statistics.NormalDist().inv_cdf(1 - alpha / 2)
    shift = gamma * (2 * z * z + 1) / (6 * math.sqrt(R))
    se = sd / math.sqrt(R)
    lo, hi = target - (z + max(shift, 0.0)) * se, target + (z + max(-shift, 0.0)) * se
    return m, lo, hi, lo <= m <= hi


def mc_check(draw: Callable[[torch.Generator], dict[str, torch.Tensor]], mean: dict[str, torch.Tensor],
             var: dict[str, torch.Tensor], repeats: int, generator: torch.Generator, false_alarm: float = 1e-6,
             names: list[str] | None = None, n_scatter: int = 200) -> tuple[dict, dict]:
    """Compare ``repeats`` seeded draws X_r of an estimator with its predicted exact mean μ and
    variance σ² per parameter entry.

    Entries with σ_i > 1e-10·s_i, s_i = max(|μ_i|, max_j σ_j), are *tested*; for them two i.i.d.
    series over the draws r = 1..R, each with a mean known under the prediction, are tested:

    * Y_r = mean_i (X_ri − μ_i)²/σ_i² (E = 1): ``var_ratio`` = Ȳ, the observed/predicted variance
      ratio averaged over the tested entries (every entry weighs the same);
    * D_r = mean_i (X_ri − μ_i)/σ_i (E = 0): ``mean_dev``, the predicted mean (unbiasedness or exact bias).

    The draws are independent, so each series is i.i.d. whatever the correlation between entries;
    each mean is tested with :func:`_series_test` at α/2 (Bonferroni: false alarm ≤ α =
    ``false_alarm`` per check, up to the Edgeworth approximation).  ``sum_ratio`` = mean_r Σ_i (X_ri −
    μ_i)² / Σ_i σ_i² is reported too but not tested: it is dominated by the few largest-variance
    entries, so its draws are heavy-tailed and a studentised tolerance is unreliable at small R.  The
    other entries (σ_i numerically zero) must satisfy |X_ri − μ_i| ≤ 1e-8·s_i in every draw.

    Returns (record, per-entry data): observed s.e. √(mean_r (X_ri − μ_i)²) and predicted σ_i of up to
    ``n_scatter`` tested entries (a seeded sample) for the scatter plot.
    """
    names = names or list(var)
    mu, s2 = _flat(mean, names), _flat(var, names).clamp_min(0)
    sig = s2.sqrt()
    smax = float(sig.max()) if sig.numel() else 0.0
    scale = torch.maximum(mu.abs(), torch.full_like(mu, smax))
    tested = sig > 1e-10 * scale
    zero = ~tested
    sig_t, s2_t = sig[tested], s2[tested]
    Y, Yp, D = [], [], []
    sq = torch.zeros_like(mu)
    zero_dev = 0.0
    for _ in range(repeats):
        d = _flat(draw(generator), names) - mu
        sq += d * d
        if tested.any():
            dt = d[tested]
            Y.append(float((dt * dt / s2_t).mean()))
            Yp.append(float((dt * dt).sum() / s2_t.sum()))
            D.append(float((dt / sig_t).mean()))
        if zero.any():
            zero_dev = max(zero_dev, float((d[zero].abs() / scale[zero].clamp_min(torch.finfo(mu.dtype).tiny)).max()))
    rec = {"repeats": repeats, "n_entries": int(mu.numel()), "n_tested": int(tested.sum()),
           "n_zero": int(zero.sum()), "false_alarm": false_alarm}
    obs = (sq / repeats).sqrt()
    ok = True
    if Y:
        rec["predicted_se_median"] = float(sig_t.median())
        rec["observed_se_median"] = float(obs[tested].median())
        rec["se_ratio_median"] = float((obs[tested] / sig_t).median())
        rec["sum_ratio"] = float(np.mean(Yp))
        for key, series, target in (("var_ratio", Y, 1.0), ("mean_dev", D, 0.0)):
            m, lo, hi, p = _series_test(series, target, false_alarm / 2)
            rec[key], rec[f"{key}_lo"], rec[f"{key}_hi"] = m, lo, hi
            rec["mean_pass" if key == "mean_dev" else f"{key}_pass"] = p
            ok &= p
    rec["zero_max_dev"], rec["zero_tol"] = zero_dev, 1e-8
    rec["zero_pass"] = zero_dev <= 1e-8
    ok &= bool(rec["zero_pass"])
    rec["passed"] = bool(ok)
    idx = torch.nonzero(tested).reshape(-1)
    if idx.numel() > n_scatter:
        g = torch.Generator().manual_seed(12345)
        idx = idx[torch.randperm(idx.numel(), generator=g)[:n_scatter]]
    entries = {"predicted_se": sig[idx].tolist(), "observed_se": obs[idx].tolist()}
    return rec, entries


def _own_iid_formula(e: str) -> bool:
    """True when the estimator's scheme-"iid" variance is not the generic (Var_q I + L/N)/M' with L the
    per-input average of its "all" label term (it overrides ``label_var_iid`` or ``var_iid``)."""
    cls = type(fe.get(e))
    return (cls.label_var_iid is not fe.Estimator.label_var_iid) or (cls.var_iid is not fe.Estimator.var_iid)


def _mc_plan(ests: list[str], n_mc: int) -> list[tuple[str, str, int, int]]:
    """(estimator, scheme, M', N) of the Monte Carlo checks: scheme "all" with N = 1 for every estimator
    with random labels or probes (squared_score also with N = 2: the 1/N law); scheme "iid" with
    M' = ``n_mc`` for squared_score (the generic input-plus-label split) and for every estimator with its
    own iid formula (the batched ones, param_hutchinson, exact_over_labels, the empirical ones)."""
    plan = []
    for e in ests:
        if fe.get(e).random_labels:
            plan.append((e, "all", n_mc, 1))
            if e == "squared_score":
                plan.append((e, "all", n_mc, 2))
        if e != "neg_hessian" and (e == "squared_score" or not fe.get(e).random_labels or _own_iid_formula(e)):
            plan.append((e, "iid", n_mc, 1))
    return plan


def _restricted_copy(model: nn.Module, max_entries: int) -> tuple[nn.Module, list[str]]:
    """A copy whose trainable parameters are the bias tensors with at most ``max_entries`` entries."""
    m = copy.deepcopy(model)
    keep = []
    for n, p in m.named_parameters():
        ok = n.split(".")[-1] == "bias" and p.numel() <= max_entries
        p.requires_grad_(ok)
        if ok:
            keep.append(n)
    if not keep:
        raise ExperimentError(f"no bias tensor has at most neg_hessian_max_entries = {max_entries} entries; "
                              "raise neg_hessian_max_entries")
    return m, keep


# ---------------------------------------------------------------------- one model
def _analyse_model(name: str, model: nn.Module, shape: Callable, ds: Dataset, s: EstimatorSettings,
                   bar) -> dict:
    fam = families.get("categorical", C=ds.n_classes)
    m64 = copy.deepcopy(model).double().eval()
    P = sum(p.numel() for p in m64.parameters())
    groups = param_groups(m64)
    xtr = shape(torch.from_numpy(ds.x_train).double())
    ytr = torch.from_numpy(ds.y_train)
    rng = np.random.default_rng(s.seed + 1)
    M_tr = len(ytr)
    n_a = min(s.n_analysis, M_tr)
    idx = torch.from_numpy(np.sort(rng.choice(M_tr, size=n_a, replace=False)))
    xa, ya = xtr[idx], ytr[idx]
    excluded = {}
    ests = []
    for e in fe.names():
        if e == "param_hutchinson" and P > s.param_hutchinson_max_params:
            excluded[e] = (f"P = {P} parameters > param_hutchinson_max_params = {s.param_hutchinson_max_params}: "
                           f"its variance needs the P x P data-set Fisher ({P * P * 8 / 2 ** 30:.1f} GiB in float64, "
                           f"M*C*P^2 = {n_a * ds.n_classes * P * P:.2g} flops on {n_a} inputs)")
            continue
        ests.append(e)
    timing = {}
    t0 = time.time()
    a = fe.analyse(m64, (xa, ya), fam, ests, process_group=False)
    timing["analyse"] = time.time() - t0
    bar.update(1)

    # -- cost table (fishersym.estimators.table: median relative s.e. per group)
    rows = []
    n_params = {g: sum(dict(m64.named_parameters())[p].numel() for p in members) for g, members in groups.items()}

    def add(tab):
        for r in tab:
            rows.append({"model": name, "group": r["group"], "n_params": n_params[r["group"]],
                         "estimator": r["estimator"], "labels": fe.get(r["estimator"]).labels,
                         "scheme": r["scheme"], "m_inputs": r["m_inputs"], "n_samples": r["n_samples"],
                         "cost": r["cost"], "median_rel_se": r["median_rel_se"], "biased": r["biased"]})
    for N in s.n_samples:
        for m in s.m_ladder:
            add(fe.table(a, N, "iid", int(m), groups))
        add(fe.table(a, N, "all", None, groups))

    # -- EWC ordering on the whole training set (or a seeded subset of it)
    t0 = time.time()
    if s.ewc_population is not None and s.ewc_population < M_tr:
        eidx = torch.from_numpy(np.sort(np.random.default_rng(s.seed + 2).choice(M_tr, s.ewc_population,
                                                                                  replace=False)))
        xe = xtr[eidx]
    else:
        xe = xtr
    ae = fe.analyse(m64, xe, fam, ["squared_score", "batched_squared_gradient", "exact_over_labels"],
                    process_group=False)
    ewc_rows, ewc = _ewc(name, ae, groups, n_params, s, ds.n_classes)
    timing["ewc"] = time.time() - t0
    bar.update(1)

    # -- Monte Carlo checks
    t0 = time.time()
    xm, ym = xa[:s.n_mc_inputs], ya[:s.n_mc_inputs]
    random_ests = [e for e in ests if fe.get(e).random_labels and e != "neg_hessian"]
    a_mc = fe.analyse(m64, (xm, ym), fam, random_ests, process_group=False) if random_ests else None
    m_nh, nh_names = _restricted_copy(m64, s.neg_hessian_max_entries)
    a_nh = fe.analyse(m_nh, (xm, ym), fam, ["neg_hessian"], process_group=False)
    mc_rows, scatter = [], []
    for k, (e, scheme, mp, N) in enumerate(_mc_plan(ests, s.n_mc_inputs)):
        gen = torch.Generator().manual_seed(s.seed * 100003 + 1009 * (list(MODELS).index(name) + 1) + k)
        t1 = time.time()
        if scheme == "all":
            if e == "neg_hessian":
                net, an, pnames = m_nh, a_nh, nh_names
            else:
                net, an, pnames = m64, a_mc, list(groups["all parameters"])

            def draw(g, e=e, N=N, net=net):
                return fe.sample(net, (xm, ym), fam, e, N, generator=g)
            mean, var = an.mean(e, "all"), an.variance(e, N, "all")
        else:
            pnames = list(groups["all parameters"])

            def draw(g, e=e, N=N, mp=mp):
                j = torch.randint(0, xa.shape[0], (mp,), generator=g)
                d = fe.sample(m64, (xa[j], ya[j]), fam, e, N, generator=g)
                return {n: v / mp for n, v in d.items()}
            mean, var = a.mean(e, "iid", mp), a.variance(e, N, "iid", mp)
        rec, ent = mc_check(draw, mean, var, s.repeats, gen, s.false_alarm, names=pnames)
        rec = {"model": name, "estimator": e, "scheme": scheme, "m_inputs": mp, "n_samples": N,
               "parameters": f"biases with <= {s.neg_hessian_max_entries} entries ({' '.join(nh_names)})"
               if e == "neg_hessian" else "all", **rec, "seconds": time.time() - t1}
        mc_rows.append(rec)
        for p_, o_ in zip(ent["predicted_se"], ent["observed_se"]):
            scatter.append({"model": name, "estimator": e, "scheme": scheme, "n_samples": N,
                            "predicted_se": p_, "observed_se": o_})
        bar.update(1)
    timing["monte_carlo"] = time.time() - t0
    return {"rows": rows, "ewc_rows": ewc_rows, "ewc": ewc, "mc_rows": mc_rows, "scatter": scatter,
            "excluded": excluded, "estimators": ests, "n_params": P, "groups": groups,
            "group_info": _group_info(m64), "analysed": n_a, "ewc_population": int(xe.shape[0]),
            "timing": timing, "neg_hessian_parameters": nh_names, "inputs": (xa, ya)}


def _median(t: torch.Tensor) -> float:
    return float(t.median()) if t.numel() else float("nan")


def _ewc(name: str, ae, groups: dict, n_params: dict, s: EstimatorSettings, C: int) -> tuple[list[dict], dict]:
    """The EWC study's comparison (THEORY §8): exact over labels on M' i.i.d. inputs (Var_q I/M')
    against one sampled label on every input (Σ_m v_m / (Σ_m I_m)² relative, i.e. E_q v/M over Ī²)."""
    mom = ae.moments
    M, Mp = ae.M, s.ewc_inputs
    n_eq = max(1, round(C * Mp / M))
    options = [(f"exact_over_labels on M' = {Mp} inputs drawn i.i.d.", "exact_over_labels", "iid", Mp, 1),
               ("squared_score, N = 1 on every input", "squared_score", "all", None, 1),
               (f"squared_score, N = {n_eq} on every input (about the same cost)", "squared_score", "all", None, n_eq),
               ("batched_squared_gradient, N = 1 on every input", "batched_squared_gradient", "all", None, 1)]
    rel = {o[0]: ae.rel_se(o[1], o[4], o[2], o[3]) for o in options}
    label = {n: mom.v1_sum[n] / M for n in mom.names}            # E_q v (one label)
    ratio = {n: mom.I_var[n] / label[n] for n in mom.names}      # input term / label term
    ex, ss = rel[options[0][0]], rel[options[1][0]]
    rows, summary = [], {}
    for g, members in groups.items():
        def cat(d: dict[str, torch.Tensor], members: list[str] = members) -> torch.Tensor:
            return torch.cat([d[n].reshape(-1) for n in members])
        pos = cat(label) > 0
        r = cat(ratio)[pos]
        wins = cat(ex) < cat(ss)
        frac = float(wins.double().mean())
        for opt, e, scheme, mi, N in options:
            rows.append({"model": name, "group": g, "n_params": n_params[g], "option": opt, "estimator": e,
                         "scheme": scheme, "m_inputs": M if mi is None else mi, "n_samples": N,
                         "cost": ae.cost(e, N, scheme, mi), "median_rel_se": _median(cat(rel[opt])),
                         "median_input_over_label": _median(r), "threshold_m_over_M": Mp / M,
                         "fraction_exact_wins": frac})
        summary[g] = {"median_rel_se": {opt: _median(cat(rel[opt])) for opt, *_ in options},
                      "median_input_over_label": _median(r), "fraction_exact_wins": frac,
                      "median_input_term": _median(cat(mom.I_var)), "median_label_term": _median(cat(label))}
    return rows, {"M": M, "M_prime": Mp, "threshold": Mp / M, "n_equal_cost": n_eq, "groups": summary,
                  "cost": {opt: ae.cost(e, N, scheme, mi) for opt, e, scheme, mi, N in options}}


# ---------------------------------------------------------------------- figures
def _styles(ests: list[str]) -> dict[str, dict]:
    """One colour per catalogue entry (tab10 and black), dashed for the biased estimators."""
    import matplotlib.pyplot as plt
    colours = [plt.get_cmap("tab10")(k) for k in range(10)] + ["k"]
    order = fe.names()
    return {e: {"color": colours[order.index(e) % len(colours)], "ls": "--" if fe.get(e).biased else "-"}
            for e in ests}


def plot_cost(rows: list[dict], models: list[str], path, group: str = "all parameters", per_layer: dict | None = None,
              title: str = "", ncol: int = 3) -> Path:
    """Relative s.e. against cost (log–log): one line per estimator (scheme iid, N = 1, M' on the ladder),
    dots for scheme all (N = 1); one panel per model, or with ``per_layer`` ({model: [groups]}) one
    panel per model and group, ``ncol`` panels a row, each model starting a new row."""
    from . import plots  # noqa: F401  (selects the Agg backend)
    import matplotlib.pyplot as plt
    from .io import save_figure
    if per_layer:
        cells, row0 = [], 0
        for m in models:
            gs = per_layer[m]
            cells += [(m, g, row0 + k // ncol, k % ncol) for k, g in enumerate(gs)]
            row0 += -(-len(gs) // ncol)
        nrow, ncols = row0, min(ncol, max(len(per_layer[m]) for m in models))
    else:
        cells = [(m, group, 0, k) for k, m in enumerate(models)]
        nrow, ncols = 1, len(models)
    fig, axes = plt.subplots(nrow, ncols, figsize=(4.6 * ncols, 3.6 * nrow + 1.2), squeeze=False)
    ests = list(dict.fromkeys(r["estimator"] for r in rows))
    sty = _styles(ests)
    for ax in axes.flat:
        ax.set_visible(False)
    for m, g, i, j in cells:
        ax = axes[i, j]
        ax.set_visible(True)
        sel = [r for r in rows if r["model"] == m and r["group"] == g and r["n_samples"] == 1]
        for e in ests:
            line = sorted((r for r in sel if r["estimator"] == e and r["scheme"] == "iid"), key=lambda r: r["cost"])
            pts = [(r["cost"], r["median_rel_se"]) for r in line
                   if r["median_rel_se"] > 0 and math.isfinite(r["median_rel_se"])]
            if pts:
                ax.plot(*zip(*pts), lw=1.3, label=e, **sty[e])
            for r in sel:
                if r["estimator"] == e and r["scheme"] == "all" and r["median_rel_se"] > 0:
                    ax.plot(r["cost"], r["median_rel_se"], "o", ms=4, color=sty[e]["color"])
        ax.set_xscale("log")
        ax.set_yscale("log")
        n = next((r["n_params"] for r in sel), 0)
        ax.set_title(f"{m}: {g} ({int(n)} params)", fontsize=9)
        ax.set_xlabel("cost (backward passes)", fontsize=8)
        ax.set_ylabel("median relative s.e.", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
    h, lab = [], []
    for ax in axes.flat:
        for hh, ll in zip(*ax.get_legend_handles_labels()):
            if ll not in lab:
                h.append(hh)
                lab.append(ll)
    legend_h = 0.9 / (3.6 * nrow + 1.2)
    fig.tight_layout(rect=(0, legend_h + 0.02, 1, 1 - 0.45 / (3.6 * nrow + 1.2)))
    fig.legend(h, lab, loc="lower center", ncol=4, fontsize=7.5)
    fig.suptitle(title or "Predicted relative s.e. (rms error / target, median over entries) against cost. Lines: M' "
                 "inputs drawn i.i.d., one label or probe each; dots: every analysed input once "
                 "(exact_over_labels: 0); dashed: biased", fontsize=8.5)
    return save_figure(fig, path)


def plot_mc(scatter: list[dict], mc_rows: list[dict], models: list[str], path) -> Path:
    """Predicted against observed s.e. per parameter entry (log–log, diagonal y = x), one panel per model."""
    from . import plots  # noqa: F401
    import matplotlib.pyplot as plt
    from .io import save_figure
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.6), squeeze=False)
    ests = list(dict.fromkeys(r["estimator"] for r in scatter))
    sty = _styles(ests)
    for ax, m in zip(axes[0], models):
        sel = [r for r in scatter if r["model"] == m and r["predicted_se"] > 0 and r["observed_se"] > 0]
        for e in ests:
            pts = [(r["predicted_se"], r["observed_se"]) for r in sel if r["estimator"] == e]
            if pts:
                ax.plot(*zip(*pts), ".", ms=2.5, alpha=0.5, color=sty[e]["color"], label=e)
        if sel:
            lo = min(min(r["predicted_se"], r["observed_se"]) for r in sel)
            hi = max(max(r["predicted_se"], r["observed_se"]) for r in sel)
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        rs = [r for r in mc_rows if r["model"] == m]
        npass = sum(bool(r["passed"]) for r in rs)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("predicted s.e. √Var (exact)")
        ax.set_ylabel(f"observed s.e. ({int(rs[0]['repeats']) if rs else '?'} draws)")
        ax.set_title(f"{m}: {npass}/{len(rs)} checks pass", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, markerscale=3, loc="upper left")
    fig.suptitle("Monte Carlo check: observed against predicted standard error per parameter entry", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------- findings
def _cheapest(rows: list[dict], model: str, group: str, target: float) -> dict | None:
    ok = [r for r in rows if r["model"] == model and r["group"] == group and r["median_rel_se"] <= target
          and not r["biased"] and r["scheme"] == "iid"]
    return min(ok, key=lambda r: (r["cost"], r["median_rel_se"])) if ok else None


def findings(res: dict, s: EstimatorSettings) -> dict:
    out: dict[str, Any] = {"models": {}}
    for name, r in res.items():
        rows = r["rows"]
        mc = r["mc_rows"]
        per_est = {}
        for e in r["estimators"]:
            sel = [x for x in rows if x["model"] == name and x["group"] == "all parameters" and x["estimator"] == e
                   and x["n_samples"] == 1]
            iid = {int(x["m_inputs"]): x["median_rel_se"] for x in sel if x["scheme"] == "iid"}
            all_ = next((x["median_rel_se"] for x in sel if x["scheme"] == "all"), float("nan"))
            best = _cheapest([x for x in rows if x["estimator"] == e], name, "all parameters", 0.1)
            per_est[e] = {"rel_se_iid_N1": iid, "rel_se_all_N1": all_,
                          "cheapest_10pct": None if best is None else
                          {"m_inputs": best["m_inputs"], "n_samples": best["n_samples"], "cost": best["cost"],
                           "rel_se": best["median_rel_se"]}}
        big = max(s.m_ladder)
        b = [x for x in rows if x["model"] == name and x["group"] == "all parameters"
             and x["estimator"] == "batched_squared_gradient" and x["scheme"] == "iid" and x["m_inputs"] == big]
        out["models"][name] = {
            "n_params": r["n_params"], "training": r["training"], "analysed_inputs": r["analysed"],
            "excluded": r["excluded"], "estimators": per_est,
            "cheapest_unbiased_10pct": _cheapest(rows, name, "all parameters", 0.1),
            "batched_rel_se_at_largest_M": {int(x["n_samples"]): x["median_rel_se"] for x in b},
            "mc_checks": len(mc), "mc_passed": sum(bool(x["passed"]) for x in mc),
            "mc_failed": [f"{x['estimator']} ({x['scheme']}, N={x['n_samples']})" for x in mc if not x["passed"]],
            "ewc": r["ewc"], "neg_hessian_check_parameters": r["neg_hessian_parameters"]}
    out["all_mc_checks_pass"] = all(not m["mc_failed"] for m in out["models"].values())
    return out


def _pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.3g}%"


def findings_markdown(f: dict, s: EstimatorSettings, ds: dict) -> str:
    L = ["# Estimators experiment: findings of this run", "",
         f"Data: {ds['name']} ({ds['n_train']} train / {ds['n_test']} test), categorical family, seed {s.seed}; "
         f"{s.epochs} training epochs. Relative s.e. = rms error / target per parameter entry, median over "
         "all parameters; cost in backward passes. Every number below is exact (closed forms over the "
         "analysed inputs) except the Monte Carlo columns.", ""]
    for name, m in f["models"].items():
        tr = m["training"]
        L += [f"## {name}: {MODELS[name]} ({m['n_params']} parameters; test accuracy {tr['test_acc']:.3f})", ""]
        for e, why in m["excluded"].items():
            L.append(f"* **{e} left out**: {why}.")
        L += ["", f"Predicted relative s.e., one label (probe) per input, {m['analysed_inputs']} analysed inputs:", "",
              "| estimator | M' = 16 (iid) | M' = 256 (iid) | every analysed input | cheapest to ≤ 10% (M', N, cost) |",
              "|---|---|---|---|---|"]
        for e, d in m["estimators"].items():
            c = d["cheapest_10pct"]
            cs = "not on the ladder" if c is None else f"{c['m_inputs']}, {c['n_samples']}, {c['cost']:.3g}"
            L.append(f"| {e}{' (biased)' if fe.get(e).biased else ''} | {_pct(d['rel_se_iid_N1'].get(16))} | "
                     f"{_pct(d['rel_se_iid_N1'].get(256))} | {_pct(d['rel_se_all_N1'])} | {cs} |")
        b = m["batched_rel_se_at_largest_M"]
        if b:
            rels = ", ".join(f"N={n}: {_pct(v)}" for n, v in b.items())
            limits = ", ".join(f"{_pct(math.sqrt(2 / n))}" for n in b)
            L += ["", f"batched_squared_gradient at the largest M' = {max(s.m_ladder)}: relative s.e. {rels} "
                      f"(limit √(2/N): {limits})."]
        L += ["", f"Monte Carlo check: **{m['mc_passed']}/{m['mc_checks']} checks pass** "
              f"({s.repeats} draws each, false alarm ≤ {s.false_alarm:g} per check; neg_hessian on "
              f"{', '.join(m['neg_hessian_check_parameters'])})."
              + (f" FAILED: {', '.join(m['mc_failed'])}." if m["mc_failed"] else "")
              + " Per check, over the draws r: the mean of Y_r = mean_i (X_ri − μ_i)²/σ_i² (observed / predicted "
              "variance, expected 1) and of D_r = mean_i (X_ri − μ_i)/σ_i (expected 0) must each lie in the "
              "studentised-mean interval at false alarm α/2 (normal quantile, Edgeworth-widened on the heavier "
              "tail); entries with predicted variance 0 must not move (mc_check).", ""]
        ew = m["ewc"]
        g = ew["groups"]["all parameters"]
        rs = g["median_rel_se"]
        opts = list(rs)
        L += [f"EWC ordering on {ew['M']} training inputs (target: their mean Fisher Ī):", "",
              "| option | cost | median relative s.e. |", "|---|---|---|"]
        for o in opts:
            L.append(f"| {o} | {ew['cost'][o]:.4g} | {_pct(rs[o])} |")
        holds = rs[opts[0]] < rs[opts[1]]
        r_med = g["median_input_over_label"]
        C_ = ew["cost"][opts[0]] / ew["M_prime"]          # passes per input of the exact Fisher (C)
        L += ["", f"* The EWC study's ordering (exact Fisher on {ew['M_prime']} inputs beats one sampled label on "
              f"every input) **{'holds' if holds else 'does not hold'}** here for the median parameter, and for "
              f"{_pct(g['fraction_exact_wins'])} of the parameter entries.",
              f"* Why (THEORY §8): both estimate Ī. The exact subset has no label noise, only the input term "
              f"Var_q I / M'; one label on every input has no input noise (all M inputs are used), only the label "
              f"term E_q v / M. The exact subset wins for an entry iff Var_q I / E_q v < M'/M = {ew['threshold']:.3g}. "
              f"Per input, one label's noise E_q v is {1 / r_med:.3g}× the spread Var_q I of I over inputs (median "
              f"entry; input term {g['median_input_term']:.3g}, label term {g['median_label_term']:.3g}): the label "
              f"noise dominates per input, but one label on every input averages it over M = {ew['M']} inputs and "
              f"the exact subset over only M' = {ew['M_prime']}, so the exact subset wins iff that factor exceeds "
              f"M/M' = {1 / ew['threshold']:.3g}; here it {'does' if holds else 'does not'}. The exact subset matches "
              f"one label on every input from M' ≈ M·Var_q I/E_q v = {ew['M'] * r_med:.0f} inputs (median entry; "
              f"cost {C_ * ew['M'] * r_med:.3g} passes against {ew['M']}); with more inputs per task (larger M) "
              "one label on every input improves as 1/M while a fixed-size exact subset does not.",
              f"* At about equal cost, {opts[2].split(',')[0]} with N = {ew['n_equal_cost']} on every input (cost "
              f"{ew['cost'][opts[2]]:.4g}) has median relative s.e. {_pct(rs[opts[2]])} against the exact subset's "
              f"{_pct(rs[opts[0]])} (cost {ew['cost'][opts[0]]:.4g}): "
              f"{'more labels on every input win' if rs[opts[2]] < rs[opts[0]] else 'the exact subset still wins'}.",
              f"* The batched squared gradient over all inputs (one draw) has median relative s.e. "
              f"{_pct(rs[opts[3]])}: the cross term 2[(Σ I)² − Σ I²] keeps it near √2 however many inputs.",
              "", "| group | Var_q I / E_q v (median) | exact subset wins (share of entries) |", "|---|---|---|"]
        for grp, d in ew["groups"].items():
            L.append(f"| {grp} | {d['median_input_over_label']:.3g} | {_pct(d['fraction_exact_wins'])} |")
        L.append("")
    L.append(f"All Monte Carlo checks pass: **{'yes' if f['all_mc_checks_pass'] else 'NO'}**.")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------- run
def run_estimators(out: str | Path, settings: EstimatorSettings | None = None, force: bool = False,
                   dataset: Dataset | None = None) -> dict:
    """Train the models, write the cost table, the Monte Carlo checks, the EWC comparison, figures,
    findings and settings into ``out`` (see the module docstring).

    Staged like every experiment (:func:`~fishersym.experiments.io.output_run`, command
    ``"experiment estimators"``); settings and data are validated before ``out`` is touched.
    Returns the paths (in ``out``), the CSV rows, the findings (dict and Markdown), the trained
    float32 models and each model's analysed inputs (x, y) in its input layout.
    """
    s = settings or EstimatorSettings()
    s.validate()
    started = time.time()
    ds = dataset if dataset is not None else load_dataset(s.data, seed=s.seed, n_train=s.n_train)
    if "cnn" in s.models:
        _image_side(ds.n_features)
    threads = torch.get_num_threads()
    try:
        if s.threads is not None:
            torch.set_num_threads(s.threads)
        return _run(out, s, force, ds, started)
    finally:
        torch.set_num_threads(threads)


def _run(out, s: EstimatorSettings, force: bool, ds: Dataset, started: float) -> dict:
    with output_run(out, "experiment estimators", force=force) as run:
        stage = run.stage
        res = {}
        n_steps = sum(3 + len(_mc_plan(fe.names(), s.n_mc_inputs)) for _ in s.models)
        bar = tqdm(total=n_steps, desc="estimators", unit="step",
                   disable=s.progress is False if s.progress is not None else None)
        xtr, ytr = torch.from_numpy(ds.x_train).float(), torch.from_numpy(ds.y_train)
        xte, yte = torch.from_numpy(ds.x_test).float(), torch.from_numpy(ds.y_test)
        for name in s.models:
            t0 = time.time()
            model, shape = build_model(name, ds, s)
            torch.manual_seed(s.seed)
            training = _train(model, shape(xtr), ytr, shape(xte), yte, s.epochs,
                              s.lr if name == "mlp" else s.cnn_lr, s.batch_size, s.seed)
            bar.update(1)
            t_train = time.time() - t0
            r = _analyse_model(name, model, shape, ds, s, bar)
            r["training"], r["model"] = training, model
            r["timing"]["train"] = t_train
            res[name] = r
        bar.close()
        rows = [x for r in res.values() for x in r["rows"]]
        mc_rows = [x for r in res.values() for x in r["mc_rows"]]
        paths = {"cost_csv": write_csv(stage / "estimators_cost.csv", rows, COST_COLUMNS),
                 "mc_csv": write_csv(stage / "estimators_mc.csv", mc_rows, MC_COLUMNS),
                 "mc_entries_csv": write_csv(stage / "estimators_mc_entries.csv",
                                             [x for r in res.values() for x in r["scatter"]]),
                 "ewc_csv": write_csv(stage / "estimators_ewc.csv", [x for r in res.values() for x in r["ewc_rows"]],
                                      EWC_COLUMNS)}
        models = list(s.models)
        paths["figure"] = plot_cost(rows, models, stage / "estimators_cost.png")
        paths["layers_figure"] = plot_cost(rows, models, stage / "estimators_cost_layers.png",
                                           per_layer={m: list(res[m]["groups"]) for m in models},
                                           title="Predicted relative s.e. against cost per layer group (lines: "
                                                 "M' inputs drawn i.i.d., N = 1; dots: every analysed input once; "
                                                 "dashed: biased)")
        paths["mc_figure"] = plot_mc([x for r in res.values() for x in r["scatter"]], mc_rows, models,
                                     stage / "estimators_mc.png")
        f = findings(res, s)
        paths["findings"] = write_json(stage / "findings.json", f)
        md = findings_markdown(f, s, ds.summary())
        paths["findings_md"] = atomic_write_text(stage / "findings.md", md)
        paths["settings"] = write_settings(stage, "estimators", asdict(s), started, extra={
            "dataset": ds.summary(),
            "models": {m: {"description": MODELS[m], "n_params": res[m]["n_params"], "groups": res[m]["groups"],
                           "group_modules": res[m]["group_info"], "excluded": res[m]["excluded"],
                           "analysed_inputs": res[m]["analysed"], "ewc_population": res[m]["ewc_population"],
                           "neg_hessian_check_parameters": res[m]["neg_hessian_parameters"],
                           "training": res[m]["training"], "timing_s": res[m]["timing"]} for m in models},
            "all_mc_checks_pass": f["all_mc_checks_pass"],
            "files": {k: Path(v).name for k, v in paths.items()}})
    out = Path(out)
    return {"out": out, "paths": {k: out / Path(v).relative_to(run.stage) for k, v in paths.items()},
            "rows": rows, "mc_rows": mc_rows, "findings": f, "findings_md": md, "dataset": ds,
            "models": {m: res[m]["model"] for m in models}, "analysis_inputs": {m: res[m]["inputs"] for m in models}}
