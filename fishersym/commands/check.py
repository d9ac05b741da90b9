"""``fishersym check MODULE:FACTORY --family NAME``: the property suite on your own model.

Runs every applicable property of the paper (fishersym.testing.PROPERTIES) on
the model returned by the factory (an nn.Module, a (module, inputs) pair or a
dict with model/inputs/family), with hypothesis perturbing its parameters and
inputs, and prints the report: which properties held, failed (with a
counterexample) or do not apply, and V2/V1 per parameter group.  Exit code 0
when all applicable properties held, 1 when one failed, 2 on bad input —
including errors raised by your own code (importing your module, calling your
factory, running your model on the inputs), which are reported as yours; add
``--debug`` to see their traceback.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import os
import sys

from ..families import available
from ._util import UserCodeError, family_params, nonneg_int, positive_int

FACTORY_RESULT = ("an nn.Module, a (module, inputs) pair, or a dict {'model': module, 'inputs': tensor (optional), "
                  "'family': name (optional)}")


def _import_user_module(mod_name: str, spec: str):
    """Import the user's module; a module that is not there is a ValueError, one that raises is theirs."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == mod_name or mod_name.startswith(missing + "."):
            raise ValueError(f"cannot import module {mod_name!r} (from {spec!r}): {exc}") from None
        raise UserCodeError(f"error while importing {mod_name}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # the user's module raised while being imported
        raise UserCodeError(f"error while importing {mod_name}: {type(exc).__name__}: {exc}") from exc


def parse_model_args(items) -> dict:
    """``--model-arg KEY=VALUE`` items → keyword arguments of the factory (values as Python literals,
    e.g. ``input_size=8``, ``width=4``, ``activation='relu'``; a bare word such as ``tanh`` stays a
    string; anything else that is not a literal, and true/false/none, is refused)."""
    import ast
    out = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-arg {item!r} must look like KEY=VALUE with KEY a Python identifier, "
                             "e.g. --model-arg input_size=8")
        if key in out:
            raise ValueError(f"--model-arg {key} given twice")
        v = val.strip()
        try:
            out[key] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            if v.lower() in ("true", "false", "none", "null"):
                literal = v.capitalize() if v.lower() != "null" else "None"
                raise ValueError(f"--model-arg {item!r}: write the Python literal {literal!r} "
                                 "(True, False, None), not a string") from None
            if not v.isidentifier():
                raise ValueError(f"--model-arg {item!r}: {v!r} is neither a Python literal "
                                 "(8, 0.5, 'relu', (3, 32, 32)) nor a bare word; quote strings, "
                                 "e.g. --model-arg activation=\"'relu'\"") from None
            out[key] = v                               # a bare word, e.g. activation=tanh
    return out


def load_factory(spec: str, kwargs: dict | None = None):
    """'package.module:factory' → (model, inputs or None, family or None), user errors named as theirs.

    ``kwargs`` (from ``--model-arg``) are passed to the factory; they need a callable factory."""
    import torch.nn as nn
    if ":" not in spec:
        raise ValueError(f"model spec {spec!r} must look like 'package.module:factory'")
    mod_name, attr = spec.split(":", 1)
    if not mod_name or not attr:
        raise ValueError(f"model spec {spec!r} must look like 'package.module:factory'")
    obj = _import_user_module(mod_name, spec)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {mod_name!r} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        if kwargs:
            raise ValueError(f"{spec!r} is an nn.Module instance, not a factory: --model-arg cannot be passed to it")
        made = obj
    elif callable(obj):
        try:
            made = obj(**(kwargs or {}))
        except Exception as exc:  # the user's factory raised
            raise UserCodeError(f"error in the factory {spec}: {type(exc).__name__}: {exc}") from exc
    else:
        raise ValueError(f"{spec!r} is neither an nn.Module nor a callable factory")
    inputs = family = None
    if isinstance(made, dict):
        if "model" not in made:
            raise ValueError(f"the factory {spec} returned a dict without a 'model' entry (keys: "
                             f"{sorted(map(str, made))}); it must return {FACTORY_RESULT}")
        unknown = set(made) - {"model", "inputs", "family"}
        if unknown:
            raise ValueError(f"the factory {spec} returned a dict with unknown keys {sorted(map(str, unknown))}; "
                             f"it must return {FACTORY_RESULT}")
        model, inputs, family = made["model"], made.get("inputs"), made.get("family")
    elif isinstance(made, (tuple, list)):
        if not 1 <= len(made) <= 2:
            raise ValueError(f"the factory {spec} returned a {type(made).__name__} of length {len(made)}; "
                             f"it must return {FACTORY_RESULT}")
        model, inputs = made[0], (made[1] if len(made) > 1 else None)
    else:
        model = made
    if not isinstance(model, nn.Module):
        raise TypeError(f"the factory {spec} gave a model of type {type(model).__name__}, not a torch.nn.Module; "
                        f"it must return {FACTORY_RESULT}")
    return model, inputs, family


