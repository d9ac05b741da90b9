"""README's table of estimators is the catalogue's own text (one definition: the registry)."""
from pathlib import Path

import fishersym.estimators as fe


def test_readme_table_is_the_catalogue():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = fe.catalogue_markdown()
    assert table in readme, "README's 'How noisy is my Fisher?' table differs from fe.catalogue_markdown()"
    assert table.count("\n") == len(fe.names()) + 2


def test_costs_in_the_table_follow_the_estimators():
    rows = {line.split("|")[1].strip().strip("`"): line for line in fe.catalogue_markdown().splitlines()[2:]}
    assert set(rows) == set(fe.names())
    for name, line in rows.items():
        est = fe.get(name)
        cells = [c.strip() for c in line.split(" | ")]
        cost = cells[3]
        C, N = 7, 3
        n = N if est.random_labels else 1
        value = eval(cost.replace("C", str(C)).replace("2N", f"2*{N}").replace("N", str(n)))
        assert value == est.cost(C, n), (name, cost)


def test_docstring_examples_run():
    import doctest
    import importlib
    for mod in ("api", "planner", "peers", "base", "moments"):
        m = importlib.import_module(f"fishersym.estimators.{mod}")
        res = doctest.testmod(m, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert res.failed == 0, mod
