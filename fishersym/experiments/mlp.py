"""The paper's Figure 2 (THEORY §11, paper §5): per-layer Fisher, V₁, V₂ and bounds while training an MLP.

Set-up (THEORY §11): an MLP of four dense layers with sigmoid activations (and
dropout), 10 classes (categorical family, softmax logits), trained 20 epochs;
after each epoch, for a random test input (fixed across epochs), the exact
I(θ_i|x), V₁ and V₂ with N = 5,000 label samples (THEORY §2–§3, Lemma 3.1) and
the Theorem 4.1 bounds (THEORY §5), averaged arithmetically over each layer's
parameters (weights and biases of one ``nn.Linear``).

Where the paper is silent we choose (and record in ``settings.json``):

* data: scikit-learn's bundled 8×8 digits (MNIST cannot be downloaded here;
  ``--data FILE`` reads MNIST from a local file, :mod:`.data`);
* widths: hidden layers 128-64-32 (input 64 for digits, 784 for MNIST);
* dropout 0.1 after every hidden activation (training only; the statistics are
  computed in eval mode, where dropout is the identity — THEORY §2 needs a
  deterministic h_θ(x));
* optimiser: Adam, learning rate 3e-3, batch 32, cross-entropy loss, float32;
  statistics in float64 on a copy of the model;
* epoch 0 (the initialisation) is recorded too.

Bounds: ``var*_lower/upper`` (the paper's Theorem 4.1 with λ̃ over ℝ^C) use the
*certified* family constants (THEORY §5: for the softmax the extreme eigenvalues
of M̄ on the symmetric subspace / Theorem 5.2), so they provably hold;
``--optimised`` adds the paper's multi-start optimised λ̃ (``var1_*_opt``, slow);
``*_sharp`` are the sharpened 𝟙^⊥ bounds ([beyond], THEORY §5).

Outputs: ``mlp.csv`` (one row per epoch and layer, columns listed in
:data:`CSV_COLUMNS`), ``mlp_figure2.png`` (the grid of the paper's Figure 2),
``mlp_training.png``, ``findings.json``/``findings.md`` (the paper's findings
checked against this run) and ``settings.json``.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import activations as _act_registry
from ..bounds.theorem41 import BOUND_KEYS, OPT_KEYS, SHARP_KEYS, STAT_KEYS, bound_violations
from .. import families
from .data import Dataset, load_dataset
from .io import (ExperimentError, atomic_write_bytes, atomic_write_text, output_run, write_csv, write_json,
                 write_settings)

__all__ = ["MLPSettings", "build_mlp", "train_epoch", "classifier_metrics", "layer_stats", "run_mlp",
           "findings", "CSV_COLUMNS", "GROUP_MEAN_KEYS", "group_names"]


#: the keys whose per-layer group means the CSV records: I, V₁, V₂ and their Theorem 4.1 bounds
#: (certified, sharpened, optimised; :mod:`fishersym.bounds.theorem41`)
GROUP_MEAN_KEYS = STAT_KEYS + BOUND_KEYS + SHARP_KEYS[:6] + OPT_KEYS + SHARP_KEYS[6:]
CSV_COLUMNS = (("epoch", "group", "n_params") + GROUP_MEAN_KEYS +
               ("sqrt_var1", "sqrt_var2", "ratio_var1_upper", "ratio_var2_upper", "ln_ratio_var1_upper",
                "ln_ratio_var2_upper", "ln_ratio_var1_upper_sharp", "ln_ratio_var2_upper_sharp",
                "rel_sd1", "rel_sd2", "better_estimator", "bounds_hold", "n_bound_violations",
                "train_loss", "test_nll", "test_acc"))


@dataclass
class MLPSettings:
    """Settings of the Figure 2 experiment (module docstring): seed, epochs, data, hidden widths, activation,
    dropout, optimiser (Adam: ``lr``, ``batch_size``), N label samples, analysed inputs per epoch, the optimised
    bounds switch, the progress bar, and ``choices`` (what the paper leaves open, recorded in settings.json)."""

    seed: int = 0
    epochs: int = 20
    data: str | None = None              # None: sklearn digits; else a path to MNIST
    n_train: int | None = None           # subset of the training set (None: all)
    n_test: int | None = None
    widths: tuple = (128, 64, 32)        # hidden widths; 4 dense layers with the output layer
    activation: str = "sigmoid"
    dropout: float = 0.1
    lr: float = 3e-3
    batch_size: int = 32
    n_samples: int = 5000                # N label samples of the estimators (THEORY §11)
    n_inputs: int = 1                    # random test inputs analysed per epoch (paper: 1)
    optimised: bool = False              # also the paper's optimised-λ̃ bounds (slow)
    progress: bool | None = None
    choices: dict = field(default_factory=lambda: {
        "optimiser": "Adam (torch.optim.Adam, default betas), cross-entropy loss, float32 training",
        "statistics": "exact closed forms (fishersym.numeric.conditional_stats, fast MLP path, float64, eval mode)",
        "bounds": "certified Theorem 4.1 constants (var*_upper); *_sharp: 1-perp sharpened; *_opt: optimised λ̃",
        "group means": "arithmetic mean over the layer's weights and biases, then over the analysed inputs",
        "epoch 0": "the initialisation, before any training"})

    def validate(self) -> None:
        """Raise ExperimentError naming the first invalid setting (activation, counts, widths, dropout)."""
        names = _act_registry.constructors()
        if self.activation not in names:
            raise ExperimentError(f"unknown activation {self.activation!r}; choose from {', '.join(names)}")
        if self.epochs < 0 or self.n_samples < 1 or self.n_inputs < 1 or self.batch_size < 1:
            raise ExperimentError("epochs must be >= 0; n_samples, n_inputs and batch_size >= 1")
        if not self.widths or any(int(w) < 1 for w in self.widths):
            raise ExperimentError(f"hidden widths must be positive integers, got {self.widths}")
        if not 0 <= self.dropout < 1:
            raise ExperimentError(f"dropout must be in [0, 1), got {self.dropout}")


def group_names(n_layers: int) -> list[str]:
    """``layer1`` … ``layerL`` from input to output (zero-padded beyond 9 layers so they sort)."""
    pad = len(str(n_layers)) if n_layers > 9 else 1
    return [f"layer{str(i + 1).zfill(pad)}" for i in range(n_layers)]


def build_mlp(d_in: int, widths, n_classes: int, activation: str = "sigmoid", dropout: float = 0.0,
              seed: int = 0) -> nn.Sequential:
    """Linear → activation → Dropout blocks and a Linear output layer (logits), seeded initialisation.

    Trained in float32 whatever torch's default dtype is (the data are float32); the analysis
    runs on a float64 copy."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    d = d_in
    for w in widths:
        mods += [nn.Linear(d, int(w)), _act_registry.get(activation).make()]
        if dropout > 0:
            mods.append(nn.Dropout(dropout))
        d = int(w)
    mods.append(nn.Linear(d, n_classes))
    return nn.Sequential(*mods).to(torch.float32)