def probe_inputs(model, inputs, shape, seed: int, n_inputs: int = 2):
    """The inputs ``check_model`` will use, and one forward pass of a float64 copy on them (user code)."""
    import torch
    from ..testing.check import infer_input_shape
    if inputs is None:
        if shape is not None:
            where, hint = f"inputs of shape {tuple(shape)} (--input-shape)", \
                " Check --input-shape: the shape of one input, without the batch dimension."
        else:
            shape = infer_input_shape(model)
            where, hint = f"inputs of shape {tuple(shape)} (inferred from the model)", \
                " Pass --input-shape: the shape of one input, without the batch dimension."
        inputs = torch.randn((n_inputs, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    else:
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
            got = f"a tensor of shape {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) \
                else type(inputs).__name__
            raise ValueError(f"the factory's inputs must be a tensor with a batch dimension (batch, ...), got {got}")
        where, hint = f"the factory's inputs (shape {tuple(inputs.shape)})", ""
    try:
        m = copy.deepcopy(model).to(torch.float64).eval()
        with torch.no_grad():
            m(inputs[:1].to(torch.float64))
    except Exception as exc:  # the user's model raised
        raise UserCodeError(f"the model raised on {where}: {type(exc).__name__}: {exc}.{hint}") from exc
    return inputs


def run(args: argparse.Namespace) -> int:
    """``fishersym check``: run the property suite (:func:`~fishersym.testing.check.check_model`) on the user's
    model."""
    from ..testing.check import check_model
    params = family_params(args.param)
    spec = model_spec(args)
    model, inputs, fam_from = load_factory(spec, parse_model_args(args.model_arg))
    inputs = probe_inputs(model, inputs, args.input_shape, args.seed, args.n_inputs)
    if (args.family or fam_from) is None:
        raise ValueError("no family given: pass --family (one of " + ", ".join(available()) + ")")
    report = check_model(model, args.family or fam_from, inputs, n_samples=args.n_samples,
                         max_examples=args.examples, family_params=params, seed=args.seed,
                         properties=args.properties.split(",") if args.properties else None,
                         path=args.path, progress=False if args.quiet else True, profile=args.profile)
    report.model = spec
    print(report)
    return 0 if report.ok else 1


def model_spec(args: argparse.Namespace) -> str:
    """The MODULE:FACTORY of ``fishersym check``: positional or ``--model`` (one of them)."""
    pos, opt = getattr(args, "model", None), getattr(args, "model_opt", None)
    if pos and opt and pos != opt:
        raise ValueError(f"two models given ({pos!r} and --model {opt!r}); give one")
    spec = pos or opt
    if not spec:
        raise ValueError("no model given: pass MODULE:FACTORY (or --model MODULE:FACTORY), "
                         "e.g. fishersym.experiments.architectures:lenet5")
    return spec


def register(sub) -> None:
    """Add the ``check`` sub-command to the sub-parsers ``sub``."""
    p = sub.add_parser("check", help="run the paper's property suite on your own model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODULE:FACTORY", nargs="?", default=None,
                   help="e.g. mypkg.models:make_net (imported from the cwd too)")
    p.add_argument("--model", dest="model_opt", metavar="MODULE:FACTORY", default=None,
                   help="the same as the positional MODULE:FACTORY")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the factory (repeatable; Python literals), e.g. --model-arg input_size=8")
    p.add_argument("--family", default=None,
                   help=f"output family (required unless the factory names one): {', '.join(available())}")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="family parameter (repeatable), e.g. --param sigma2=0.5; optional for the size C, "
                        "which a family by name takes from the model's outputs")
    p.add_argument("--input-shape", nargs="+", type=positive_int, metavar="D",
                   help="per-input shape if the factory gives no inputs, e.g. --input-shape 1 28 28")
    p.add_argument("--n-samples", type=positive_int, default=1, help="label samples N (default 1)")
    p.add_argument("--examples", type=positive_int, default=5, help="hypothesis examples per property (default 5)")
    p.add_argument("--properties", default=None, help="comma-separated subset of the properties")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the default inputs")
    p.add_argument("--n-inputs", type=positive_int, default=2,
                   help="random inputs when the factory gives none (default 2)")
    p.add_argument("--path", default="auto",
                   help="exact path of the baseline V2/V1 ratios: auto (default), fast, generic, reverse")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--profile", choices=("full", "quick"), default="full",
                   help="full (default): every property, the optimised lambda-tilde bounds included; quick: "
                        "certified constants only and at most 2 examples per property (a first look at a "
                        "large model)")
    p.set_defaults(func=run)
