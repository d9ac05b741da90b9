"""The paper's Figure 1 (THEORY §11, paper App. A): natural gradient descent with Î₁ or Î₂.

Set-up (THEORY §11): x ∈ ℝ² ~ N(0, I), a = θ*ᵀx with θ* = (1, 1), no bias.
Regression: y ~ N(a, 1) (Gaussian family, σ² = 1); classification:
y ~ Bernoulli(logistic(a)).  256 training and 4096 test points; NGD

    θ ← θ − lr · ĝ / (Î + δ),

ĝ the gradient of the mean negative log-likelihood of a batch of 4 training
inputs with their *observed* labels, Î the diagonal Fisher of that batch
estimated by Î₁ (squared score) or Î₂ (negative Hessian) from one label
*sampled from the model* per input (THEORY §2), lr = 0.01, 256 epochs.  The
damping δ (default 1e-4) is not in the paper's description: without it one
near-zero Î₁ entry sends θ to infinity; it is recorded in the settings.

For these generalised linear models h = θᵀx, so u_i = x_i and w_i = ∂²h/∂θ_i² = 0:
V₂ ≡ 0 and Î₂ is exact with one sample (THEORY §6.2) — NGD with Î₂ *is* NGD with
the batch's exact Fisher; NGD with Î₁ is noisy, most of all for regression
where N·V₁ = 2‖x_i‖⁴ does not vanish anywhere (THEORY §4).

The training loop runs all seeds at once on the closed forms (score
(t − η)x_i, −∂²ℓ = Σ(h)x_i²) using the family objects' ``sample``/``mean``/
``sigma``; the per-epoch summed variance uses the families' exact
``mquad`` (N·V₁ along u_i = x_i, THEORY §3), and is cross-checked at checkpoint
epochs against ``fishersym.numeric.dataset_stats`` on the equivalent
``nn.Sequential(nn.Linear(2, 1, bias=False))`` (columns ``*_pkg``).

Outputs (``--out``): ``toy_ngd.csv`` (one row per model, estimator, epoch, seed),
``toy_ngd_summary.csv`` (mean and sd over seeds), ``toy_ngd.png`` (test NLL,
trajectory insets), ``toy_ngd_variance.png`` (the paper's Figure I) and
``settings.json``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import families
from .io import output_run, write_csv, write_settings

__all__ = ["ToySettings", "MODELS", "make_data", "ngd_run", "run_toy_ngd", "batch_fisher"]

#: model name → (family name, label)
MODELS = {"regression": ("gaussian", "linear regression (Gaussian)"),
          "classification": ("bernoulli", "logistic regression (Bernoulli)")}
ESTIMATORS = ("I1", "I2")


@dataclass
class ToySettings:
    """Settings of the toy NGD experiment (Figure 1): seeds, epochs, data sizes, step size, models."""
    seed: int = 0
    epochs: int = 256
    n_seeds: int = 5
    n_train: int = 256
    n_test: int = 4096
    batch_size: int = 4
    lr: float = 0.01
    damping: float = 1e-4
    theta_star: tuple = (1.0, 1.0)
    theta0: tuple = (-1.0, 0.0)
    models: tuple = ("regression", "classification")
    check_every: int = 64
    progress: bool | None = None
    notes: dict = field(default_factory=lambda: {
        "estimator samples": "one label sampled from the model per input (N = 1)",
        "gradient": "mean NLL gradient of the batch with the observed labels",
        "damping": "added to the estimated diagonal Fisher (not stated in the paper)",
        "theta0": "common start of every run (not stated in the paper)",
        "variance": "var*_trace: summed label-noise variance of the per-step estimate, "
                    "sum_i (1/B) E_q N*V_k(theta_i|x) over the training inputs (THEORY §8); "
                    "input_var_trace: the common input-sampling term sum_i Var_q I(theta_i|x)/B"})


def make_data(model: str, n: int, theta_star, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x ~ N(0, I₂), labels from the true model θ* (THEORY §11); labels as statistics t(y) (n, 1)."""
    fam = families.get(MODELS[model][0])
    x = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    h = (x @ torch.tensor(theta_star, dtype=torch.float64)).unsqueeze(-1)
    y = fam.sample(h, 1, generator)[0]
    return x, y


