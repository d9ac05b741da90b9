"""check_model, the pytest plugin and `fishersym check` on architectures not in the package."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from fishersym.cli import main
from fishersym.testing import PROPERTIES, check_model

from _user_models import Detached, ResMLP, Rounded, resmlp

HERE = Path(__file__).parent
FAST = dict(max_examples=2, properties=["closed_forms", "unbiased", "bounds", "structural", "rescaling",
                                        "n_scaling", "nonnegative", "shift_invariance", "fast_generic"])


def test_check_model_on_residual_layernorm_mlp():
    rep = check_model(resmlp(), "categorical", family_params={"C": 3}, **FAST)
    status = {r.name: r.status for r in rep.results}
    assert rep.path == "generic"
    assert status["closed_forms"] == "passed", str(rep)  # needs the composite LayerNorm (safe_ad)
    assert status["shift_invariance"] == "passed"
    assert status["fast_generic"] == "not applicable"
    assert rep.ok, str(rep)
    assert set(rep.ratios) >= {"inp", "norm", "block.0", "block.2", "out"}
    assert rep.ratios["out"]["var2"] == 0  # last layer


def test_check_model_on_tiny_cnn_from_factory_spec(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    rep = check_model("_user_models:tinycnn", "categorical", family_params={"C": 2},
                      **{**FAST, "properties": ["closed_forms", "bounds", "structural", "nonnegative"]})
    assert rep.ok, str(rep)
    assert {r.name: r.status for r in rep.results}["structural"] == "not applicable"  # not a Sequential
    text = str(rep)
    assert "ALL APPLICABLE PROPERTIES HELD" in text and "V2/V1" in text


def test_report_shows_a_counterexample_when_a_property_fails(monkeypatch):
    import fishersym.numeric.generic as generic
    orig = generic.base_quantities

    def wrong(*a, **k):
        out = orig(*a, **k)
        out["nv1"] = out["nv1"] * 2
        return out
    monkeypatch.setattr(generic, "base_quantities", wrong)
    rep = check_model(resmlp(), "categorical", family_params={"C": 3}, max_examples=2, properties=["closed_forms"])
    assert not rep.ok
    msg = rep.failed[0].message
    assert "[var1 = definition]" in msg and "var1 (closed form)" in msg and "at input #0" in msg
    with pytest.raises(AssertionError, match="PROPERTY"):
        rep.raise_on_failure()


@pytest.mark.parametrize("model,family,match", [
    (ResMLP(), "bernoulli", r"size 3 .* expects 1"),
    (Detached(), "categorical", "not differentiable: its output does not depend on the parameters"),
    (Rounded(), "categorical", "not differentiable: its output has dtype torch.int64"),
])
def test_bad_models_are_refused_before_any_hypothesis_run(model, family, match):
    with pytest.raises(ValueError, match=match):
        check_model(model, family, input_shape=(3,), family_params={"C": 2} if family == "categorical" else None)


def test_unresolvable_import_paths_are_named():
    with pytest.raises(ValueError, match="cannot import module 'no_such_pkg.models'"):
        check_model("no_such_pkg.models:make", "categorical")
    with pytest.raises(ValueError, match="has no attribute 'nothing'"):
        check_model("fishersym.families:nothing", "categorical")
    with pytest.raises(ValueError, match="must look like 'package.module:factory'"):
        check_model("fishersym.families", "categorical")


def test_cli_check(capsys, monkeypatch):
    monkeypatch.chdir(HERE)
    code = main(["check", "_user_models:resmlp", "--family", "categorical", "--param", "C=3", "--examples", "1",
                 "--properties", "closed_forms,bounds,structural"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "closed_forms" in out and "PASSED" in out and "V2/V1" in out
    assert main(["check", "nowhere.mod:f", "--family", "categorical"]) == 2
    assert "cannot import module 'nowhere.mod'" in capsys.readouterr().err


def test_pytest_plugin_runs_the_suite_on_a_user_model(tmp_path):
    (tmp_path / "user_net.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def make():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3))\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--fishersym-model", "user_net:make",
           "--fishersym-family", "categorical", "--fishersym-family-param", "C=3", "--fishersym-input-shape", "2",
           "--fishersym-examples", "1"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(PROPERTIES)} passed" in res.stdout or "passed" in res.stdout, res.stdout
    assert "failed" not in res.stdout


def test_quick_profile_checks_certified_constants_with_few_examples(monkeypatch, capsys):
    # issue 11 item 8: profile="quick" skips the optimised-λ̃ bounds (most of the time on large models),
    # caps the examples, and progress=True prints one line per property when stderr is not a terminal
    from fishersym.testing import check as chk
    seen = []
    real = chk.PROPERTIES["bounds"]

    def spy(*a, **kw):
        seen.append(kw.get("optimised", "default"))
        return real(*a, **kw)

    monkeypatch.setitem(chk.PROPERTIES, "bounds", spy)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    rep = chk.check_model(net, "categorical", family_params={"C": 2}, input_shape=(3,), profile="quick",
                          properties=["bounds", "closed_forms"], max_examples=5, progress=True)
    assert rep.ok and seen and set(seen) == {False}
    assert all(r.examples <= 2 for r in rep.results) and any("profile 'quick'" in n for n in rep.notes)
    err = capsys.readouterr().err
    assert "[1/2] bounds: passed" in err and "[2/2] closed_forms: passed" in err
    seen.clear()
    chk.check_model(net, "categorical", family_params={"C": 2}, input_shape=(3,), properties=["bounds"],
                    max_examples=3, progress=False)
    assert seen and set(seen) == {"default"}          # the full profile: check_bounds' own default, optimised=True
    with pytest.raises(ValueError, match="profile must be one of 'full', 'quick'"):
        chk.check_model(net, "categorical", family_params={"C": 2}, input_shape=(3,), profile="fast")


def test_quick_profile_runs_every_property_with_sampled_cross_path_v2():
    net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    rep = check_model(net, "categorical", family_params={"C": 3}, input_shape=(5,), profile="quick",
                      progress=False)
    status = {r.name: r.status for r in rep.results}
    assert rep.ok, str(rep)
    for name in ("rescaling", "shift_invariance", "fast_generic", "bounds"):
        assert status[name] == "passed", str(rep)
