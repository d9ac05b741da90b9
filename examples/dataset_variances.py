"""Dataset-level Fisher and estimator variances for *your* model and data loader (THEORY §8).

Copy, replace ``make_model`` / ``make_loader`` / ``FAMILY``, and run:

    python examples/dataset_variances.py [OUT.csv]

``dataset_stats`` streams the loader (a tqdm bar shows progress) and returns,
per parameter and per module (``result.groups``), the Fisher I(θ_i), the
variances of Î₁ and Î₂ for M inputs drawn i.i.d. from the data with N labels
each (scheme "iid", paper Theorem 4.7) and their bounds.  The per-module
table is printed and written as CSV.
"""
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fishersym import families
from fishersym.experiments.io import write_csv
from fishersym.numeric import dataset_stats

FAMILY = families.get("categorical", C=10)
N = 1          # label samples per input
M = 64         # inputs per Fisher estimate (e.g. your batch size)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10)).double().eval()


def make_loader() -> DataLoader:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float64)
    y = torch.tensor(d.target)
    return DataLoader(TensorDataset(x, y), batch_size=256)


def main(out: str = "dataset_variances.csv") -> None:
    r = dataset_stats(make_model(), make_loader(), FAMILY, n_samples=N, scheme="iid", m_inputs=M)
    print(r.table(keys=("fisher", "var1", "var2", "var1_upper", "var2_upper", "rel_sd1", "rel_sd2"), by="group"))
    rows = r.rows(keys=("fisher", "var1", "var2", "var1_lower", "var1_upper", "var2_lower", "var2_upper",
                        "input_var", "rel_sd1", "rel_sd2"), by="group")
    write_csv(out, rows)
    for row in rows:
        better = "Î₂" if row["var2"] < row["var1"] else "Î₁"
        print(f"{row['name']:8} lower-variance estimator: {better}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