def linear_groups(model: nn.Module) -> dict[str, list[str]]:
    """{layer name: [module name]} for every ``nn.Linear`` in order."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return dict(zip(group_names(len(names)), [[n] for n in names]))


def train_epoch(model, x, y, opt, batch_size, generator) -> float:
    """One epoch of minibatch training on cross-entropy (batches of a ``generator``-seeded permutation);
    returns the mean training loss over the epoch, Σ_batches loss·|batch| / n."""
    model.train()
    perm = torch.randperm(x.shape[0], generator=generator)
    total = 0.0
    for i in range(0, x.shape[0], batch_size):
        idx = perm[i:i + batch_size]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / x.shape[0]


@torch.no_grad()
def classifier_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of a classifier on (x, y), in eval mode (the CSV's ``test_nll``,
    ``test_acc``)."""
    model.eval()
    logits = model(x)
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).double().mean())



def layer_stats(model: nn.Module, x: torch.Tensor, n_samples: int, optimised: bool = False,
                rel_tol: float = 1e-9) -> list[dict]:
    """Per-layer rows: group means of I, V₁, V₂ and the bounds at inputs x (float64 copy, eval mode).

    Also checks the bounds for *every* parameter and input (``n_bound_violations``,
    relative tolerance ``rel_tol``), not only for the group means.
    """
    from ..numeric import conditional_stats
    from ..numeric.stats import rel_sd
    m64 = copy.deepcopy(model).double().eval()
    groups = linear_groups(m64)
    fam = families.get("categorical", C=m64[-1].out_features) if isinstance(m64, nn.Sequential) else None
    r = conditional_stats(m64, x.double(), fam, n_samples=n_samples, groups=groups, optimised=optimised,
                          prob_negative=False)
    rows = []
    for g in groups:
        d = r.groups[g]
        n = int(d["n_params"])
        means = {k: float(d[k].double().mean()) / n for k in GROUP_MEAN_KEYS if k in d}
        row: dict[str, object] = {"group": g, "n_params": n, **means}
        viol = sum(bound_violations(r, params=r.group_members[g], rtol=rel_tol).values())
        row["n_bound_violations"] = viol
        row["bounds_hold"] = viol == 0
        v1, v2 = means["var1"], means["var2"]
        row["sqrt_var1"], row["sqrt_var2"] = math.sqrt(max(v1, 0.0)), math.sqrt(max(v2, 0.0))
        for k in ("1", "2"):
            v = means[f"var{k}"]
            for suf in ("", "_sharp"):
                ub = means.get(f"var{k}_upper{suf}")
                ratio = ub / v if (ub is not None and v > 0) else float("nan")
                if not suf:
                    row[f"ratio_var{k}_upper"] = ratio
                row[f"ln_ratio_var{k}_upper{suf}"] = math.log(ratio) if ratio == ratio and ratio > 0 else float("nan")
            row[f"rel_sd{k}"] = float(rel_sd(torch.tensor(v), torch.tensor(means["fisher"])))
        row["better_estimator"] = "I2" if v2 < v1 else ("I1" if v1 < v2 else "equal")
        rows.append(row)
    return rows


