r"""pytest plugin: run the property suite against your own model from the command line.

    pytest --fishersym-model mypkg.models:make_net --fishersym-family categorical \
           --fishersym-family-param C=10 --fishersym-input-shape 784

adds one test item per property of :data:`fishersym.testing.PROPERTIES` for
each ``--fishersym-model`` (repeatable).  The factory returns an ``nn.Module``,
a ``(module, inputs)`` pair or a dict with ``model``/``inputs``/``family``.
Failures show the counterexample report; properties that do not apply to the
model are skipped with the reason.  Registered through the ``pytest11`` entry
point, so it is active wherever fishersym is installed (and inert without
the options).
"""
from __future__ import annotations

from collections.abc import Iterable

import pytest
from typing_extensions import override

from .. import families as _families

__all__ = ["pytest_addoption", "pytest_collection_modifyitems", "FishersymItem", "parse_params"]


def pytest_addoption(parser) -> None:
    """pytest hook: the ``--fishersym-*`` command-line options, in a group of their own."""
    g = parser.getgroup("fishersym", "fishersym: the Fisher-estimator property suite on your own model")
    g.addoption("--fishersym-model", action="append", default=[], metavar="MODULE:FACTORY",
                help="model factory to check (repeatable), e.g. mypkg.models:make_net")
    g.addoption("--fishersym-family", default=None, metavar="NAME",
                help="output family, a registered name: " + ", ".join(_families.available()))
    g.addoption("--fishersym-family-param", action="append", default=[], metavar="KEY=VALUE",
                help="family parameter (repeatable), e.g. C=10 or sigma2=0.5")
    g.addoption("--fishersym-input-shape", default=None, metavar="D[,D...]",
                help="per-input shape when the factory returns no inputs, e.g. 784 or 1,28,28")
    g.addoption("--fishersym-n-samples", type=int, default=1, metavar="N", help="label samples N (default 1)")
    g.addoption("--fishersym-examples", type=int, default=5, metavar="K",
                help="hypothesis examples per property (default 5)")


def parse_params(items: Iterable[str]) -> dict[str, int | float | str]:
    """['C=10', 'sigma2=0.5'] → {'C': 10, 'sigma2': 0.5}: each value an int, else a float, else the string."""
    out: dict[str, int | float | str] = {}
    for it in items:
        if "=" not in it:
            raise pytest.UsageError(f"family parameter {it!r} must look like KEY=VALUE (e.g. C=10)")
        k, v = it.split("=", 1)
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def _shape(s: str | None):
    if s is None:
        return None
    try:
        return tuple(int(x) for x in s.replace("x", ",").split(",") if x)
    except ValueError:
        raise pytest.UsageError(f"--fishersym-input-shape {s!r}: expected integers like 784 or 1,28,28") from None


class FishersymItem(pytest.Item):
    """One property of the suite on one user model."""

    _reports: dict = {}

    def __init__(self, *, spec: str, prop: str, **kw):
        super().__init__(**kw)
        self.spec, self.prop = spec, prop

    def _report(self):
        cfg = self.config
        key = self.spec
        if key not in FishersymItem._reports:
            from .check import check_model
            try:
                FishersymItem._reports[key] = check_model(
                    self.spec, cfg.getoption("fishersym_family"),
                    input_shape=_shape(cfg.getoption("fishersym_input_shape")),
                    n_samples=cfg.getoption("fishersym_n_samples"),
                    max_examples=cfg.getoption("fishersym_examples"),
                    family_params=parse_params(cfg.getoption("fishersym_family_param")))
            except Exception as exc:  # noqa: BLE001 - not swallowed: stored, and every item's runtest re-raises it
                FishersymItem._reports[key] = exc
        return FishersymItem._reports[key]

    @override
    def runtest(self) -> None:
        rep = self._report()
        if isinstance(rep, Exception):
            raise rep
        res = next(r for r in rep.results if r.name == self.prop)
        if res.status == "not applicable":
            pytest.skip(f"{self.prop} does not apply: {res.message}")
        if res.status == "failed":
            raise AssertionError(res.message)

    @override
    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, AssertionError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    @override
    def reportinfo(self):
        return self.spec, None, f"fishersym {self.prop} [{self.spec}]"


def pytest_collection_modifyitems(session, config, items) -> None:
    """pytest hook: append one :class:`FishersymItem` per (``--fishersym-model`` spec, property)."""
    specs = config.getoption("fishersym_model")
    if not specs:
        return
    if not config.getoption("fishersym_family"):
        raise pytest.UsageError("--fishersym-model needs --fishersym-family (e.g. categorical)")
    from .properties import PROPERTIES
    for spec in specs:
        for prop in PROPERTIES:
            items.append(FishersymItem.from_parent(session, name=f"fishersym[{spec}]::{prop}", spec=spec, prop=prop))