def batch_fisher(fam, theta: torch.Tensor, xb: torch.Tensor, estimator: str,
                 generator: torch.Generator) -> torch.Tensor:
    """Î₁ or Î₂ of the diagonal Fisher of a batch (one sampled label per input), closed form.

    theta (S, 2), xb (S, B, 2) → (S, 2).  u_i = x_i, w_i = 0 (THEORY §2, §6.2):
    Î₁ = mean_b ((t_b − η_b) x_bi)², Î₂ = mean_b Σ(h_b) x_bi².
    """
    h = torch.einsum("sbd,sd->sb", xb, theta).unsqueeze(-1)            # (S, B, 1)
    if estimator == "I1":
        t = fam.sample(h, 1, generator)[0]                             # (S, B, 1)
        score = (t - fam.mean(h)) * xb                                 # (S, B, 2)
        return (score * score).mean(1)
    sig = fam.sigma(h)[..., 0, 0].unsqueeze(-1)                        # (S, B, 1)
    return (sig * xb * xb).mean(1)


def _nll(fam, theta: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per run: theta (S, 2), x (M, 2), t (M, 1) → (S,)."""
    h = (theta @ x.T).unsqueeze(-1)                                    # (S, M, 1)
    return -fam.log_prob(t.unsqueeze(0), h).mean(-1)


def _variance_closed(fam, theta: torch.Tensor, x: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
    """Summed per-step variances (S,): label-noise parts of Î₁, Î₂ and the input term (THEORY §3, §8)."""
    h = (theta @ x.T).unsqueeze(-1)                                    # (S, M, 1)
    u = x.unsqueeze(-1).expand(theta.shape[0], *x.shape, 1)            # (S, M, 2, 1)
    nv1 = fam.mquad(h, u)                                              # (S, M, 2)
    fi = fam.sigma_quad(h, u)                                          # (S, M, 2)
    return {"var1_trace": nv1.mean(1).sum(-1) / batch,
            "var2_trace": torch.zeros(theta.shape[0], dtype=theta.dtype),   # w_i = 0 (THEORY §6.2)
            "input_var_trace": fi.var(1, unbiased=False).sum(-1) / batch}


def _variance_pkg(family_name: str, theta: torch.Tensor, x: torch.Tensor, batch: int) -> dict[str, float]:
    """The same variances from ``fishersym.numeric.dataset_stats`` (independent of the closed forms)."""
    from torch import nn
    from ..numeric import dataset_stats
    layer = nn.Linear(2, 1, bias=False)
    lin = nn.Sequential(layer).double()
    with torch.no_grad():
        layer.weight.copy_(theta.reshape(1, 2))
    r = dataset_stats(lin, x, family_name, 1, scheme="iid", m_inputs=batch, progress=False, process_group=False)
    iv = float(r["input_var"]["0.weight"].sum()) / batch
    return {"var1_trace_pkg": float(r["var1"]["0.weight"].sum()) - iv,
            "var2_trace_pkg": float(r["var2"]["0.weight"].sum()) - iv,
            "input_var_trace_pkg": iv}


def ngd_run(model: str, estimator: str, s: ToySettings, data: dict, bar=None) -> list[dict]:
    """NGD for all seeds at once; rows per (epoch, seed) with test NLL, θ and variances."""
    fam_name = MODELS[model][0]
    fam = families.get(fam_name)
    xtr, ttr, xte, tte = data["x_train"], data["t_train"], data["x_test"], data["t_test"]
    S, M, B = s.n_seeds, xtr.shape[0], s.batch_size
    gens = [torch.Generator().manual_seed(s.seed * 1000 + 17 * k + 1) for k in range(S)]
    gsample = torch.Generator().manual_seed(s.seed * 1000 + 7 + ESTIMATORS.index(estimator)
                                            + 2 * list(MODELS).index(model))
    theta = torch.tensor(s.theta0, dtype=torch.float64).repeat(S, 1)
    rows: list[dict] = []

    def record(epoch: int):
        nll = _nll(fam, theta, xte, tte)
        var = _variance_closed(fam, theta, xtr, B)
        check = (epoch % s.check_every == 0) or epoch == s.epochs
        for k in range(S):
            row = {"model": model, "family": fam_name, "estimator": estimator, "epoch": epoch, "seed": s.seed + k,
                   "test_nll": float(nll[k]), "theta1": float(theta[k, 0]), "theta2": float(theta[k, 1]),
                   **{n: float(v[k]) for n, v in var.items()}}
            if check and k == 0:
                row.update(_variance_pkg(fam_name, theta[k], xtr, B))
            rows.append(row)

    record(0)
    n_steps = M // B
    for epoch in range(1, s.epochs + 1):
        perms = torch.stack([torch.randperm(M, generator=g) for g in gens])       # (S, M)
        for step in range(n_steps):
            idx = perms[:, step * B:(step + 1) * B]
            xb, tb = xtr[idx], ttr[idx]                                           # (S, B, 2), (S, B, 1)
            h = torch.einsum("sbd,sd->sb", xb, theta).unsqueeze(-1)
            grad = -((tb - fam.mean(h)) * xb).mean(1)                             # ∇ mean NLL (S, 2)
            fisher = batch_fisher(fam, theta, xb, estimator, gsample)
            theta = theta - s.lr * grad / (fisher + s.damping)
        record(epoch)
        if bar is not None:
            bar.update(1)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sd over seeds per (model, estimator, epoch)."""
    keys = ("test_nll", "theta1", "theta2", "var1_trace", "var2_trace", "input_var_trace")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["estimator"], r["epoch"]), []).append(r)
    out = []
    for (m, e, ep), rs in groups.items():
        row = {"model": m, "estimator": e, "epoch": ep, "n_seeds": len(rs)}
        for k in keys:
            v = torch.tensor([r[k] for r in rs], dtype=torch.float64)
            row[f"{k}_mean"] = float(v.mean())
            row[f"{k}_sd"] = float(v.std(unbiased=False))
            row[f"{k}_min"], row[f"{k}_max"] = float(v.min()), float(v.max())
        out.append(row)
    return out


