"""Figures of the experiments (matplotlib, Agg backend, PNG written atomically).

* :func:`plot_toy_ngd` — paper Figure 1: test NLL per epoch for NGD with Î₁ and Î₂
  (mean ± sd over seeds), parameter trajectories as an inset (THEORY §11);
* :func:`plot_toy_variance` — paper Figure I: the summed estimator variance per epoch;
* :func:`plot_mlp_grid` — paper Figure 2: per layer, top row Fisher, √V₁, √V₂ and the
  square roots of their upper bounds (log scale), bottom row log(bound / variance);
* :func:`plot_mlp_training` — training loss and test accuracy of the MLP.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

if os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .io import save_figure

__all__ = ["plot_toy_ngd", "plot_toy_variance", "plot_mlp_grid", "plot_mlp_training"]

COLORS = {"I1": "tab:blue", "I2": "tab:orange"}
LABELS = {"I1": "Î₁ (squared score)", "I2": "Î₂ (negative Hessian)"}


def _series(summary, model, est, key, stat="mean"):
    rs = sorted((r for r in summary if r["model"] == model and r["estimator"] == est), key=lambda r: r["epoch"])
    return [r["epoch"] for r in rs], [r[f"{key}_{stat}"] for r in rs], [r[f"{key}_sd"] for r in rs]


def plot_toy_ngd(summary, rows, s, path) -> Path:
    """Test NLL over epochs for both estimators per model, trajectories as an inset."""
    from .toy_ngd import ESTIMATORS, MODELS
    fig, axes = plt.subplots(1, len(s.models), figsize=(6.2 * len(s.models), 4.4), squeeze=False)
    for ax, model in zip(axes[0], s.models):
        for est in ESTIMATORS:
            ep, m, _ = _series(summary, model, est, "test_nll")
            _, lo, _ = _series(summary, model, est, "test_nll", "min")
            _, hi, _ = _series(summary, model, est, "test_nll", "max")
            ax.plot(ep, m, color=COLORS[est], label=f"NGD with {LABELS[est]}", lw=1.4)
            ax.fill_between(ep, lo, hi, color=COLORS[est], alpha=0.25, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test negative log-likelihood")
        ax.set_title(f"{MODELS[model][1]}\n(mean, band: min–max over {s.n_seeds} seeds)", fontsize=10)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_yscale("log")
        ax.set_xlim(0, s.epochs)
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
        ins = ax.inset_axes([0.45, 0.28, 0.33, 0.38])
        for est in ESTIMATORS:
            for seed in sorted({r["seed"] for r in rows}):
                rs = sorted((r for r in rows if r["model"] == model and r["estimator"] == est and r["seed"] == seed),
                            key=lambda r: r["epoch"])
                ins.plot([r["theta1"] for r in rs], [r["theta2"] for r in rs], color=COLORS[est], lw=0.6,
                         alpha=0.7)
        span = 1.6 * max(abs(a - b) for a, b in zip(s.theta0, s.theta_star)) + 0.3
        ins.set_xlim(s.theta_star[0] - span, s.theta_star[0] + span)
        ins.set_ylim(s.theta_star[1] - span, s.theta_star[1] + span)
        ins.plot(*s.theta0, "ko", ms=3)
        ins.plot(*s.theta_star, "k*", ms=8)
        ins.set_title("θ trajectories (● start, ★ θ*)", fontsize=7)
        ins.tick_params(labelsize=6)
        ins.set_xlabel("θ₁", fontsize=7, labelpad=0)
        ins.set_ylabel("θ₂", fontsize=7, labelpad=0)
    fig.suptitle("Natural gradient descent with the diagonal Fisher estimated by Î₁ or Î₂ "
                 f"(batch {s.batch_size}, one sampled label per input, lr {s.lr}); Î₂ is exact here", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_toy_variance(summary, rows, s, path) -> Path:
    """Summed variance of the per-step Fisher estimate over epochs (paper Figure I)."""
    from .toy_ngd import ESTIMATORS, MODELS
    fig, axes = plt.subplots(1, len(s.models), figsize=(6.2 * len(s.models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], s.models):
        for est in ESTIMATORS:
            ep, m, sd = _series(summary, model, est, f"var{est[1]}_trace")
            sub = "₁" if est == "I1" else "₂"
            ax.plot(ep, m, color=COLORS[est], lw=1.4, label=f"Σᵢ Var Î{sub}(θᵢ) along the NGD-with-Î{sub} runs")
            ax.fill_between(ep, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                            color=COLORS[est], alpha=0.25, lw=0)
            pk = sorted((r for r in rows
                         if r["model"] == model and r["estimator"] == est and f"var{est[1]}_trace_pkg" in r),
                        key=lambda r: r["epoch"])
            if pk:
                ax.plot([r["epoch"] for r in pk], [r[f"var{est[1]}_trace_pkg"] for r in pk], "x", color="k", ms=6,
                        label="dataset_stats check (seed 0)" if est == "I2" else None)
        ax.axhline(0, color="k", lw=0.5)
        ax.text(0.5, 0.06, "V₂ ≡ 0: w = ∂²h/∂θ² = 0, Î₂ is exact (THEORY §6.2)", transform=ax.transAxes,
                ha="center", fontsize=8, color=COLORS["I2"])
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(0, s.epochs)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"summed variance of the per-step estimate\n(label noise, batch of {s.batch_size})")
        ax.set_title(MODELS[model][1], fontsize=10)
        ax.legend(fontsize=8, loc="center right")
        ax.grid(alpha=0.3)
    fig.suptitle("Summed estimator variance Σᵢ (1/B)·E_q[N·V_k(θᵢ|x)] along the NGD trajectories "
                 "(mean ± sd over seeds)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------- MLP (Figure 2)
def _pos(v):
    return v if (v is not None and isinstance(v, float) and math.isfinite(v) and v > 0) else float("nan")


def plot_mlp_grid(rows, groups, path, title: str = "", sharp: bool = True) -> Path:
    """Top row per group: I, √V₁, √V₂ and √(upper bounds) (log y); bottom row: ln(bound / V)."""
    n = len(groups)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 6.4), squeeze=False)
    for j, g in enumerate(groups):
        rs = sorted((r for r in rows if r["group"] == g), key=lambda r: r["epoch"])
        ep = [r["epoch"] for r in rs]

        def get(k: str, rs: list = rs) -> list[float]:
            return [_pos(r.get(k)) for r in rs]

        def sq(k: str, get=get) -> list[float]:
            return [math.sqrt(v) if v == v else v for v in get(k)]
        ax = axes[0, j]
        ax.plot(ep, get("fisher"), color="k", lw=1.6, label="Fisher I")
        ax.plot(ep, sq("var1"), color="tab:blue", lw=1.6, label="√V₁")
        ax.plot(ep, sq("var1_upper"), color="tab:blue", ls="--", lw=1, label="√(V₁ upper, Thm 4.1)")
        v2_zero = all(r["var2"] == 0 for r in rs)
        if not v2_zero:
            ax.plot(ep, sq("var2"), color="tab:red", lw=1.6, label="√V₂")
            ax.plot(ep, sq("var2_upper"), color="tab:red", ls="--", lw=1, label="√(V₂ upper, Thm 4.1)")
        if sharp and "var1_upper_sharp" in rs[0]:
            ax.plot(ep, sq("var1_upper_sharp"), color="tab:blue", ls=":", lw=1.2, label="√(V₁ upper, sharpened)")
            if not v2_zero:
                ax.plot(ep, sq("var2_upper_sharp"), color="tab:red", ls=":", lw=1.2, label="√(V₂ upper, sharpened)")
        if "var1_upper_opt" in rs[0] and rs[0].get("var1_upper_opt") not in ("", None):
            ax.plot(ep, sq("var1_upper_opt"), color="tab:cyan", ls="-.", lw=1, label="√(V₁ upper, optimised λ̃)")
        ax.set_yscale("log")
        ax.set_title(f"{g} ({int(rs[0]['n_params'])} params)", fontsize=10)
        if v2_zero:
            ax.text(0.97, 0.5, "V₂ = 0 exactly\n(h affine in this layer,\nRemark 4.4): no √V₂ curve",
                    transform=ax.transAxes, ha="right", va="center", fontsize=7.5, color="tab:red",
                    bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
        if j == 0:
            ax.set_ylabel("mean over the layer's parameters")
        ax.grid(alpha=0.3, which="both")
        ax = axes[1, j]
        ax.plot(ep, [math.log(_pos(r["var1_upper"]) / _pos(r["var1"])) if _pos(r["var1"]) == r["var1"] else float("nan")
                     for r in rs], color="tab:blue", ls="--", label="ln(V₁ upper / V₁)")
        if sharp and "var1_upper_sharp" in rs[0]:
            ax.plot(ep, [math.log(_pos(r["var1_upper_sharp"]) / _pos(r["var1"])) for r in rs], color="tab:blue",
                    ls=":", label="ln(V₁ sharpened upper / V₁)")
        if not v2_zero:
            ax.plot(ep, [math.log(_pos(r["var2_upper"]) / _pos(r["var2"])) for r in rs], color="tab:red", ls="--",
                    label="ln(V₂ upper / V₂)")
            if sharp and "var2_upper_sharp" in rs[0]:
                ax.plot(ep, [math.log(_pos(r["var2_upper_sharp"]) / _pos(r["var2"])) for r in rs], color="tab:red",
                        ls=":", label="ln(V₂ sharpened upper / V₂)")
                ax.plot(ep, [math.log(_pos(r["var2"]) / _pos(r.get("var2_lower_sharp"))) for r in rs],
                        color="tab:purple", ls="-.", label="ln(V₂ / V₂ sharpened lower)")
        else:
            ax.text(0.5, 0.5, "V₂ = 0: ratio undefined", transform=ax.transAxes, ha="center", fontsize=8,
                    color="tab:red")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("epoch")
        if j == 0:
            ax.set_ylabel("ln(bound / true variance)")
        ax.grid(alpha=0.3)
    h1, l1 = axes[0, 0].get_legend_handles_labels()
    h2, l2 = axes[1, 0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.05, 1, 0.9))
    fig.legend(h1, l1, loc="upper center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, 0.965))
    fig.legend(h2, l2, loc="lower center", ncol=5, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=10, y=0.995)
    return save_figure(fig, path)


def plot_mlp_training(history, path) -> Path:
    """Training loss and test accuracy per epoch."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], "k-", label="training loss (NLL)")
    ax.plot(ep, [h["test_nll"] for h in history], "k--", label="test NLL")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative log-likelihood")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["test_acc"] for h in history], color="tab:green", label="test accuracy")
    ax2.set_ylabel("test accuracy", color="tab:green")
    ax2.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [str(l.get_label()) for l in lines], fontsize=8, loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
