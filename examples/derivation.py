"""Generate the symbolic derivation (LaTeX) of the Fisher diagonal, V₁, V₂ and bounds of a small MLP.

    python examples/derivation.py [OUT.tex]

Change ``WIDTHS``, ``ACTIVATION`` and ``FAMILY`` to your network (keep it small:
the expressions grow quickly; ``fishersym.symbolic`` refuses networks that are
too large).  THEORY §1–§7.
"""
import sys

import sympy as sp

from fishersym import families, symbolic

WIDTHS = [2, 2, 1]          # input, hidden…, output
ACTIVATION = "tanh"
FAMILY = families.get("bernoulli")


def main(out: str = "derivation.tex") -> None:
    net = symbolic.mlp(WIDTHS, ACTIVATION)
    D = symbolic.derive(net, FAMILY)            # N stays a symbol
    for pd in list(D)[:2] + list(D)[-1:]:
        print(f"{pd.symbol}:  I = {sp.sstr(pd.fisher)}")
        print(f"{' ' * len(str(pd.symbol))}   V2 = {sp.sstr(pd.var2)}   (w ≡ 0: {pd.w_is_zero})")
    D.to_latex(out)
    print(f"wrote {out} ({len(D)} parameters); compile with pdflatex")


if __name__ == "__main__":
    main(*sys.argv[1:2])