def headline(summary: list[dict], epochs: int) -> dict[str, dict[str, float]]:
    """Per run (model/estimator): the last epoch's test NLL (mean and sd over seeds) and the summed
    variances V₁, V₂ of the per-step estimate as their MEDIAN over epochs (with the range), not the
    last epoch's value: a single epoch's variance can spike (one seed near a steep region) and is no
    summary of the run."""
    out: dict[str, dict[str, float]] = {}
    runs: dict[str, list[dict]] = {}
    for r in summary:
        runs.setdefault(f"{r['model']}/{r['estimator']}", []).append(r)
    for key, rs in runs.items():
        last = [r for r in rs if r["epoch"] == epochs]
        d: dict[str, float] = {}
        if last:
            d["test_nll_mean"], d["test_nll_sd"] = last[0]["test_nll_mean"], last[0]["test_nll_sd"]
        for k in ("var1_trace", "var2_trace"):
            v = torch.tensor([r[f"{k}_mean"] for r in rs], dtype=torch.float64)
            d[f"{k}_median_over_epochs"] = float(v.median())
            d[f"{k}_min_over_epochs"], d[f"{k}_max_over_epochs"] = float(v.min()), float(v.max())
            d[f"{k}_last_epoch"] = float(last[0][f"{k}_mean"]) if last else float("nan")
        out[key] = d
    return out


