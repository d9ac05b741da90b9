r"""The family constants of THEORY §5 — the analogue of the paper's Table 1.

For regression (Gaussian, fixed σ²) and classification (categorical, softmax
σ = p), the constants that enter Theorem 4.1:

    λ_min(Σ), λ_max(Σ), λ̃_min(M), λ̃_max(M), λ̃_max(K)

(Σ the covariance of t(y), K = M₄, M = K − Σ⊗Σ, λ̃ the variational eigenvalues
of a 4-tensor on the unit sphere).  Closed forms: Proposition 5.1 (Gaussian:
λ(Σ) = σ², λ̃(M) = 2σ⁴, λ̃_max(K) = 3σ⁴, every Theorem 4.1 bound an equality);
Theorem 5.2 and Corollary R.1 (softmax: λ_min(Σ) = 0, λ_max(Σ) ≤ m(x),
λ̃_max(M) ≤ 2m(x), λ̃_max(K) ≤ 2λ_max(Σ), m(x) = min(max_k p_k, 1 − ‖p‖²)).

Next to the symbolic table, each closed form is evaluated numerically with
:func:`fishersym.families.constants.family_constants` at seeded random points
(optimised λ̃ by multi-start SS-HOPM and the certified outer values), so a
reader sees how tight the closed forms are; for the softmax the sharpened
constants over 𝟙^⊥ ([beyond], THEORY §5) are listed too.

Outputs: ``table.tex`` (a LaTeX ``table`` to ``\\input``), ``table_standalone.tex``
(a compilable document), ``table.csv`` (numeric evaluations), ``table.json``
and ``settings.json``; the text table is printed.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import families
from ..families.categorical import Categorical
from ..families.constants import family_constants
from .io import atomic_write_text, output_run, write_csv, write_json, write_settings

__all__ = ["TableSettings", "SYMBOLIC", "numeric_rows", "latex_table", "text_table", "run_table"]

COLUMNS = ("sigma_min", "sigma_max", "M_min", "M_max", "K_max")
HEAD_LATEX = (r"$\lambda_{\min}(\Sigma)$", r"$\lambda_{\max}(\Sigma)$", r"$\tilde\lambda_{\min}(M)$",
              r"$\tilde\lambda_{\max}(M)$", r"$\tilde\lambda_{\max}(K)$")
HEAD_TEXT = ("λ_min(Σ)", "λ_max(Σ)", "λ̃_min(M)", "λ̃_max(M)", "λ̃_max(K)")

#: (row label, latex cells, text cells, source)
SYMBOLIC = [
    ("Regression (Gaussian, variance $\\sigma^2$)",
     (r"$\sigma^2$", r"$\sigma^2$", r"$2\sigma^4$", r"$2\sigma^4$", r"$3\sigma^4$"),
     ("σ²", "σ²", "2σ⁴", "2σ⁴", "3σ⁴"), "Proposition 5.1 (all bounds of Theorem 4.1 are equalities)"),
    ("Classification (softmax $p$, $C$ classes)",
     (r"$0$", r"$\le m(x)$", r"$0$", r"$\le 2m(x)$", r"$\le 2\lambda_{\max}(\Sigma)$"),
     ("0", "≤ m(x)", "0", "≤ 2m(x)", "≤ 2λ_max(Σ)"),
     "Theorem 5.2, Corollary R.1; m(x) = min(max_k p_k, 1 − ‖p‖²)"),
]


@dataclass
class TableSettings:
    """Settings of the table experiment: seed, random softmax points per C, the C values, the Gaussian
    variances, the logits' scale and the SS-HOPM starts of the optimised λ̃ (THEORY §5)."""

    seed: int = 0
    n_points: int = 4          # random softmax points per C
    classes: tuple = (3, 10)   # C values for the numeric evaluation
    sigma2: tuple = (1.0, 0.5)
    temperature: float = 2.0   # logits ~ N(0, temperature²)
    n_starts: int = 8          # multi-start SS-HOPM starts for the optimised λ̃ (full space only)