def findings(rows: list[dict]) -> dict:
    """The paper's Figure 2 findings (THEORY §11), checked on the CSV rows of a run."""
    groups = sorted({r["group"] for r in rows})
    last = groups[-1]
    by = {g: sorted((r for r in rows if r["group"] == g), key=lambda r: r["epoch"]) for g in groups}
    med = lambda xs: float(np.median([x for x in xs if x == x])) if any(x == x for x in xs) else float("nan")  # noqa: E731
    ratio1 = {g: med([r["ratio_var1_upper"] for r in rs]) for g, rs in by.items()}
    ratio2 = {g: med([r["ratio_var2_upper"] for r in rs]) for g, rs in by.items() if g != last}
    v1_lt_v2 = {g: sum(r["var1"] < r["var2"] for r in rs) / len(rs) for g, rs in by.items() if g != last}
    epochs = sorted({r["epoch"] for r in rows})
    v1_largest_last = sum(max(groups, key=lambda g: next(r["var1"] for r in by[g] if r["epoch"] == e)) == last
                          for e in epochs) / len(epochs)
    out = {
        "groups": groups,
        "last_layer_var2_zero_every_epoch": all(r["var2"] == 0.0 for r in by[last]),
        "last_layer_var1_positive_every_epoch": all(r["var1"] > 0 for r in by[last]),
        "bounds_hold_every_group_and_epoch": all(bool(r["bounds_hold"]) for r in rows),
        "median_ratio_var1_upper_over_var1": ratio1,
        "median_ratio_var2_upper_over_var2": ratio2,
        "fraction_epochs_var1_lt_var2": v1_lt_v2,
        "fraction_epochs_var1_largest_in_last_layer": v1_largest_last,
    }
    hidden = [g for g in groups if g != last]
    out["paper"] = {
        "upper bound ≈ 50× V₁": {"paper": 50, "ours (median over epochs, per layer)": ratio1},
        "upper bound ≈ 10× V₂": {"paper": 10, "ours (median over epochs, per layer)": ratio2},
        "V₁ < V₂ in the first three layers": {
            "reproduced": all(v1_lt_v2.get(g, 0) >= 0.5 for g in hidden[:3]),
            "fraction of epochs per layer": v1_lt_v2},
        "V₂ = 0 in the last layer": {"reproduced": out["last_layer_var2_zero_every_epoch"]},
        "V₁ largest in the last layer": {"reproduced": v1_largest_last >= 0.5,
                                         "fraction of epochs": v1_largest_last},
    }
    return out


def findings_markdown(f: dict, s: MLPSettings, ds: dict) -> str:
    L = ["# MLP experiment (paper Figure 2): findings of this run", "",
         f"Data: {ds['name']} ({ds['n_train']} train / {ds['n_test']} test, {ds['n_features']} features); "
         f"{s.activation} MLP {ds['n_features']}-{'-'.join(map(str, s.widths))}-{ds['n_classes']}, "
         f"{s.epochs} epochs, N = {s.n_samples}, {s.n_inputs} test input(s), seed {s.seed}.", "",
         "| finding (paper §5) | paper | this run |", "|---|---|---|"]
    r1 = ", ".join(f"{g}: {v:.3g}×" for g, v in f["median_ratio_var1_upper_over_var1"].items())
    r2 = ", ".join(f"{g}: {v:.3g}×" for g, v in f["median_ratio_var2_upper_over_var2"].items())
    fr = ", ".join(f"{g}: {v:.0%}" for g, v in f["fraction_epochs_var1_lt_var2"].items())
    L.append(f"| upper bound / V₁ (median over epochs) | ≈ 50× | {r1} |")
    L.append(f"| upper bound / V₂ (median over epochs) | ≈ 10× | {r2} |")
    L.append(f"| V₁ < V₂ in the first three layers (share of epochs) | yes | {fr} |")
    L.append(f"| V₂ = 0 in the last layer, every epoch | yes | "
             f"{'yes' if f['last_layer_var2_zero_every_epoch'] else 'NO'} |")
    L.append(f"| V₁ largest in the last layer (share of epochs) | yes | "
             f"{f['fraction_epochs_var1_largest_in_last_layer']:.0%} |")
    L.append(f"| certified bounds hold for every parameter, group and epoch | (theorem) | "
             f"{'yes' if f['bounds_hold_every_group_and_epoch'] else 'NO'} |")
    return "\n".join(L) + "\n"


