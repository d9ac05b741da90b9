"""``fishersym report``: one self-contained HTML report (plus Markdown and PNGs) on the embedded default.

Contents (THEORY section in brackets):

1. a small sigmoid MLP trained briefly on scikit-learn's 8×8 digits, with the
   paper's Figure 2 analysis after every epoch (:mod:`.mlp`; §3, §5, §11);
2. the per-layer table on the whole test set (``dataset_stats``, scheme "all",
   §8): Fisher, Var Î₁, Var Î₂ (one label per input), the certified and
   sharpened Theorem 4.1 bounds, summed over each layer's parameters;
3. the estimator recommendation per layer (§10 [beyond]): for the layer's
   summed Fisher Σ_i I(θ_i) and summed variance Σ_i V_k(θ_i), the number of
   label samples N per input that brings the relative standard deviation
   √(Σ_i V_k)/Σ_i I below the target (10 %), for one typical input and for the
   whole test set, and the estimator needing fewer (Î₂ exactly when V₂ = 0:
   then one sample is exact; Î₁ on ties, it needs gradients only);
4. the family constants (Table 1, §5);
5. the symbolic derivation of a small network from the symbolic engine (§1–§7),
   typeset on the page and written as LaTeX, checked against the numeric engine at
   random points.

Mathematics on the page is MathML (:mod:`.htmlmath`: SymPy's presentation-MathML
printer, typeset natively by the browser), so the page renders offline: no script,
font or stylesheet is fetched, and writing it needs no LaTeX.  The Unicode formulas in
the prose and the tables (V₁, Σ, Î₂) stay text.  Layout for narrow screens: every
table and displayed equation sits in a horizontally scrollable box (``.scroll``,
``overflow-x: auto``) so nothing widens the page; in the layer tables the recommended
estimator is the second column, right after the layer, and the first column stays
in view while the table scrolls on screens narrower than 640 px.  Checked in headless
Chromium by tests/test_report_html.py.

Everything lands in ``--out`` (default ``out/report``): ``report.html``
(self-contained, figures embedded), ``report.md`` with the PNGs next to it,
``layers.csv``, ``report.json``, ``derivation.tex``, ``settings.json`` and the
MLP run in ``mlp/``.
"""
from __future__ import annotations

import base64
import copy
import html
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import torch

from .. import families
from ..bounds import violated_bounds
from ..numeric.stats import rel_sd
from .data import Dataset
from .io import ExperimentError, atomic_write_text, display_path, output_run, write_csv, write_json, write_settings
from .mlp import MLPSettings, linear_groups, run_mlp

__all__ = ["ReportSettings", "run_report", "recommend", "layer_table", "group_rows", "ModelReportSettings",
           "run_model_report", "demo_mlp", "plan_section", "plot_plan"]


@dataclass
class ReportSettings:
    """Settings of ``fishersym report`` on the embedded MLP (training, analysis, derivation; module docstring)."""

    seed: int = 0
    epochs: int = 10
    lr: float = 1e-2             # Adam; the small sigmoid net learns too slowly at the mlp default 3e-3
    widths: tuple = (64, 32, 16)
    activation: str = "sigmoid"
    n_samples: int = 5000        # N of the per-epoch Figure 2 analysis
    n_inputs: int = 4            # test inputs analysed per epoch
    target_rel_sd: float = 0.10  # the recommendation's target √V / I
    data: str | None = None
    n_train: int | None = None   # seeded subsets (tests, quick looks)
    n_test: int | None = None
    derivation_widths: tuple = (2, 2, 1)
    derivation_activation: str = "sigmoid"
    derivation_family: str = "bernoulli"
    progress: bool | None = None


def recommend(fisher: float, var1: float, var2: float, target: float) -> dict:
    """Label samples N_k so that √(v_k/N_k)/I ≤ target, given one-sample variances v_k; and the pick.

    ``var1``, ``var2`` are the variances at N = 1 (they scale as 1/N, THEORY §6.5).
    """
    def need(v):
        if fisher <= 0 or not math.isfinite(v):
            return None
        return max(1, math.ceil(v / (target * fisher) ** 2))
    n1, n2 = need(var1), need(var2)
    if var2 == 0:
        pick, why = "I2", "V₂ = 0: Î₂ is exact with one sample"
    elif n1 is None or n2 is None:
        pick, why = "-", "Fisher is 0"
    elif n2 < n1:
        pick, why = "I2", f"V₂ < V₁ ({var2 / var1:.2g}× V₁)"
    else:
        pick, why = "I1", ("V₁ < V₂ " if var1 < var2 else "tie; ") + (f"({var1 / var2:.2g}× V₂)" if var2 else "")
    return {"N_I1": n1, "N_I2": n2, "recommended": pick, "reason": why.strip(),
            "N_recommended": n2 if pick == "I2" else n1}


def _dist(data, distributed: bool):
    """(this rank's shard of ``data``, the process_group argument): the whole data and a local pass
    unless ``distributed`` (then torch.distributed must be initialised: ``fishersym … --distributed``)."""
    if not distributed:
        return data, False
    from ..numeric.distributed import shard
    return shard(data), None


def layer_table(model, x: torch.Tensor, target: float, progress=None, distributed: bool = False) -> list[dict]:
    """Per-layer dataset-level statistics (scheme "all", N = 1) and the recommendation (THEORY §8, §10).
    ``distributed``: each rank of the initialised process group analyses its shard of ``x`` and every
    rank gets the rows of all of ``x`` (:func:`~fishersym.numeric.dataset_stats`' ``process_group``)."""
    from ..numeric import dataset_stats
    m64 = copy.deepcopy(model).double().eval()
    groups = linear_groups(m64)
    fam = families.get("categorical", C=m64[-1].out_features)
    xs, pg = _dist(x.double(), distributed)
    r = dataset_stats(m64, xs, fam, 1, scheme="all", groups=groups, progress=progress, process_group=pg)
    return group_rows(r, groups, target)


def _median(t: torch.Tensor) -> float:
    return float(t.median()) if t.numel() else float("nan")


def _need(rel: torch.Tensor, target: float) -> int | None:
    """Label samples N bringing the median relative s.d. ``rel`` (at N = 1) below ``target``; None if empty."""
    return max(1, math.ceil(_median(rel) ** 2 / target ** 2)) if rel.numel() else None