def numeric_rows(s: TableSettings) -> list[dict]:
    """Numeric constants at seeded random points, next to the closed forms (THEORY §5)."""
    rows = []
    for s2 in s.sigma2:
        fam = families.get("gaussian", C=2, sigma2=s2)
        h = torch.zeros(1, 2, dtype=torch.float64)
        c = family_constants(fam, h, optimised=True)
        assert c.M_min_opt is not None and c.M_max_opt is not None and c.K_max_opt is not None  # optimised=True
        rows.append({"family": "gaussian", "C": 2, "point": 0, "sigma2": s2, "restricted": False,
                     "sigma_min": float(c.sigma_min[0]), "sigma_max": float(c.sigma_max[0]),
                     "M_min_opt": float(c.M_min_opt[0]), "M_max_opt": float(c.M_max_opt[0]),
                     "K_max_opt": float(c.K_max_opt[0]),
                     "M_min_cert": float(c.M_min_cert[0]), "M_max_cert": float(c.M_max_cert[0]),
                     "K_max_cert": float(c.K_max_cert[0]),
                     "closed_sigma": s2, "closed_M": 2 * s2 ** 2, "closed_K_max": 3 * s2 ** 2})
    g = torch.Generator().manual_seed(s.seed)
    for C in s.classes:
        fam = families.get("categorical", C=C)
        assert isinstance(fam, Categorical)  # the registered softmax family (theorem52_m is its m(x))
        h = s.temperature * torch.randn(s.n_points, C, generator=g, dtype=torch.float64)
        m = fam.theorem52_m(h)
        for restricted in (False, True):
            # the optimised λ̃ over 𝟙^⊥ is slow; there the certified values are listed (the *_opt columns repeat them)
            c = family_constants(fam, h, restricted=restricted, optimised=not restricted, n_starts=s.n_starts,
                                 seed=s.seed)
            if restricted:
                c.M_min_opt, c.M_max_opt, c.K_max_opt = c.M_min_cert, c.M_max_cert, c.K_max_cert
            assert c.M_min_opt is not None and c.M_max_opt is not None and c.K_max_opt is not None  # set either way
            for i in range(s.n_points):
                p = torch.softmax(h[i], -1)
                rows.append({"family": "categorical", "C": C, "point": i, "restricted": restricted,
                             "max_p": float(p.max()), "m_x": float(m[i]),
                             "sigma_min": float(c.sigma_min[i]), "sigma_max": float(c.sigma_max[i]),
                             "M_min_opt": float(c.M_min_opt[i]), "M_max_opt": float(c.M_max_opt[i]),
                             "K_max_opt": float(c.K_max_opt[i]),
                             "M_min_cert": float(c.M_min_cert[i]), "M_max_cert": float(c.M_max_cert[i]),
                             "K_max_cert": float(c.K_max_cert[i]),
                             "bound_sigma_max": float(m[i]), "bound_M_max": float(2 * m[i]),
                             "bound_K_max": float(2 * c.sigma_max[i]) if not restricted else float("nan"),
                             "lambda_tilde": "certified" if restricted else "optimised",
                             "ratio_sigma_max_to_m": float(c.sigma_max[i] / m[i]),
                             "ratio_M_max_opt_to_2m": float(c.M_max_opt[i] / (2 * m[i])),
                             "ratio_K_max_opt_to_2sigma_max": float(c.K_max_opt[i] / (2 * c.sigma_max[i]))})
    return rows


#: width of the wrapped "Output" column of the LaTeX table
LABEL_WIDTH = "3.2cm"


