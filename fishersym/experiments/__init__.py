"""The paper's experiments and the report (THEORY §11; CLI: ``fishersym experiment …``, ``fishersym report``).

Modules: :mod:`.io` (output folders, atomic writes, settings JSON), :mod:`.data`
(sklearn digits, MNIST from a local file), :mod:`.toy_ngd` (Figure 1),
:mod:`.mlp` (Figure 2), :mod:`.table` (Table 1), :mod:`.report` (the HTML
report of ``fishersym report`` / ``fishersym demo``), :mod:`.plots` (figures).
Matplotlib and scikit-learn come with the ``experiments`` extra.
"""