def group_rows(r, groups, target: float) -> list[dict]:
    """One row per group of a scheme-"all", N = 1 :func:`~fishersym.numeric.dataset_stats` result:
    sums of I, V₁, V₂ and their bounds, per-parameter medians of √V/I for one typical input, the
    label samples N needed for the relative standard deviation ``target`` and the recommended
    estimator (THEORY §8, §10).  Entries whose V₂ is not computed (NaN: sampled V₂, outside the
    sample) are left out of the per-parameter medians of V₂, and the row says how many were used."""
    M = int(r.info["n_inputs"])
    rows = []
    for g in groups:
        names = r.group_members[g]
        d = {k: float(v) for k, v in r.groups[g].items() if torch.is_tensor(v) and v.numel() == 1 or
             isinstance(v, (int, float))}
        n = int(d["n_params"])
        fi, v1, v2 = (torch.cat([r[key][p].reshape(-1) for p in names]) for key in ("fisher", "var1", "var2"))
        known2 = ~torch.isnan(v2)
        live, live2 = fi > 0, (fi > 0) & known2
        # per parameter: one typical input has E_x v_k(θ_i|x) = M · Var_all(θ_i) at N = 1 (THEORY §8)
        rel1, rel2 = rel_sd(M * v1[live], fi[live]), rel_sd(M * v2[live2], fi[live2])
        n1, n2 = _need(rel1, target), _need(rel2, target)
        n1d, n2d = _need(rel1 / math.sqrt(M), target), _need(rel2 / math.sqrt(M), target)
        frac2 = float((v2[live2] < v1[live2]).double().mean()) if live2.any() else float("nan")
        if bool(known2.all()) and bool((v2 == 0).all()):
            pick, why = "I2", "V₂ = 0 for every parameter: Î₂ is exact with one sample"
        elif n1 is None:
            pick, why = "-", "Fisher is 0"
        elif n2 is None:
            pick, why = "I1", "V₂ not computed for any parameter with I > 0"
        elif n2 < n1:
            pick, why = "I2", f"V₂ < V₁ for {frac2:.0%} of the parameters"
        else:
            pick, why = "I1", f"V₁ ≤ V₂ for {1 - frac2:.0%} of the parameters"
        rows.append({"group": g, "n_params": n, "n_inputs": M,
                     "fisher_sum": d["fisher"], "fisher_mean": d["fisher"] / n,
                     "var1_sum": d["var1"], "var2_sum": d["var2"],
                     "var1_upper_sum": d["var1_upper"], "var2_upper_sum": d["var2_upper"],
                     "var1_lower_sum": d["var1_lower"], "var2_lower_sum": d["var2_lower"],
                     "var1_upper_sharp_sum": d.get("var1_upper_sharp", float("nan")),
                     "var2_upper_sharp_sum": d.get("var2_upper_sharp", float("nan")),
                     "var2_lower_sharp_sum": d.get("var2_lower_sharp", float("nan")),
                     "median_rel_sd1_one_input": _median(rel1), "median_rel_sd2_one_input": _median(rel2),
                     "share_params_I2_better": frac2,
                     "recommended": pick, "reason": why,
                     "N_I1_one_input": n1, "N_I2_one_input": n2, "N_I1_dataset": n1d, "N_I2_dataset": n2d,
                     "bounds_hold": bool(_holds(r, names)), "n_var2_known": int(known2.sum())})
        se = getattr(r, "standard_errors", {}).get(g, {}).get("var2")
        if se is not None:      # sampled V₂: the sum is an estimate (THEORY / issue 9 item 2c)
            lo, hi = r.ci()[g]["var2"]
            rows[-1].update({"var2_sum_se": float(se), "var2_sum_ci95": [float(lo), float(hi)]})
    return rows


def _holds(r, names, tol: float = 1e-9) -> bool:
    """Certified Theorem 4.1 bounds (and the sharpened ones) hold for every parameter (THEORY §5, §8);
    entries not computed (the unsampled ones of a sampled V₂) are skipped."""
    return not violated_bounds(r, params=names, rtol=tol, nan_ok=True)


def _derivation(s: ReportSettings, out: Path) -> dict:
    """Symbolic derivation of a small network, its LaTeX, and a check against the numeric engine."""
    t0 = time.time()
    info: dict = {"widths": list(s.derivation_widths), "activation": s.derivation_activation,
                  "family": s.derivation_family}
    try:
        from .. import symbolic
        from ..numeric import conditional_stats
        net = symbolic.mlp(list(s.derivation_widths), s.derivation_activation)
        fam = families.get(s.derivation_family)
        D = symbolic.derive(net, fam, n_samples=None)
        tex = D.to_latex(title=f"fishersym report: derivation for an MLP {list(s.derivation_widths)} "
                               f"({s.derivation_activation}, {s.derivation_family} output)")
        info["latex"] = tex
        from .htmlmath import derivation_html
        info["html"] = derivation_html(D)
        info["n_params"] = len(D)
        model = net.torch_module(seed=s.seed)
        x = torch.randn(4, s.derivation_widths[0], dtype=torch.float64, generator=torch.Generator().manual_seed(s.seed))
        ev = D.evaluate(model, x, n_samples=1, optimised=False)
        num = conditional_stats(model, x, fam, 1)
        dev = {}
        for k in ("fisher", "var1", "var2"):
            dev[k] = max(float(((ev[k][n] - num[k][n]).abs() / num[k][n].abs().clamp_min(1e-12)).max()) for n in num[k])
        info["max_rel_dev_symbolic_vs_numeric"] = dev
        info["v2_zero_last_layer_symbolic"] = all(pd.w_is_zero for pd in D if pd.entry.layer == net.L)
    except Exception as exc:  # noqa: BLE001 - the symbolic engine is optional for the rest of the report
        info["error"] = f"{type(exc).__name__}: {exc}"
    if "latex" in info:     # written outside the try: a failed write is an error of the run, not of the engine
        atomic_write_text(out / "derivation.tex", info["latex"])
    info["runtime_s"] = round(time.time() - t0, 2)
    return info


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3g}"
    return html.escape(str(v)) if v is not None else "—"


# the recommendation first (it is what a reader on a narrow screen needs), then the numbers behind it
LAYER_COLS = [("group", "layer"), ("recommended", "use"), ("reason", "why"),
              ("N_I1_one_input", "N for Î₁ (1 input)"), ("N_I2_one_input", "N for Î₂ (1 input)"),
              ("N_I1_dataset", "N for Î₁ (test set)"), ("N_I2_dataset", "N for Î₂ (test set)"),
              ("n_params", "params"), ("fisher_mean", "mean I(θᵢ)"),
              ("fisher_sum", "Σ I"), ("var1_sum", "Σ Var Î₁"), ("var2_sum", "Σ Var Î₂"),
              ("var1_upper_sum", "Σ V₁ upper"), ("var1_upper_sharp_sum", "Σ V₁ upper (sharp)"),
              ("var2_upper_sum", "Σ V₂ upper"), ("var2_lower_sharp_sum", "Σ V₂ lower (sharp)"),
              ("bounds_hold", "bounds hold"), ("median_rel_sd1_one_input", "median √V₁/I (1 input, N=1)"),
              ("median_rel_sd2_one_input", "median √V₂/I (1 input, N=1)")]