def _select_inputs(ds: Dataset, n: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    rng = np.random.default_rng(seed + 12345)
    idx = sorted(rng.choice(len(ds.y_test), size=min(n, len(ds.y_test)), replace=False).tolist())
    return torch.from_numpy(ds.x_test[idx]).double(), idx


def run_mlp(out: str | Path, settings: MLPSettings | None = None, force: bool = False,
            dataset: Dataset | None = None) -> dict:
    """Train, analyse after every epoch, write CSV, figures, findings, model and settings into ``out``.

    The run is staged (:func:`~fishersym.experiments.io.output_run`, command ``"experiment mlp"``):
    ``out`` holds either its previous complete contents or this complete run, never a mix; an
    existing non-empty ``out`` is replaced only with ``force``.  Settings and data are validated
    before ``out`` is touched.  Returned paths lie in ``out``.
    """
    s = settings or MLPSettings()
    s.validate()
    started = time.time()
    ds = dataset if dataset is not None else load_dataset(s.data, seed=s.seed, n_train=s.n_train, n_test=s.n_test)
    with output_run(out, "experiment mlp", force=force) as run:
        stage = run.stage
        torch.manual_seed(s.seed)
        model = build_mlp(ds.n_features, s.widths, ds.n_classes, s.activation, s.dropout, s.seed)
        xtr, ytr = torch.from_numpy(ds.x_train).float(), torch.from_numpy(ds.y_train)
        xte, yte = torch.from_numpy(ds.x_test).float(), torch.from_numpy(ds.y_test)
        xsel, idx = _select_inputs(ds, s.n_inputs, s.seed)
        opt = torch.optim.Adam(model.parameters(), lr=s.lr)
        gen = torch.Generator().manual_seed(s.seed)
        rows, history = [], []
        train_loss = float("nan")
        bar = tqdm(range(s.epochs + 1), desc=f"mlp ({ds.name}, {s.activation})", unit="epoch",
                   disable=s.progress is False if s.progress is not None else None)
        for epoch in bar:
            if epoch > 0:
                train_loss = train_epoch(model, xtr, ytr, opt, s.batch_size, gen)
            test_nll, test_acc = classifier_metrics(model, xte, yte)
            history.append({"epoch": epoch, "train_loss": train_loss, "test_nll": test_nll, "test_acc": test_acc})
            for r in layer_stats(model, xsel, s.n_samples, s.optimised):
                rows.append({"epoch": epoch, **r, "train_loss": train_loss, "test_nll": test_nll,
                             "test_acc": test_acc})
            bar.set_postfix(acc=f"{test_acc:.3f}", loss=f"{train_loss:.3f}")
        groups = list(linear_groups(model))
        paths = {"csv": write_csv(stage / "mlp.csv", rows, [c for c in CSV_COLUMNS if any(c in r for r in rows)])}
        from .plots import plot_mlp_grid, plot_mlp_training
        arch = f"{ds.n_features}-{'-'.join(map(str, s.widths))}-{ds.n_classes}"
        title = (f"{ds.name}: {s.activation} MLP {arch}, N = {s.n_samples}, {len(idx)} random test input(s); "
                 "means over each layer's parameters (dashed: Theorem 4.1, dotted: sharpened)")
        paths["figure"] = plot_mlp_grid(rows, groups, stage / "mlp_figure2.png", title)
        paths["training_figure"] = plot_mlp_training(history, stage / "mlp_training.png")
        f = findings(rows)
        paths["findings"] = write_json(stage / "findings.json", f)
        paths["findings_md"] = atomic_write_text(stage / "findings.md", findings_markdown(f, s, ds.summary()))
        import io as _io
        buf = _io.BytesIO()
        torch.save(model.state_dict(), buf)
        paths["model"] = atomic_write_bytes(stage / "model.pt", buf.getvalue())
        paths["settings"] = write_settings(stage, "mlp", asdict(s), started, extra={
            "dataset": ds.summary(), "architecture": arch, "groups": {g: m for g, m in linear_groups(model).items()},
            "analysed_test_indices": idx, "final": history[-1], "findings": f,
            "files": {k: Path(v).name for k, v in paths.items()}})
    out = Path(out)
    return {"out": out, "paths": {k: out / Path(v).relative_to(run.stage) for k, v in paths.items()},
            "rows": rows, "history": history, "findings": f, "model": model, "dataset": ds, "inputs": xsel}