def _train_all(s: ToySettings, rows: list[dict]) -> None:
    with tqdm(total=len(s.models) * len(ESTIMATORS) * s.epochs, desc="toy-ngd", unit="epoch",
              disable=s.progress is False if s.progress is not None else None) as bar:
        for mi, model in enumerate(s.models):
            g = torch.Generator().manual_seed(s.seed * 1000 + 101 + mi)
            xtr, ttr = make_data(model, s.n_train, s.theta_star, g)
            xte, tte = make_data(model, s.n_test, s.theta_star, g)
            data = {"x_train": xtr, "t_train": ttr, "x_test": xte, "t_test": tte}
            for est in ESTIMATORS:
                rows += ngd_run(model, est, s, data, bar)


def run_toy_ngd(out: str | Path, settings: ToySettings | None = None, force: bool = False) -> dict:
    """Run the experiment, write CSVs, figures and settings into ``out``; returns the paths and a summary.

    The run is staged (:func:`~fishersym.experiments.io.output_run`, command ``"experiment toy-ngd"``):
    ``out`` holds either its previous complete contents or this complete run, never a mix; an
    existing non-empty ``out`` is replaced only with ``force``.  Returned paths lie in ``out``.
    """
    s = settings or ToySettings()
    if s.epochs < 1 or s.n_seeds < 1 or s.batch_size < 1 or s.n_train < s.batch_size or s.n_test < 1:
        raise ValueError("epochs, seeds, batch size and data sizes must be positive (n_train >= batch size)")
    # issue 13 item 22: θ ← θ − lr·ĝ/(Î + δ) needs Î + δ > 0 for every Î ≥ 0, i.e. δ > 0 (δ = 0 lets one
    # near-zero Î₁ entry send θ to infinity, δ < 0 divides by zero or flips the step); lr > 0 finite.
    if not (isinstance(s.damping, (int, float)) and math.isfinite(s.damping) and s.damping > 0):
        raise ValueError(f"damping must be a finite number > 0 (it is added to the estimated Fisher before "
                         f"dividing; 0 or less lets the step diverge), got {s.damping!r}")
    if not (isinstance(s.lr, (int, float)) and math.isfinite(s.lr) and s.lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {s.lr!r}")
    if s.check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {s.check_every!r}")
    if len(s.theta0) != 2 or not all(math.isfinite(float(t)) for t in s.theta0):
        raise ValueError(f"theta0 must be two finite numbers, got {s.theta0!r}")
    for m in s.models:
        if m not in MODELS:
            raise ValueError(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    started = time.time()
    with output_run(out, "experiment toy-ngd", force=force) as run:
        stage = run.stage
        rows: list[dict] = []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)   # tiny tensors: thread start-up costs more than it saves
        try:
            _train_all(s, rows)
        finally:
            torch.set_num_threads(threads)
        summary = summarise(rows)
        paths = {"csv": write_csv(stage / "toy_ngd.csv", rows),
                 "summary_csv": write_csv(stage / "toy_ngd_summary.csv", summary)}
        from .plots import plot_toy_ngd, plot_toy_variance
        paths["figure"] = plot_toy_ngd(summary, rows, s, stage / "toy_ngd.png")
        paths["variance_figure"] = plot_toy_variance(summary, rows, s, stage / "toy_ngd_variance.png")
        final = headline(summary, s.epochs)
        checks = [r for r in rows if "var1_trace_pkg" in r]
        dev = max((abs(r["var1_trace_pkg"] - r["var1_trace"]) / max(abs(r["var1_trace"]), 1e-300) for r in checks),
                  default=float("nan"))
        max_v2_pkg = max((abs(r["var2_trace_pkg"]) for r in checks), default=float("nan"))
        paths["settings"] = write_settings(stage, "toy-ngd", asdict(s), started, extra={
            "headline": final,
            "package_check": {"max_rel_dev_var1_closed_vs_dataset_stats": dev, "max_abs_var2_dataset_stats": max_v2_pkg,
                              "n_checkpoints": len(checks)},
            "files": {k: Path(v).name for k, v in paths.items()}})
    out = Path(out)
    return {"out": out, "paths": {k: out / Path(v).relative_to(run.stage) for k, v in paths.items()},
            "final": final, "package_check_rel_dev": dev}