def _html_table(rows, cols) -> str:
    """A table in a horizontally scrollable box (the page never widens); the "recommended" column,
    where present, is marked ``class="rec"``."""
    def c(k, v=None) -> str:
        return ' class="rec"' if k == "recommended" else ' class="t"' if isinstance(v, str) else ""
    head = "".join(f"<th{c(k)}>{html.escape(lab)}</th>" for k, lab in cols)
    body = "".join("<tr>" + "".join(f"<td{c(k, r.get(k))}>{_fmt(r.get(k))}</td>" for k, _ in cols) + "</tr>"
                   for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _md_table(rows, cols) -> str:
    L = ["| " + " | ".join(lab for _, lab in cols) + " |", "|" + "---|" * len(cols)]
    L += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(L)


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;
overflow-wrap:break-word}
.scroll{overflow-x:auto;max-width:100%;margin:1em 0}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}td.t{text-align:left}td.rec,th.rec{font-weight:bold;text-align:center;background:#eaf4ea}
pre{background:#f7f7f7;padding:1em;font-size:12px;margin:0}img{max-width:100%;height:auto}code{overflow-wrap:anywhere}
math{font-family:"Latin Modern Math","STIX Two Math","Cambria Math",math}
.eq{margin:.2em 0;overflow-y:hidden}.eq math{width:max-content;margin:0 auto;padding:.3em 0}
.eq mtd:first-child{text-align:right}.eq mtd:last-child{text-align:left}
.note{color:#555;font-size:14px}h2{border-bottom:1px solid #ddd;padding-bottom:3px}h4{margin:1.2em 0 .3em}
@media (max-width:640px){body{margin:1em auto;padding:0 .6em}table{font-size:12px}
td:first-child,th:first-child{position:sticky;left:0;z-index:1;background:#fff}th:first-child{background:#f3f3f3}}"""
HEAD = '<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'


def run_report(out: str | Path = "out/report", settings: ReportSettings | None = None, force: bool = False,
               distributed: bool = False) -> dict:
    """Train and analyse the small MLP, write the HTML/Markdown report, CSV, JSON, LaTeX and settings into ``out``.

    The run is staged (:func:`~fishersym.experiments.io.output_run`, command ``"report"``): ``out``
    holds either its previous complete contents or this complete run, never a mix; an existing
    non-empty ``out`` is replaced only with ``force``.  Data and settings are validated before
    ``out`` is touched.  Returned paths lie in ``out``; the report names ``out`` (never the staging
    folder) as where it was written.  ``distributed``: the data-set passes (the layer table and the
    planner) are shared by the ranks of the initialised process group (each analyses its shard of the
    test set; every rank gets the global numbers; ``fishersym report --distributed`` under torchrun).
    """
    s = settings or ReportSettings()
    started = time.time()
    from .data import load_dataset
    ds = load_dataset(s.data, seed=s.seed, n_train=s.n_train, n_test=s.n_test)
    ms = MLPSettings(seed=s.seed, epochs=s.epochs, lr=s.lr, data=s.data, widths=tuple(s.widths),
                     activation=s.activation, n_samples=s.n_samples, n_inputs=s.n_inputs, progress=s.progress)
    ms.validate()
    with output_run(out, "report", force=force) as run:
        paths, rows, summary = _write_report(run.stage, s, ms, ds, started, distributed)
    out = Path(out)
    return {"out": out, "paths": {k: out / Path(v).relative_to(run.stage) for k, v in paths.items()},
            "rows": rows, "summary": summary}


def demo_mlp(settings: ReportSettings | None = None) -> tuple[torch.nn.Sequential, Dataset]:
    """The report's MLP without the per-epoch analysis: the same data (:func:`~.data.load_dataset`),
    architecture (:func:`~.mlp.build_mlp` with :class:`~.mlp.MLPSettings`' dropout and batch size)
    and training (Adam, ``settings.epochs`` epochs of :func:`~.mlp.train_epoch`, seeded), in float32.
    Returns (model in eval mode, dataset).  Used by ``fishersym plan`` without ``--model``."""
    from .data import load_dataset
    from .mlp import build_mlp, train_epoch
    s = settings or ReportSettings()
    ms = MLPSettings(seed=s.seed, epochs=s.epochs, lr=s.lr, data=s.data, widths=tuple(s.widths),
                     activation=s.activation, n_samples=s.n_samples, n_inputs=s.n_inputs, progress=s.progress)
    ms.validate()
    ds = load_dataset(s.data, seed=s.seed, n_train=s.n_train, n_test=s.n_test)
    torch.manual_seed(ms.seed)
    model = build_mlp(ds.n_features, ms.widths, ds.n_classes, ms.activation, ms.dropout, ms.seed)
    xtr, ytr = torch.from_numpy(ds.x_train).float(), torch.from_numpy(ds.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=ms.lr)
    gen = torch.Generator().manual_seed(ms.seed)
    for _ in range(ms.epochs):
        train_epoch(model, xtr, ytr, opt, ms.batch_size, gen)
    return model.eval(), ds


def _write_report(out: Path, s: ReportSettings, ms: MLPSettings, ds, started: float,
                  distributed: bool = False) -> tuple[dict, list, dict]:
    """Everything :func:`run_report` writes, into the staging folder ``out``: (paths, layer rows, summary)."""
    mlp = run_mlp(out / "mlp", ms, force=False, dataset=ds)
    t_mlp = time.time() - started
    xte = torch.from_numpy(ds.x_test)
    rows = layer_table(mlp["model"], xte, s.target_rel_sd, progress=s.progress, distributed=distributed)
    t_layers = time.time() - started - t_mlp
    m64 = copy.deepcopy(mlp["model"]).double().eval()
    plan_sec = plan_section(m64, (xte.double(), torch.from_numpy(ds.y_test)),
                            families.get("categorical", C=ds.n_classes), linear_groups(m64), s.target_rel_sd, out,
                            f"the {len(ds.y_test)} test inputs with their labels", distributed=distributed)
    deriv = _derivation(s, out)
    from .table import SYMBOLIC, HEAD_TEXT
    f = mlp["findings"]
    hist = mlp["history"][-1]
    arch = f"{ds.n_features}-{'-'.join(map(str, s.widths))}-{ds.n_classes}"
    # files
    paths = {"layers_csv": write_csv(out / "layers.csv", rows)}
    import shutil
    for name in ("mlp_figure2.png", "mlp_training.png"):
        src = mlp["paths"]["figure" if name == "mlp_figure2.png" else "training_figure"]
        shutil.copyfile(src, out / f".{name}.tmp")
        (out / f".{name}.tmp").replace(out / name)
        paths[name] = out / name
    # HTML
    intro = (f"A {s.activation} MLP {arch} trained for {s.epochs} epochs (Adam, lr {s.lr:g}) on "
             f"{html.escape(ds.source)} ({len(ds.y_train)} train / {len(ds.y_test)} test images); final test accuracy "
             f"{hist['test_acc']:.1%}, test NLL {hist['test_nll']:.3f}. Seed {s.seed}.")
    rec_note = (f"Recommendation (THEORY §10): per layer, the number N of label samples per input that brings the "
                f"relative standard deviation √Var Îₖ(θᵢ) / I(θᵢ) of the median parameter of the layer below "
                f"{s.target_rel_sd:.0%} — for one typical test input (E_x v_k(θᵢ|x) against I(θᵢ), §3, §8) and for "
                f"the whole test set of {rows[0]['n_inputs']} inputs with N labels each (§8, scheme 'all'). "
                f"Variances scale as 1/N. Î₂ is chosen when it needs fewer samples (always when V₂ = 0, where one "
                f"sample is exact); Î₁ on ties (it needs gradients only, Î₂ second derivatives).")
    const_rows = [{"output": lab.replace("$", "").replace("\\sigma", "σ").replace("^2", "²"),
                   **dict(zip(HEAD_TEXT, tc)), "source": src} for lab, _, tc, src in SYMBOLIC]
    const_cols = [("output", "output")] + [(h, h) for h in HEAD_TEXT] + [("source", "source")]
    fig_rows = [{"finding": "upper bound ≈ 50× V₁ (median over epochs)", "paper": "≈ 50×",
                 "ours": ", ".join(f"{g}: {v:.3g}×" for g, v in f["median_ratio_var1_upper_over_var1"].items())},
                {"finding": "upper bound ≈ 10× V₂ (median over epochs)", "paper": "≈ 10×",
                 "ours": ", ".join(f"{g}: {v:.3g}×" for g, v in f["median_ratio_var2_upper_over_var2"].items())},
                {"finding": "V₁ < V₂ in the first three layers (share of epochs)", "paper": "yes",
                 "ours": ", ".join(f"{g}: {v:.0%}" for g, v in f["fraction_epochs_var1_lt_var2"].items())},
                {"finding": "V₂ = 0 in the last layer (every epoch)", "paper": "yes",
                 "ours": "yes" if f["last_layer_var2_zero_every_epoch"] else "NO"},
                {"finding": "V₁ largest in the last layer (share of epochs)", "paper": "yes",
                 "ours": f"{f['fraction_epochs_var1_largest_in_last_layer']:.0%}"},
                {"finding": "certified bounds hold (every parameter, layer, epoch)", "paper": "theorem",
                 "ours": "yes" if f["bounds_hold_every_group_and_epoch"] else "NO"}]
    fcols = [("finding", "finding (paper §5, Figure 2)"), ("paper", "paper"), ("ours", "this run")]
    if "error" in deriv:
        deriv_html = f"<p>The symbolic engine failed: <code>{html.escape(deriv['error'])}</code></p>"
        deriv_md = f"The symbolic engine failed: `{deriv['error']}`"
    else:
        dev = deriv["max_rel_dev_symbolic_vs_numeric"]
        check = ", ".join(f"{k}: {v:.1e}" for k, v in dev.items())
        deriv_md = (f"MLP {deriv['widths']} ({deriv['activation']}, {deriv['family']} output), "
                    f"{deriv['n_params']} parameters, derived by SymPy in {deriv['runtime_s']} s. Symbolic vs numeric "
                    f"engine at 4 random inputs, max relative deviation: {check}. Last layer V₂ ≡ 0 "
                    f"(SymPy): {'yes' if deriv['v2_zero_last_layer_symbolic'] else 'no'}. Full document: "
                    f"`derivation.tex` (compile with pdflatex).")
        deriv_html = (f"<p>{html.escape(deriv_md).replace('`derivation.tex`', '<code>derivation.tex</code>')}</p>"
                      f"{deriv['html']}"
                      f"<details><summary>LaTeX source of derivation.tex ({len(deriv['latex'])} characters)</summary>"
                      f"<div class=\"scroll\"><pre>{html.escape(deriv['latex'])}</pre></div></details>")
    page = f"""<!DOCTYPE html><html lang="en"><head>{HEAD}<title>fishersym report</title>
<style>{CSS}</style></head><body>
<h1>fishersym report: diagonal Fisher estimators Î₁ vs Î₂</h1>
<p class="note">Soen &amp; Sun, "Trade-Offs of Diagonal Fisher Information Matrix Estimators" (NeurIPS 2024);
notation and section numbers of fishersym's documentation (docs/theory; cited THEORY §n).
Generated {time.strftime('%Y-%m-%d %H:%M')} in
{time.time() - started:.0f} s.</p>
<h2>1. Model and data</h2><p>{html.escape(intro)}</p>{_img(out / 'mlp_training.png')}
<h2>2. Per-layer Fisher, variances, bounds and recommendation (test set, end of training)</h2>
<p class="note">Sums over each layer's weights and biases of the exact per-parameter quantities (closed forms,
§3; certified Theorem 4.1 bounds and the sharpened 𝟙^⊥ bounds, §5), for the estimator of the data-set Fisher
from all {rows[0]['n_inputs']} test inputs with one label each (§8, scheme "all").</p>
{_html_table(rows, LAYER_COLS)}<p class="note">{html.escape(rec_note)}</p>
<h2>3. Figure 2 of the paper, on this model</h2>
<p class="note">After each epoch, at {s.n_inputs} random test input(s), N = {s.n_samples}: means over each layer's
parameters. Top: I, √V₁, √V₂ and the square roots of their upper bounds (log scale); bottom: ln(bound / V).
V₂ of the last layer is exactly 0 (Remark 4.4).</p>{_img(out / 'mlp_figure2.png')}
{_html_table(fig_rows, fcols)}
<h2>4. Family constants (Table 1, §5)</h2>{_html_table(const_rows, const_cols)}
<h2>5. Symbolic derivation of a small network (§1–§7)</h2>{deriv_html}
<h2>6. Which estimator, with how many inputs and labels (the planner)</h2>{plan_sec["html"]}
<h2>Files</h2><p>Written to <code>{html.escape(str(display_path(out)))}</code>: report.html (this page), report.md,
layers.csv, plan.csv, report.json, derivation.tex, the PNG figures, settings.json, and the MLP run (CSV per epoch and
layer, findings, model) in mlp/.</p></body></html>"""
    md = "\n\n".join([
        "# fishersym report: diagonal Fisher estimators Î₁ vs Î₂",
        "## 1. Model and data", intro, "![training](mlp_training.png)",
        "## 2. Per-layer Fisher, variances, bounds and recommendation (test set, end of training)",
        _md_table(rows, LAYER_COLS), rec_note,
        "## 3. Figure 2 of the paper, on this model", "![figure 2](mlp_figure2.png)", _md_table(fig_rows, fcols),
        "## 4. Family constants (Table 1, §5)", _md_table(const_rows, const_cols),
        "## 5. Symbolic derivation of a small network", deriv_md,
        "## 6. Which estimator, with how many inputs and labels (the planner)", plan_sec["md"]]) + "\n"
    paths["html"] = atomic_write_text(out / "report.html", page)
    paths["markdown"] = atomic_write_text(out / "report.md", md)
    paths.update(plan_sec["paths"])
    summary = {"layers": rows, "findings": f, "final": hist,
               "derivation": {k: v for k, v in deriv.items() if k not in ("latex", "html")},
               "plan": plan_sec["summary"],
               "timings_s": {"mlp": round(t_mlp, 2), "layer_table": round(t_layers, 2),
                             "plan": plan_sec["summary"].get("runtime_s"),
                             "derivation": deriv["runtime_s"], "total": round(time.time() - started, 2)}}
    paths["json"] = write_json(out / "report.json", summary)
    if "latex" in deriv:
        paths["derivation"] = out / "derivation.tex"
    paths["settings"] = write_settings(out, "report", asdict(s), started, extra={
        "dataset": ds.summary(), "architecture": arch, "files": {k: Path(v).name for k, v in paths.items()}})
    return paths, rows, summary


# ---------------------------------------------------------------------- the planner's section (issue 10 item 2)
PLAN_COLS = [("group", "layer"), ("n_params", "params"), ("estimator", "use"), ("scheme", "scheme"),
             ("m_inputs", "inputs M′"), ("n_samples", "labels N per input"), ("cost", "cost (backward passes)"),
             ("rel_se", "relative s.e."), ("min_inputs", "fewest i.i.d. inputs (input term)"), ("note", "note")]
PLAN_BEST_COLS = [("group", "layer"), ("estimator", "estimator"), ("scheme", "scheme"), ("m_inputs", "M′"),
                  ("n_samples", "N"), ("cost", "cost"), ("rel_se", "relative s.e."), ("status", "status")]


def plot_plan(p, path: Path) -> Path:
    """Per group (one panel each), the smallest relative s.e. of each estimator within a cost (backward
    passes) on log–log axes: the planner's cost-against-accuracy ladder.  An estimator that becomes
    exact (relative s.e. 0) is marked ▼ at the bottom from that cost on; the recommendation is a star
    (at the bottom when it is exact); the target is the dashed line."""
    from .plots import plt
    from .io import save_figure
    groups = list(p.groups)
    ncol = min(4, len(groups))
    nrow = math.ceil(len(groups) / ncol)
    from matplotlib.ticker import NullFormatter
    leg_h = 0.2 * math.ceil(len(p.estimators) / 4) + 0.15            # inches for the legend below the panels
    W, H = 4.2 * ncol, 3.4 * nrow + leg_h
    fig, axes = plt.subplots(nrow, ncol, figsize=(W, H), squeeze=False)
    cmap = plt.get_cmap("tab20")
    colors = {e: cmap(i % 20) for i, e in enumerate(p.estimators)}
    for ax, g in zip(axes.flat, groups):
        gp = p.groups[g]
        zero_at = {}
        for e in p.estimators:
            pts = sorted((r["budget"], r["rel_se"]) for r in gp.ladder if r["estimator"] == e)
            xs = [c for c, v in pts if v > 0 and math.isfinite(v)]
            ys = [v for c, v in pts if v > 0 and math.isfinite(v)]
            if xs:
                ax.plot(xs, ys, "o-", ms=2.5, lw=1, color=colors[e], label=e)
            zs = [c for c, v in pts if v == 0]
            if zs:
                zero_at[e] = zs[0]
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo = ax.get_ylim()[0]
        for e, c in zero_at.items():
            ax.plot([c], [lo], "v", color=colors[e], ms=7, clip_on=False)
        if gp.target is not None:
            ax.axhline(gp.target, ls="--", color="k", lw=0.8)
        r = gp.recommended
        if r is not None and math.isfinite(r.cost):
            ax.plot([r.cost], [r.rel_se if r.rel_se > 0 else lo], "*", color="k", ms=11, clip_on=False)
        ax.set_title(f"{g} ({gp.n_params} params)", fontsize=9)
        ax.set_xlabel("cost (backward passes)", fontsize=8)
        ax.set_ylabel(f"relative s.e. ({p.quantile:g}-quantile)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(NullFormatter())
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=7, frameon=False)
    fig.suptitle("Planner: best relative s.e. within a cost, per estimator (exact; ▼ exact from there; ★ recommended; "
                 "-- target)", fontsize=9)
    fig.subplots_adjust(left=0.6 / W, right=1 - 0.15 / W, bottom=(leg_h + 0.5) / H, top=1 - 0.55 / H,
                        wspace=0.35, hspace=0.55)           # fixed margins: tight_layout costs seconds here
    return save_figure(fig, path)


def plan_section(model, data, family, groups, target: float, out: Path, what: str,
                 distributed: bool = False) -> dict:
    """Run :func:`fishersym.estimators.planner.plan` for the report (target ``target``), write
    ``plan.csv`` and ``plan.png`` into ``out``, and return the section's HTML, Markdown, rows and paths.
    A memory-budget refusal of the analysis is reported in the section (not raised).  ``distributed``: as
    in :func:`layer_table` (each rank plans on its shard; every rank gets the plan of all the data)."""
    from ..estimators.planner import Plan, plan
    from ..numeric.guard import MemoryBudgetError
    t0 = time.time()
    try:
        ds_, pg = _dist(data, distributed)
        p = plan(model, ds_, family, target=target, groups=groups, process_group=pg)
    except MemoryBudgetError as exc:
        msg = f"The planner was not run: {exc}"
        return {"html": f"<p>{html.escape(msg)}</p>", "md": msg, "rows": [], "paths": {},
                "summary": {"error": str(exc)}}
    paths: dict[str, Path] = {"plan_csv": cast(Path, p.to_csv(out / "plan.csv")),
                              "plan.png": plot_plan(p, out / "plan.png")}
    rows = p.recommendation_rows()
    for r in rows:
        if r.get("estimator") is None:
            r["estimator"] = "none reaches the target"
    best = []
    for g, gp in p.groups.items():
        for o in gp.best.values():
            best.append({"group": g, **o.as_dict(),
                         "status": "meets" if o.meets else "not reached: " + o.reason})
    costs = sorted({r["budget"] for gp in p.groups.values() for r in gp.ladder})
    show = costs[::2] if len(costs) > 10 else costs
    ladder_rows = []
    for g, gp in p.groups.items():
        by = {(r["estimator"], r["budget"]): r["rel_se"] for r in gp.ladder}
        for e in p.estimators:
            ladder_rows.append({"group": g, "estimator": e, **{f"{c:g}": by.get((e, c)) for c in show}})
    ladder_cols = [("group", "layer"), ("estimator", "estimator")] + [(f"{c:g}", f"≤ {c:g}") for c in show]
    left = "; ".join(f"{e}: {why}" for e, why in p.not_evaluated.items())
    note = (f"Planner (THEORY §8, §9, §13; fishersym.estimators.planner.plan, `fishersym plan`) on {what}: per layer, "
            f"the cheapest way to estimate the Fisher diagonal with a relative standard error ≤ {target:g} for the "
            f"median entry — the estimator, the inputs M′ (scheme 'iid': drawn i.i.d. from the data; 'all': every "
            f"input once) and the labels (or probes) N per input, the cost in backward passes. 'Fewest i.i.d. inputs': "
            f"below it no unbiased estimator reaches the target whatever N (the input term Var_q I/M′ of §8). "
            f"{Plan.EXACT_NOTE}" + (f" Not evaluated: {left}." if left else ""))
    ladder_note = ("Cost against accuracy: the smallest relative s.e. of each estimator among the options costing at "
                   "most the given number of backward passes (empty: none that cheap); full table in plan.csv.")
    h = (f"<p class=\"note\">{html.escape(note)}</p>{_html_table(rows, PLAN_COLS)}"
         f"<h3>Each estimator's best option</h3>{_html_table(best, PLAN_BEST_COLS)}"
         f"<h3>Cost against accuracy</h3>{_img(paths['plan.png'])}"
         f"<p class=\"note\">{html.escape(ladder_note)}</p>{_html_table(ladder_rows, ladder_cols)}")
    md = "\n\n".join([note, _md_table(rows, PLAN_COLS), "### Each estimator's best option",
                      _md_table(best, PLAN_BEST_COLS), "### Cost against accuracy", "![planner](plan.png)",
                      ladder_note, _md_table(ladder_rows, ladder_cols)])
    summary = {"target": target, "quantile": p.quantile, "n_inputs": p.M, "recommendation": rows,
               "not_evaluated": p.not_evaluated, "runtime_s": round(time.time() - t0, 2)}
    return {"html": h, "md": md, "rows": rows, "paths": paths, "summary": summary}



# ---------------------------------------------------------------------- a user's model: fishersym report --model
@dataclass
class ModelReportSettings:
    """Settings of the report on a user's (trained) model: no training, the model as given.

    ``family`` None: the categorical family with C = the model's output size.  ``n_inputs``
    inputs are drawn (seeded, without replacement) from the data; ``path`` and ``v2`` go to
    :func:`~fishersym.numeric.dataset_stats` (``v2="sample"`` with ``v2_sample`` entries per tensor:
    V₂ exact on a sample, group sums with a confidence interval).  ``batch_size`` inputs per engine
    call (1: the progress bar counts inputs and memory stays that of one input)."""

    model: str = "model"
    model_args: dict | None = None
    data: str | None = None
    family: str | None = None
    family_params: dict | None = None
    n_inputs: int = 8
    path: str = "auto"
    v2: str = "exact"
    v2_sample: int | float | None = None
    batch_size: int = 1
    seed: int = 0
    target_rel_sd: float = 0.10
    progress: bool | None = None

    def validate(self) -> None:
        """Check the counts and the target; raises :class:`ExperimentError` naming the bad setting."""
        from .._checks import as_count
        self.n_inputs = as_count(self.n_inputs, "n_inputs")
        self.batch_size = as_count(self.batch_size, "batch_size")
        if not (isinstance(self.target_rel_sd, (int, float)) and 0 < self.target_rel_sd < math.inf):
            raise ExperimentError(f"target_rel_sd must be a positive number, got {self.target_rel_sd!r}")


MODEL_COLS = [("group", "parameter tensor"), ("recommended", "use"), ("reason", "why"),
              ("N_I1_one_input", "N for Î₁ (1 input)"), ("N_I2_one_input", "N for Î₂ (1 input)"),
              ("N_I1_dataset", "N for Î₁ (all inputs)"), ("N_I2_dataset", "N for Î₂ (all inputs)"),
              ("shape", "shape"), ("n_params", "entries"), ("fisher_mean", "mean I(θᵢ)"), ("fisher_sum", "Σ I"),
              ("var1_sum", "Σ Var Î₁"),
              ("var2_sum", "Σ Var Î₂"), ("var2_sum_se", "s.e. of Σ Var Î₂ (sampled)"),
              ("var1_upper_sum", "Σ V₁ upper"), ("var1_upper_sharp_sum", "Σ V₁ upper (sharp)"),
              ("var2_upper_sum", "Σ V₂ upper"), ("var2_lower_sharp_sum", "Σ V₂ lower (sharp)"),
              ("bounds_hold", "bounds hold"), ("median_rel_sd1_one_input", "median √V₁/I (1 input, N=1)"),
              ("median_rel_sd2_one_input", "median √V₂/I (1 input, N=1)"), ("var2", "V₂")]


def _model_family(name: str | None, params: dict | None, n_out: int):
    """The family of the report: ``name`` (default categorical) with its size taken from the model's
    ``n_out`` outputs where it is a free parameter (:func:`fishersym.families.resolve`)."""
    return families.resolve(name or "categorical", params, out_dim=n_out)


def _plot_tensors(rows: list[dict], path: Path) -> Path:
    """Per parameter tensor: median √V_k/I for one input (top) and the sums of V₁, V₂ and their upper
    bounds (bottom), log scales; V₂ ≡ 0 is marked at the bottom of the lower panel."""
    from .plots import plt
    from .io import save_figure
    n = len(rows)
    xs = list(range(n))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(6.0, 0.28 * n + 2), 7.5), sharex=True)
    pos = lambda v: [x if (x is not None and x == x and x > 0) else float("nan") for x in v]  # noqa: E731
    a1.plot(xs, pos(r["median_rel_sd1_one_input"] for r in rows), "o-", color="tab:blue", ms=4, label="Î₁")
    a1.plot(xs, pos(r["median_rel_sd2_one_input"] for r in rows), "s-", color="tab:orange", ms=4, label="Î₂")
    a1.set_yscale("log")
    a1.set_ylabel("median √V/I, one input, N = 1")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    for key, lab, st in (("var1_sum", "Σ V₁", "o-"), ("var2_sum", "Σ V₂", "s-"), ("var1_upper_sum", "Σ V₁ upper", "o:"),
                         ("var2_upper_sum", "Σ V₂ upper", "s:")):
        a2.plot(xs, pos(r[key] for r in rows), st, ms=3, label=lab,
                color="tab:blue" if "1" in key else "tab:orange")
    zero = [i for i, r in enumerate(rows) if r["var2"].startswith("0")]
    a2.set_yscale("log")
    if zero:
        lo = a2.get_ylim()[0]
        a2.plot(zero, [lo] * len(zero), "v", color="tab:orange", ms=6, clip_on=False, label="V₂ ≡ 0 (proved)")
    a2.set_ylabel("sum over the tensor (all inputs, N = 1)")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    a2.set_xticks(xs)
    a2.set_xticklabels([r["group"] for r in rows], rotation=90, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def run_model_report(model, out: str | Path = "out/report", settings: ModelReportSettings | None = None,
                     force: bool = False, distributed: bool = False) -> dict:
    """The report on a user's trained model (no training): per parameter tensor I, V₁, V₂, the
    certified and sharpened Theorem 4.1 bounds, the recommended estimator and its N (THEORY §3, §5,
    §8, §10), the figure of √V/I per tensor, and the family constants (Table 1, §5).

    ``model``: an ``nn.Module`` mapping (batch, *input shape) to (batch, C) raw outputs.  Data:
    :func:`~.data.load_model_data` (``settings.data``: .npz, .pt, MNIST IDX; None: the digits),
    fitted to the model by :func:`~.data.adapt_inputs`.  The analysis runs on a float64 copy in
    eval mode.  Written through :func:`~.io.output_run` (command ``"report"``): ``report.html``,
    ``report.md``, ``tensors.png``, ``layers.csv``, ``report.json``, ``settings.json``.
    ``distributed``: as in :func:`run_report` (the data-set passes shared by the ranks).
    """
    from torch import nn
    from .data import adapt_inputs, load_model_data
    s = settings or ModelReportSettings()
    s.validate()
    started = time.time()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    data = load_model_data(s.data, seed=s.seed)
    m64 = copy.deepcopy(model).double().eval()
    x, how = adapt_inputs(data.x, m64)
    data.adaptation = how
    n_all = x.shape[0]
    idx = torch.randperm(n_all, generator=torch.Generator().manual_seed(s.seed))[:s.n_inputs].sort().values
    x = x[idx]
    y = torch.as_tensor(data.y)[idx] if data.y is not None else None
    with torch.no_grad():
        logits = m64(x[:1])
    if not (isinstance(logits, torch.Tensor) and logits.dim() == 2):
        raise ExperimentError(f"the model must map (batch, ...) inputs to (batch, C) outputs; on inputs of shape "
                              f"{tuple(x[:1].shape)} it returned "
                              f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    fam = _model_family(s.family, s.family_params, int(logits.shape[1]))
    params = [(n, p) for n, p in m64.named_parameters() if p.requires_grad]
    if not params:
        raise ExperimentError("the model has no trainable parameters (requires_grad): nothing to analyse")
    with output_run(out, "report", force=force) as run:
        paths, rows, summary = _write_model_report(run.stage, m64, x, y, fam, s, data, n_all, started, distributed)
    out = Path(out)
    return {"out": out, "paths": {k: out / Path(v).relative_to(run.stage) for k, v in paths.items()},
            "rows": rows, "summary": summary}


def _write_model_report(out: Path, m64, x, y, fam, s: ModelReportSettings, data, n_all: int,
                        started: float, distributed: bool = False) -> tuple[dict, list, dict]:
    from ..numeric import dataset_stats
    names = [n for n, p in m64.named_parameters() if p.requires_grad]
    shapes = {n: tuple(p.shape) for n, p in m64.named_parameters()}
    groups = {n: [n] for n in names}
    t0 = time.time()
    kw = {"v2": s.v2, "seed": s.seed} if s.v2 != "exact" else {}
    if s.v2_sample is not None:
        kw["v2_sample"] = s.v2_sample
    xs, pg = _dist(x, distributed)
    r = dataset_stats(m64, xs, fam, 1, scheme="all", groups=groups, path=s.path, progress=s.progress,
                      batch_size=s.batch_size, process_group=pg, **kw)
    t_stats = time.time() - t0
    rows = group_rows(r, groups, s.target_rel_sd)
    zero = r.info.get("var2_zero_reason", {}) or {}
    estimated = r.info.get("estimated", {}) or {}
    for row in rows:
        n = row["group"]
        row["shape"] = "×".join(map(str, shapes[n])) or "scalar"
        if n in zero:
            row["var2"], row["var2_detail"] = "0 (proved)", zero[n]
        elif row["n_var2_known"] < row["n_params"]:
            se = row.get("var2_sum_se")
            row["var2"] = f"sampled: {row['n_var2_known']} of {row['n_params']} entries exact"
            row["var2_detail"] = (f"w exact at {row['n_var2_known']} random entries (seed {s.seed}); the sum over "
                                  f"the tensor is an estimate"
                                  + (f" with standard error {se:.3g}" if se is not None else "")
                                  + " (report.json, 'estimated')")
        else:
            row["var2"], row["var2_detail"] = "exact", f"w = ∂²h/∂θᵢ² computed for every entry ({r.path} path)"
    acc = None
    if y is not None:       # families of class labels predict one (the family's class_prediction hook)
        with torch.no_grad():
            preds = [fam.class_prediction(m64(x[i:i + 64])) for i in range(0, x.shape[0], 64)]
        if all(p_ is not None for p_ in preds):
            acc = float((torch.cat(preds) == y).double().mean())
    paths = {"layers_csv": write_csv(out / "layers.csv", rows)}
    paths["tensors.png"] = _plot_tensors(rows, out / "tensors.png")
    plan_sec = plan_section(m64, (x, y) if y is not None else x, fam, None, s.target_rel_sd, out,
                            f"the {x.shape[0]} inputs" + (" with their labels" if y is not None else " (no labels)"),
                            distributed=distributed)
    paths.update(plan_sec["paths"])
    from .table import SYMBOLIC, HEAD_TEXT
    const_rows = [{"output": lab.replace("$", "").replace("\\sigma", "σ").replace("^2", "²"),
                   **dict(zip(HEAD_TEXT, tc)), "source": src} for lab, _, tc, src in SYMBOLIC]
    const_cols = [("output", "output")] + [(h, h) for h in HEAD_TEXT] + [("source", "source")]
    P = sum(int(r_["n_params"]) for r_ in rows)
    n_zero = sum(1 for r_ in rows if r_["var2"].startswith("0"))
    args = ", ".join(f"{k}={v!r}" for k, v in (s.model_args or {}).items())
    intro = (f"Model {s.model}{' with ' + args if args else ''}"
             f" ({type(m64).__name__}, {len(rows)} parameter tensors, {P:,} parameters; analysed as given, "
             f"a float64 copy in eval mode, no training). Family {fam!r}. Data: {data.source} ({n_all} inputs; "
             f"{data.adaptation}); {x.shape[0]} inputs of shape {tuple(x.shape[1:])} drawn with seed {s.seed}"
             + (f"; accuracy on them {acc:.1%}" if acc is not None else "") + ". "
             f"Exact path: {r.path} ({r.info.get('path_reason', '')}); {t_stats:.1f} s. "
             f"V₂ ≡ 0 proved for {n_zero} of {len(rows)} tensors.")
    rec_note = (f"Recommendation (THEORY §10): per tensor, the number N of label samples per input that brings the "
                f"relative standard deviation √Var Îₖ(θᵢ) / I(θᵢ) of the median entry below {s.target_rel_sd:.0%}, "
                f"for one typical input and for all {x.shape[0]} inputs with N labels each (§8, scheme 'all'). "
                f"Î₂ is chosen when it needs fewer samples (always when V₂ = 0, where one sample is exact).")
    est_note = ""
    if estimated:
        sampled = [r_["group"] for r_ in rows if r_["n_var2_known"] < r_["n_params"]]
        est_note = (f"Estimated numbers (everything else is exact): V₂ was computed exactly on a random sample of "
                    f"the entries of {len(sampled)} tensors ({', '.join(sampled)}); the sums of V₂ and of its bounds "
                    f"over those tensors are estimates (standard error in the table; 95 % confidence intervals and "
                    f"the full description in report.json, 'estimated'), and the medians of √V₂/I, the N for Î₂ "
                    f"and the recommendation use the sampled entries only.")
    zrows = [{"tensor": r_["group"], "V₂": r_["var2"], "why": r_["var2_detail"]} for r_ in rows]
    zcols = [("tensor", "parameter tensor"), ("V₂", "V₂"), ("why", "why")]
    page = f"""<!DOCTYPE html><html lang="en"><head>{HEAD}<title>fishersym report: {html.escape(s.model)}</title>
<style>{CSS}</style></head><body>
<h1>fishersym report: diagonal Fisher estimators Î₁ vs Î₂ on {html.escape(s.model)}</h1>
<p class="note">Soen &amp; Sun, "Trade-Offs of Diagonal Fisher Information Matrix Estimators" (NeurIPS 2024);
notation and section numbers of fishersym's documentation (docs/theory; cited THEORY §n).
Generated {time.strftime('%Y-%m-%d %H:%M')} in
{time.time() - started:.0f} s.</p>
<h2>1. Model and data</h2><p>{html.escape(intro)}</p>
<h2>2. Per-tensor Fisher, variances, bounds and recommendation</h2>
<p class="note">Sums over each parameter tensor's entries of the exact per-parameter quantities (closed forms, §3;
certified Theorem 4.1 bounds and the sharpened 𝟙^⊥ bounds, §5), for the estimator of the data-set Fisher from all
{x.shape[0]} inputs with one label each (§8, scheme "all").</p>
{_html_table(rows, MODEL_COLS)}<p class="note">{html.escape(rec_note)}</p>
{f'<p class="note">{html.escape(est_note)}</p>' if est_note else ''}
<h2>3. Relative standard deviations per tensor</h2>{_img(out / 'tensors.png')}
<h2>4. Where V₂ ≡ 0 and why</h2>{_html_table(zrows, zcols)}
<h2>5. Family constants (Table 1, §5)</h2>{_html_table(const_rows, const_cols)}
<p class="note">Not in this report (they need the embedded MLP): the training curves, the paper's Figure 2 over
epochs and the symbolic derivation; run <code>fishersym report</code> without --model for them.</p>
<h2>6. Which estimator, with how many inputs and labels (the planner)</h2>{plan_sec["html"]}
<h2>Files</h2><p>Written to <code>{html.escape(str(display_path(out)))}</code>: report.html (this page), report.md,
tensors.png, plan.png, layers.csv, plan.csv, report.json, settings.json.</p></body></html>"""
    md = "\n\n".join([f"# fishersym report: diagonal Fisher estimators Î₁ vs Î₂ on {s.model}",
                      "## 1. Model and data", intro,
                      "## 2. Per-tensor Fisher, variances, bounds and recommendation",
                      _md_table(rows, MODEL_COLS), rec_note] + ([est_note] if est_note else []) + [
                      "## 3. Relative standard deviations per tensor", "![per tensor](tensors.png)",
                      "## 4. Where V₂ ≡ 0 and why", _md_table(zrows, zcols),
                      "## 5. Family constants (Table 1, §5)", _md_table(const_rows, const_cols),
                      "## 6. Which estimator, with how many inputs and labels (the planner)", plan_sec["md"]]) + "\n"
    paths["html"] = atomic_write_text(out / "report.html", page)
    paths["markdown"] = atomic_write_text(out / "report.md", md)
    summary = {"model": s.model, "model_args": s.model_args, "family": repr(fam), "path": r.path,
               "path_reason": r.info.get("path_reason", ""), "n_params": P, "n_inputs": int(x.shape[0]),
               "input_shape": list(x.shape[1:]), "data": data.summary(), "accuracy": acc, "tensors": rows,
               "estimated": {k: str(v) for k, v in estimated.items()}, "plan": plan_sec["summary"],
               "timings_s": {"dataset_stats": round(t_stats, 2), "plan": plan_sec["summary"].get("runtime_s"),
                             "total": round(time.time() - started, 2)}}
    paths["json"] = write_json(out / "report.json", summary)
    paths["settings"] = write_settings(out, "report", asdict(s), started, extra={
        "data": data.summary(), "files": {k: Path(v).name for k, v in paths.items()}})
    return paths, rows, summary
