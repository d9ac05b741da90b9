r"""Offline mathematics for the HTML report: SymPy's presentation-MathML printer (MathML Core).

Mechanism (one for the whole report): every typeset formula is a SymPy expression printed by
:class:`sympy.printing.mathml.MathMLPresentationPrinter` into ``<math>`` elements inside the page.
Browsers typeset MathML Core natively (Chromium ≥ 109, Firefox, Safari): no script, no web font,
no CDN and nothing fetched when the page is opened, and no LaTeX needed when it is written.
Symbols are shown under their LaTeX labels (``Derivation.latex_names``, e.g. ``W^{(1)}_{1,1}``),
converted by :func:`tex_label`, a converter for the small LaTeX subset of symbol names and
equation labels (letters, digits, Greek, accents, ``\mathbf``, scripts, ``\frac``); an
unsupported command is an error naming it, never dropped.

Display equations sit in ``<div class="scroll eq">`` (horizontally scrollable: browsers do not
break MathML lines); sums too long for one line are split at their top-level ``+``/``−`` into
the rows of an ``<mtable>`` (like LaTeX's ``multline``), see :func:`equation`.

:func:`derivation_html` shows a :class:`fishersym.symbolic.Derivation` (THEORY §1–§7): the model,
the family's cumulant forms, the Theorem 4.1 constants (§5), the common subexpressions and per
parameter u, w, I, V₁, V₂, the bounds and the trade-off condition (§6.7).

>>> import sympy as sp
>>> x = sp.Symbol("x_1")
>>> mathml(x / 2, {x: "x_{1}"}, display=False)
'<math><mrow><mfrac><msub><mi>x</mi><mn>1</mn></msub><mn>2</mn></mfrac></mrow></math>'
"""
from __future__ import annotations

import html as _html
import re
from xml.dom import minidom

import sympy as sp
from sympy.printing.mathml import MathMLPresentationPrinter

__all__ = ["tex_label", "mathml", "equation", "derivation_html", "MAX_MATHML_CHARS"]

#: a formula whose MathML exceeds this many characters is not printed (the page says so and points
#: to derivation.tex); 20 000 characters are several screens of mathematics
MAX_MATHML_CHARS = 20000
#: a top-level sum is split into rows of at most this many leaf tokens (mi/mn/mo) per row
ROW_TOKENS = 28

_GREEK = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ϵ", "varepsilon": "ε",
          "zeta": "ζ", "eta": "η", "theta": "θ", "vartheta": "ϑ", "iota": "ι", "kappa": "κ", "lambda": "λ",
          "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ", "upsilon": "υ",
          "phi": "ϕ", "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω", "ell": "ℓ"}
_GREEK_UP = {"Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Xi": "Ξ", "Pi": "Π", "Sigma": "Σ",
             "Upsilon": "Υ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω"}
_OPS = {"top": "⊤", "perp": "⊥", "nabla": "∇", "partial": "∂", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥",
        "neq": "≠", "ne": "≠", "cdot": "⋅", "times": "×", "infty": "∞", "sum": "∑", "prod": "∏",
        "in": "∈", "to": "→", "equiv": "≡", "approx": "≈", "mid": "|", "vert": "|", "|": "‖", "lVert": "‖",
        "rVert": "‖", "{": "{", "}": "}", "ldots": "…", "dots": "…", "cdots": "⋯", "prime": "′"}
_FUNCS = {"min", "max", "log", "exp", "ln", "sin", "cos", "tanh", "inf", "sup", "det", "tr", "diag"}
_ACCENTS = {"tilde": "~", "hat": "^", "bar": "¯", "widetilde": "~", "widehat": "^", "overline": "¯",
            "dot": "˙", "ddot": "¨", "vec": "→"}
_SPACES = {",": "0.1667em", ":": "0.2222em", ";": "0.2778em", " ": "0.3333em", "quad": "1em", "qquad": "2em"}
_IGNORED = {"left", "right", "big", "Big", "bigl", "bigr", "Bigl", "Bigr", "displaystyle", "!"}