def latex_table(rows: list[dict]) -> str:
    r"""The closed forms as a LaTeX ``table`` (plain ``tabular``, no extra package) that fits a text width
    of 345 pt (article, 10 pt): ``\small``, the row labels wrapped in a ``\parbox`` and the numeric
    checks set as a note under the tabular rather than as full-width rows.  tests/test_latex_fit.py
    compiles it and asserts that no line is overfull."""
    cat = [r for r in rows if r["family"] == "categorical" and not r["restricted"]]
    sharp = [r for r in rows if r["family"] == "categorical" and r["restricted"]]

    def label(text: str) -> str:
        return f"\\parbox[t]{{{LABEL_WIDTH}}}{{\\raggedright {text}}}"

    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{4pt}",
             r"\caption{Family constants of Theorem~4.1 (analogue of Soen \& Sun, Table~1; THEORY \S5). "
             r"$m(x) = \min(\max_k p_k,\ 1 - \lVert p\rVert^2)$.}",
             r"\label{tab:family-constants}",
             r"\begin{tabular}{@{}l" + "c" * len(COLUMNS) + "@{}}", r"\hline",
             " & ".join(["Output"] + list(HEAD_LATEX)) + r" \\", r"\hline"]
    for lab, cells, _, _ in SYMBOLIC:
        lines.append(" & ".join([label(lab)] + list(cells)) + r" \\[1.5ex]")
    lines += [r"\hline", r"\end{tabular}"]
    notes = []
    if cat:
        worst = {k: max(r[k] for r in cat) for k in ("ratio_sigma_max_to_m", "ratio_M_max_opt_to_2m",
                                                       "ratio_K_max_opt_to_2sigma_max")}
        k_ratio = worst["ratio_K_max_opt_to_2sigma_max"]
        notes.append(f"Numeric check at {len(cat)} random softmax point{'' if len(cat) == 1 else 's'}: "
                     rf"$\max \lambda_{{\max}}(\Sigma)/m = {worst['ratio_sigma_max_to_m']:.3f}$, "
                     rf"$\max \tilde\lambda_{{\max}}(M)/2m = {worst['ratio_M_max_opt_to_2m']:.3f}$, "
                     rf"$\max \tilde\lambda_{{\max}}(K)/2\lambda_{{\max}}(\Sigma) = {k_ratio:.3f}$ (all $\le 1$).")
    if sharp:
        lo, hi = min(r["sigma_min"] for r in sharp), max(r["sigma_min"] for r in sharp)
        notes.append(r"Sharpened on $\mathbf{1}^\perp$ ([beyond], THEORY \S5): "
                     rf"$\lambda_{{\min}}(\Sigma|_{{\mathbf{{1}}^\perp}}) \in [{lo:.3g}, {hi:.3g}]$ instead of $0$.")
    if notes:
        lines += [r"\par\smallskip", r"{\footnotesize\raggedright " + " ".join(notes) + r"\par}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def standalone(table: str) -> str:
    """A compilable document around :func:`latex_table`'s output (article, 10 pt, default margins)."""
    return ("\\documentclass{article}\n\\usepackage{amsmath,amssymb}\n\\begin{document}\n" + table +
            "\\end{document}\n")


def text_table(rows: list[dict]) -> str:
    """The closed forms and the numeric evaluations of :func:`numeric_rows` as plain text."""
    w = 12
    out = ["Family constants of Theorem 4.1 (THEORY §5; the paper's Table 1)", "",
           "output".ljust(16) + "".join(h.ljust(w) for h in HEAD_TEXT)]
    for label, _, cells, src in SYMBOLIC:
        out.append(label.split(" (")[0].ljust(16) + "".join(c.ljust(w) for c in cells) + f"  [{src}]")
    out += ["", "Numeric evaluation at seeded random points (family_constants); λ̃ columns: optimised "
            "(multi-start SS-HOPM) / 'cert' the certified outer value; 1⊥ = y: sharpened constants on 𝟙^⊥ "
            "(certified values only)."]
    out.append(f"{'family':12}{'C':>3} {'pt':>3} {'1⊥':>3}  {'λmin(Σ)':>9} {'λmax(Σ)':>9} {'m(x)':>9} "
               f"{'λ̃min(M)':>9} {'λ̃max(M)':>9} {'cert':>9} {'2m(x)':>9} {'λ̃max(K)':>9} {'cert':>9}")
    for r in rows:
        out.append(f"{r['family']:12}{r['C']:>3} {r['point']:>3} {'y' if r['restricted'] else 'n':>3}  "
                   f"{r['sigma_min']:9.4g} {r['sigma_max']:9.4g} {r.get('m_x', float('nan')):9.4g} "
                   f"{r['M_min_opt']:9.4g} {r['M_max_opt']:9.4g} {r['M_max_cert']:9.4g} "
                   f"{r.get('bound_M_max', r.get('closed_M', float('nan'))):9.4g} "
                   f"{r['K_max_opt']:9.4g} {r['K_max_cert']:9.4g}")
    return "\n".join(out)


def run_table(out: str | Path, settings: TableSettings | None = None, force: bool = False,
              echo: bool = True) -> dict:
    """Evaluate the family constants, write the LaTeX/text table, CSV, JSON and settings into ``out``.

    The run is staged (:func:`~fishersym.experiments.io.output_run`, command ``"experiment table"``):
    ``out`` holds either its previous complete contents or this complete run, never a mix; an
    existing non-empty ``out`` is replaced only with ``force``.  Returned paths lie in ``out``.
    """
    s = settings or TableSettings()
    if s.n_points < 1 or any(int(C) < 2 for C in s.classes):
        raise ValueError("n_points must be >= 1 and every C >= 2")
    started = time.time()
    with output_run(out, "experiment table", force=force) as run:
        stage = run.stage
        rows = numeric_rows(s)
        tex = latex_table(rows)
        text = text_table(rows)
        if echo:
            print(text)
        paths = {"latex": atomic_write_text(stage / "table.tex", tex),
                 "latex_standalone": atomic_write_text(stage / "table_standalone.tex", standalone(tex)),
                 "csv": write_csv(stage / "table.csv", rows),
                 "text": atomic_write_text(stage / "table.txt", text + "\n")}
        paths["json"] = write_json(stage / "table.json", {
            "symbolic": [{"output": lab, "latex": dict(zip(COLUMNS, lc)), "text": dict(zip(COLUMNS, tc)),
                          "source": src} for lab, lc, tc, src in SYMBOLIC], "numeric": rows})
        paths["settings"] = write_settings(stage, "table", asdict(s), started,
                                           extra={"files": {k: Path(v).name for k, v in paths.items()}})
    out = Path(out)
    return {"out": out, "paths": {k: out / Path(v).relative_to(run.stage) for k, v in paths.items()},
            "rows": rows, "latex": tex, "text": text}