def _bold(s: str) -> str:
    """Mathematical bold Unicode letters and digits (MathML Core has no mathvariant="bold")."""
    out = []
    for ch in s:
        if "0" <= ch <= "9":
            out.append(chr(0x1D7CE + ord(ch) - ord("0")))
        elif "A" <= ch <= "Z":
            out.append(chr(0x1D400 + ord(ch) - ord("A")))
        elif "a" <= ch <= "z":
            out.append(chr(0x1D41A + ord(ch) - ord("a")))
        else:
            out.append(ch)
    return "".join(out)


def _tokens(s: str) -> list[str]:
    toks, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            j = i + 1
            while j < len(s) and s[j].isalpha():
                j += 1
            if j == i + 1:
                j = min(i + 2, len(s))
            toks.append(s[i:j])
            i = j
        elif c.isspace():
            i += 1
        else:
            toks.append(c)
            i += 1
    return toks


class _TexLabel:
    """Recursive-descent converter of a LaTeX label to a MathML fragment (see :func:`tex_label`)."""

    def __init__(self, tex: str):
        self.tex, self.toks, self.i = tex, _tokens(tex), 0

    def error(self, what: str) -> ValueError:
        return ValueError(f"cannot convert the LaTeX label {self.tex!r} to MathML: {what} "
                          "(extend fishersym.experiments.htmlmath.tex_label)")

    def seq(self, stop: str | None = None) -> list[str]:
        items: list[str] = []
        while self.i < len(self.toks):
            t = self.toks[self.i]
            if t == stop:
                self.i += 1
                return items
            if t in ("^", "_"):
                self.i += 1
                base = items.pop() if items else "<mrow></mrow>"
                script = self.arg()
                sub = sup = None
                if t == "_":
                    sub = script
                else:
                    sup = script
                if self.i < len(self.toks) and self.toks[self.i] in ("^", "_") and self.toks[self.i] != t:
                    self.i += 1
                    other = self.arg()
                    sub, sup = (sub, other) if t == "_" else (other, sup)
                if sub is not None and sup is not None:
                    items.append(f"<msubsup>{base}{sub}{sup}</msubsup>")
                elif sub is not None:
                    items.append(f"<msub>{base}{sub}</msub>")
                else:
                    items.append(f"<msup>{base}{sup}</msup>")
                continue
            items.append(self.atom())
        if stop is not None:
            raise self.error(f"missing {stop!r}")
        return items

    def arg(self) -> str:
        """One argument: a {group} or a single atom, as one MathML element."""
        if self.i >= len(self.toks):
            raise self.error("a command or script lacks its argument")
        if self.toks[self.i] == "{":
            self.i += 1
            return _row(self.seq("}"))
        return self.atom()

    def text_arg(self) -> str:
        r"""The raw text of a {group} argument (for \mathrm, \text, \operatorname, \mathbf)."""
        if self.i < len(self.toks) and self.toks[self.i] == "{":
            depth, j, parts = 1, self.i + 1, []
            while j < len(self.toks):
                if self.toks[j] == "{":
                    depth += 1
                elif self.toks[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                parts.append(self.toks[j])
                j += 1
            self.i = j + 1
            return "".join(parts)
        self.i += 1
        return self.toks[self.i - 1]

    def atom(self) -> str:
        t = self.toks[self.i]
        self.i += 1
        if t == "{":
            return _row(self.seq("}"))
        if t.isdigit():
            num = t
            while self.i < len(self.toks) and self.toks[self.i].isdigit():
                num += self.toks[self.i]
                self.i += 1
            return f"<mn>{num}</mn>"
        if t.isalpha():
            return f"<mi>{t}</mi>"
        if not t.startswith("\\"):
            if t in "}&%#$~":
                raise self.error(f"unexpected {t!r}")
            return f"<mo>{'−' if t == '-' else _html.escape(t)}</mo>"
        name = t[1:]
        if name in _GREEK:
            return f"<mi>{_GREEK[name]}</mi>"
        if name in _GREEK_UP:
            return f'<mi mathvariant="normal">{_GREEK_UP[name]}</mi>'
        if name in _OPS:
            return f"<mo>{_html.escape(_OPS[name])}</mo>"
        if name in _FUNCS:
            return f"<mi>{name}</mi>"
        if name in _ACCENTS:
            return f'<mover accent="true">{self.arg()}<mo>{_ACCENTS[name]}</mo></mover>'
        if name in _SPACES:
            return f'<mspace width="{_SPACES[name]}"></mspace>'
        if name in _IGNORED:
            return "<mrow></mrow>"
        if name in ("frac", "tfrac", "dfrac"):
            num = self.arg()
            return f"<mfrac>{num}{self.arg()}</mfrac>"
        if name == "sqrt":
            return f"<msqrt>{self.arg()}</msqrt>"
        if name in ("mathbf", "boldsymbol"):
            return f"<mi>{_html.escape(_bold(self.text_arg()))}</mi>"
        if name in ("mathrm", "text", "operatorname", "textrm", "mathit"):
            txt = self.text_arg()
            return f'<mi mathvariant="normal">{_html.escape(txt)}</mi>' if len(txt) == 1 else \
                f"<mi>{_html.escape(txt)}</mi>"
        raise self.error(f"unsupported command {t!r}")


def _row(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "<mrow>" + "".join(items) + "</mrow>"


def tex_label(tex: str) -> str:
    r"""A LaTeX symbol name or equation label (the subset used by ``latex_names`` and the report) as
    a MathML fragment (no ``<math>`` wrapper).

    >>> tex_label("W^{(1)}_{1,2}")
    '<msubsup><mi>W</mi><mrow><mn>1</mn><mo>,</mo><mn>2</mn></mrow><mrow><mo>(</mo><mn>1</mn><mo>)</mo></mrow></msubsup>'
    >>> tex_label(r"\tilde\lambda_{\max}")
    '<msub><mover accent="true"><mi>λ</mi><mo>~</mo></mover><mi>max</mi></msub>'
    """
    p = _TexLabel(tex)
    return _row(p.seq()) if tex.strip() else "<mrow></mrow>"


class _Printer(MathMLPresentationPrinter):
    """SymPy's presentation printer with symbols under their LaTeX labels (``names``)."""

    def __init__(self, names: dict | None = None):
        super().__init__({"mul_symbol": None})
        self._names = names or {}

    def _print_Symbol(self, sym, style="plain"):
        tex = self._names.get(sym)
        if tex is None:
            return super()._print_Symbol(sym, style)
        frag = minidom.parseString(f"<mrow>{tex_label(tex)}</mrow>").documentElement
        node = self.dom.importNode(frag, True)
        return node.firstChild if len(node.childNodes) == 1 else node

    _print_Dummy = _print_Symbol


def _fix(s: str) -> str:
    """Typographic clean-up of the printer's output: a true minus sign, e for Euler's number."""
    return (s.replace("<mo>-</mo>", "<mo>−</mo>").replace("&ExponentialE;", "e")
            .replace("&InvisibleTimes;", "&#x2062;"))


def _body(expr, names: dict | None) -> str:
    """The MathML of ``expr`` without the ``<math>`` wrapper (a LaTeX label when ``expr`` is a str)."""
    if isinstance(expr, str):
        return tex_label(expr)
    return _fix(_Printer(names).doprint(sp.sympify(expr)))


def mathml(expr, names: dict | None = None, display: bool = True) -> str:
    """``expr`` (a SymPy expression, or a LaTeX label as a str) as a ``<math>`` element; ``names``
    maps symbols to their LaTeX labels (e.g. ``Derivation.latex_names``)."""
    attr = ' display="block"' if display else ""
    return f"<math{attr}>{_body(expr, names)}</math>"


def _leaves(s: str) -> int:
    return len(re.findall(r"<m[ion][ >]", s))


def _terms(expr) -> list[tuple[str, sp.Expr]]:
    """The top-level terms of a sum in the printer's order, each as (sign, positive term)."""
    p = _Printer()
    out = []
    for t in p._as_ordered_terms(expr):
        out.append(("−", -t) if t.could_extract_minus_sign() else ("+", t))
    return out


def equation(lhs, rhs, names: dict | None = None, rel: str = "=") -> str:
    """A displayed relation ``lhs rel rhs`` in a horizontally scrollable box.

    ``lhs``/``rhs``: SymPy expressions or LaTeX labels (str).  A right-hand side that is a long
    sum (more than :data:`ROW_TOKENS` leaves) is set over several rows, broken before top-level
    ``+``/``−`` (like ``multline``).  A formula longer than :data:`MAX_MATHML_CHARS` is replaced
    by a sentence saying so."""
    left = _body(lhs, names)
    op = f"<mo>{_html.escape(rel)}</mo>"
    right = _body(rhs, names)
    if len(right) > MAX_MATHML_CHARS:
        return (f'<p class="note">{mathml(lhs, names, display=False)}: the expression is too long to show here '
                f"({len(right):,} characters of MathML); see derivation.tex.</p>")
    rows: list[str] | None = None
    if isinstance(rhs, sp.Basic) and isinstance(rhs, sp.Add) and _leaves(right) > ROW_TOKENS:
        rows, cur, n = [], "", 0
        for k, (sign, term) in enumerate(_terms(rhs)):
            t = _body(term, names)
            if isinstance(term, sp.Add):
                t = f"<mrow><mo>(</mo>{t}<mo>)</mo></mrow>"
            piece = ("<mo>−</mo>" if sign == "−" else "") + t if k == 0 else f"<mo>{sign}</mo>{t}"
            if cur and n + _leaves(piece) > ROW_TOKENS:
                rows.append(cur)
                cur, n = "", 0
            cur += piece
            n += _leaves(piece)
        rows.append(cur)
        if len(rows) == 1:
            rows = None
    if rows is None:
        body = f"<mrow>{left}{op}{right}</mrow>"
    else:
        trs = [f"<mtr><mtd>{left}</mtd><mtd>{op}</mtd><mtd><mrow>{rows[0]}</mrow></mtd></mtr>"]
        trs += [f"<mtr><mtd></mtd><mtd></mtd><mtd><mrow><mspace width=\"1em\"></mspace>{r}</mrow></mtd></mtr>"
                for r in rows[1:]]
        body = f'<mtable columnalign="right center left">{"".join(trs)}</mtable>'
    return f'<div class="scroll eq"><math display="block">{body}</math></div>'


def _vec(comps) -> sp.Basic:
    return comps[0] if len(comps) == 1 else sp.Matrix(list(comps))


def derivation_html(D) -> str:
    """A :class:`fishersym.symbolic.Derivation` as HTML with MathML (THEORY §1–§7): the model's
    definitions, the family's cumulant forms (§1, §3, §4), the Theorem 4.1 constants (§5), the
    common subexpressions ξₙ (§7), and per parameter θᵢ: uᵢ = ∂h/∂θᵢ, wᵢ = ∂²h/∂θᵢ², I(θᵢ|x),
    V₁, V₂ (with the 1/N factor, §3), the Theorem 4.1 bounds and the trade-off condition V₂ ≤ V₁
    (§6.7).  The same content as ``Derivation.to_latex`` in the order of that document."""
    from ..symbolic.familyforms import NAMED_LATEX
    from ..symbolic.latex import flip_probabilities, probability_coordinates  # −s(s − 1) → s(1 − s), as the LaTeX
    names = dict(D.latex_names)
    names.update(NAMED_LATEX)
    net, fam, F, N = D.network, D.family, D.forms, D.N
    C = fam.C
    out: list[str] = []
    w = out.append
    flip = probability_coordinates(D)
    tidy = lambda e: flip_probabilities(e, flip) if flip and isinstance(e, sp.Basic) else e  # noqa: E731
    eq = lambda l, r, rel="=": w(equation(tidy(l), tidy(r), names, rel))  # noqa: E731
    inline = lambda e: mathml(tidy(e), names, display=False)  # noqa: E731

    def factor(e) -> str:
        """``e`` as a factor: parenthesised when it is a sum or negative (as the LaTeX document)."""
        e = tidy(e)
        b = _body(e, names)
        if isinstance(e, sp.Basic) and (e.is_Add or (e.could_extract_minus_sign() and not flip)):
            return f"<mrow><mo>(</mo>{b}<mo>)</mo></mrow>"
        return b

    w("<h3>Model (§1, §7)</h3>")
    acts = ", ".join(a.name for a in net.activations) or "none"
    w(f"<p>A multilayer perceptron with widths {_esc(tuple(net.widths))} (L = {net.L} layers), hidden "
      f"activations {_esc(acts)}, {'with' if net.bias else 'without'} biases, {net.n_params} parameters; "
      f"inputs {', '.join(inline(s) for s in net.x)}. Pre-activations z and activations a = ϕ(z):</p>")
    for s, e in net.definitions():
        eq(s, e)
    w(f"<p>The output o = z<sup>(L)</sup> gives the natural parameters through the link "
      f"({_esc(type(fam.link).__name__)}):</p>")
    for h, e in zip(fam.h_sym, D.h_exprs):
        eq(h, e)
    w(f"<h3>Output family {_esc(fam.name)} and the cumulants of F (§1, §3, §4)</h3>")
    w(f"<p>C = {C} natural parameter(s); p(y|x) = π(y) exp(t(y)ᵀh − F(h)) with log-partition</p>")
    eq("F(h)", fam.F_sym)
    if F.coords:
        w("<p>Display coordinates (means of t, §4), from η = ∇F:</p>")
        for s, e in F.coords:
            eq(s, e)
    if fam.sym_params:
        w("<p>Fixed parameters (kept symbolic): " + ", ".join(f"{inline(s)} = {v:g}" for s, v in
                                                                fam.sym_params.items()) + ".</p>")
    w("<p>The derivatives of F are the cumulants of t(y), in the display coordinates:</p>")
    eq(r"\eta = \nabla F", F.eta.T if C > 1 else F.eta[0])
    eq(r"\Sigma = \nabla^2 F", F.sigma if C > 1 else F.sigma[0, 0])
    w(f"<p>For a direction u = {inline(sp.Matrix(F.U).T if C > 1 else F.U[0])} "
      f"(and w = {inline(sp.Matrix(F.Wd).T if C > 1 else F.Wd[0])}):</p>")
    eq(r"u^\top\Sigma u", F.fisher)
    eq(r"\kappa_4(u,u,u,u)", F.kappa4)
    eq(r"M_4(u,u,u,u) = \kappa_4(u,u,u,u) + 3(u^\top\Sigma u)^2", F.m4)
    eq(r"N V_1 = M_4(u,u,u,u) - (u^\top\Sigma u)^2 = \kappa_4(u,u,u,u) + 2(u^\top\Sigma u)^2", F.var1)
    eq(r"N V_2 = w^\top\Sigma w", F.var2)
    if F.readable:
        w("<p>Centred forms (ū = Σ<sub>a</sub> p<sub>a</sub> u<sub>a</sub>), proven equal on the simplex by SymPy:</p>")
        eq(r"u^\top\Sigma u", F.readable["fisher"])
        eq(r"N V_1", F.readable["var1"])
        eq(r"N V_2", F.readable["var2"])
    w("<p>Trade-off condition (§6.7): Î₂ is at least as good as Î₁ (V₂ ≤ V₁) iff</p>")
    eq(F.trade_lhs, F.trade_rhs, rel="≤")
    lam = F.lam
    w("<h3>Constants of Theorem 4.1 (§5)</h3>")
    if F.lam_named:
        w("<p>λ<sub>min</sub>(Σ), λ<sub>max</sub>(Σ) and the variational eigenvalues λ̃<sub>min</sub>(M), "
          "λ̃<sub>max</sub>(M) have no closed form for this family: they stay named constants, evaluated "
          "numerically (certified values).</p>")
    else:
        for lab, key in ((r"\lambda_{\min}(\Sigma)", "sigma_min"), (r"\lambda_{\max}(\Sigma)", "sigma_max"),
                         (r"\tilde\lambda_{\min}(M)", "M_min"), (r"\tilde\lambda_{\max}(M)", "M_max")):
            eq(lab, lam[key])
    repl, red = D.cse()
    w("<h3>First and second derivatives (§7)</h3><p>Forward-mode propagation of ∂/∂θᵢ gives "
      "uᵢ = ∂h/∂θᵢ and wᵢ = ∂²h/∂θᵢ²; common subexpressions (SymPy's CSE over all parameters) are "
      "named ξₙ:</p>")
    for s, e in repl:
        eq(s, e)
    if not repl:
        w("<p>(none)</p>")
    w(f"<h3>Per parameter: Fisher information, variances, bounds, trade-off (§2, §3, §5, §6.7)</h3>"
      f"<p>Variances are for {inline(N)} label sample(s) and include the factor 1/{inline(N)}.</p>")
    forms = F.readable or {"fisher": F.fisher, "var1": F.var1, "var2": F.var2}
    for pd in D:
        s = pd.symbol
        r = red[s]
        lab = names.get(s, sp.latex(s))
        sub_u, sub_w = dict(zip(F.U, r["u"])), dict(zip(F.Wd, r["w"]))
        w(f'<h4>{inline(s)} <code>{_esc(pd.entry.label)}</code></h4>')
        eq(f"u_{{{lab}}}", _vec(r["u"]))
        eq(f"w_{{{lab}}}", _vec(r["w"]))
        eq(f"I({lab}|x)", forms["fisher"].xreplace(sub_u))
        eq(f"V_1({lab}|x)", forms["var1"].xreplace(sub_u) / N)
        eq(f"V_2({lab}|x)", sp.Integer(0) if pd.w_is_zero else forms["var2"].xreplace(sub_w) / N)
        usq = sp.Add(*[c ** 2 for c in r["u"]])
        wsq = sp.Add(*[c ** 2 for c in r["w"]])
        w("<p>Theorem 4.1 bounds:</p>")
        eq(r"\|u\|^2", usq)
        if not pd.w_is_zero:
            eq(r"\|w\|^2", wsq)
        for norm, k_lo, mid, k_hi in ((r"\|u\|^2", "sigma_min", "I", "sigma_max"),
                                      (r"\|u\|^4", "M_min", r"N V_1", "M_max"),
                                      (r"\|w\|^2", "sigma_min", r"N V_2", "sigma_max")):
            n_ = tex_label(norm)
            w(f'<div class="scroll eq"><math display="block"><mrow>{n_}{factor(lam[k_lo])}<mo>≤</mo>'
              f'{tex_label(mid)}<mo>≤</mo>{n_}{factor(lam[k_hi])}</mrow></math></div>')
        if fam.shift_invariant:
            w("<p>Sharpened (𝟙<sup>⊥</sup>) bounds: the same with ‖u<sup>⊥</sup>‖², ‖w<sup>⊥</sup>‖² and the "
              "constants restricted to 𝟙<sup>⊥</sup>.</p>")
        if pd.trade_lhs == 0:
            w("<p>Trade-off: w = 0, so V₂ = 0 ≤ V₁: Î₂ is exact with one sample and always at least as good "
              "as Î₁.</p>")
        else:
            cav = pd.trade_caveat_note(lambda c: f"{inline(c)} ≠ 0")
            w(f"<p>Trade-off: Î₂ is at least as good as Î₁ (V₂ ≤ V₁) iff{cav}</p>")
            eq(pd.trade_lhs, pd.trade_rhs, rel="≤")
    return "".join(out)


def _esc(v) -> str:
    """``str(v)``, HTML-escaped."""
    return _html.escape(str(v))
